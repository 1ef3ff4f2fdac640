"""ONNX export, the onnxruntime backend, TensorRT's pure parts, backend selection and the export/bench commands."""

import inspect
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from conftest import ASSETS, speech_like, write_wav

from facecast import __version__
from facecast.cli import build_parser
from facecast.engine.avatar import prepare as avatar_mod
from facecast.engine.backend import Backend
from facecast.engine.checkpoint import PARTS, file_hash, load_config
from facecast.engine.errors import DependencyError, WeightsError
from facecast.engine.generate import run_session
from facecast.engine.pipeline import LipSyncSession
from facecast.engine.speaker import speaker_embedding
from facecast.export.backends import load_backend
from facecast.export.backends.onnxruntime_backend import OnnxRuntimeBackend, choose_providers
from facecast.export.backends.tensorrt_backend import TensorRTBackend, engine_cache_key, precision_mode
from facecast.export.backends.torch_backend import TorchBackend
from facecast.export.onnx import tensorrt_ops
from facecast.export.onnx.export import (
    ExportOptions,
    ExportParityError,
    ParityTolerance,
    check_parity,
    export_model,
    graph_modules,
)
from facecast.export.onnx.manifest import GRAPHS, autoencoder_hash, load_manifest

QUICK = ExportOptions(threads=1, slim_timing_runs=3)  # the checks on one thread: this CPU is shared
NO_SLIM = ExportOptions(threads=1, slim=False)


@pytest.fixture(scope="module")
def export_dir(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    # static shapes: the manifest test below pins them; the dynamic-batch default is tested on its own export
    export_model(tiny_model, out, options=QUICK, log=lambda s: None, dynamic_batch=False)
    return out


@pytest.fixture(scope="module")
def torch_backend(tiny_model):
    return TorchBackend(tiny_model)


@pytest.fixture(scope="module")
def ort_backend(export_dir):
    return OnnxRuntimeBackend(export_dir, providers=["CPUExecutionProvider"], threads=1)


def rel_error(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def random_calls(cfg, batch, rng, frames=6):
    """Backend-protocol arguments: A2L over several frames, one denoise, the pipeline's decode rows, one encode."""
    c, lat = cfg.autoencoder.latent_channels, 32
    rows = lat - (cfg.l2v.mask_top_px * lat // cfg.face.crop_px - cfg.l2v.decode_margin_rows)
    f32 = np.float32
    return {
        "a2l": (
            rng.standard_normal((batch, frames, 320), f32),
            rng.standard_normal((batch, 256), f32),
            rng.uniform(64, 192, (batch, 68, 2)).astype(f32),
            rng.standard_normal((cfg.a2l.layers, batch, cfg.a2l.state_width), f32),
        ),
        "denoise": (
            rng.standard_normal((batch, c, lat, lat), f32),  # noisy
            rng.integers(0, 1000, batch).astype(np.int64),
            *(rng.standard_normal((batch, c, lat, lat), f32) for _ in range(3)),  # masked, identity, previous
            rng.uniform(0, 1, (batch, 3, lat, lat)).astype(f32),
            rng.uniform(64, 192, (batch, 37, 2)).astype(f32),
            rng.standard_normal((batch, 5, 320), f32),
        ),
        "decode": (rng.standard_normal((batch, c, rows, lat), f32),),
        "encode": (rng.uniform(-1, 1, (batch, 3, 256, 256)).astype(f32),),
    }


def assert_backends_agree(ref, other, batch, tol, seed=7):
    calls = random_calls(ref.cfg, batch, np.random.default_rng(seed))
    for method, args in calls.items():
        want, got = getattr(ref, method)(*args), getattr(other, method)(*args)
        want, got = (want, got) if method == "a2l" else ((want,), (got,))
        for w, g in zip(want, got, strict=True):
            assert g.shape == w.shape and g.dtype == np.float32, method
            assert rel_error(g, w) < tol, (method, rel_error(g, w))


# ------------------------------------------------------------------------------------------ export + manifest


def test_export_folder_is_self_contained_and_described_by_its_manifest(tiny_model, export_dir):
    cfg = load_config(tiny_model)
    m = json.loads((export_dir / "manifest.json").read_text())
    assert (export_dir / "config.json").read_bytes() == (tiny_model / "config.json").read_bytes()
    assert (m["facecast_version"], m["opset"], m["fp16"], m["batch"]) == (__version__, 17, False, 1)
    assert m["source"]["files"] == {
        f: file_hash(tiny_model / f) for f in ["config.json", *(f"{p}.safetensors" for p in PARTS)]
    }
    assert set(m["tools"]) >= {"torch", "onnx", "onnxruntime", "onnxslim"}
    # The decoder takes exactly the rows the pipeline decodes: from mask_top_row - decode_margin_rows down.
    rows = 32 - (cfg.l2v.mask_top_px * 32 // cfg.face.crop_px - cfg.l2v.decode_margin_rows)
    assert (m["decode"]["rows"], m["decode"]["top_row"]) == (rows, 32 - rows) == (19, 13)
    g = m["graphs"]
    assert set(g) == set(GRAPHS)

    def io(graph, kind):
        return [(t["name"], t["shape"], t["dtype"]) for t in g[graph][kind]]

    h, layers = cfg.a2l.state_width, cfg.a2l.layers
    assert io("a2l_step", "inputs") == [
        ("mel_frames", [1, 1, 320], "float32"),
        ("speaker", [1, 256], "float32"),
        ("reference_px", [1, 68, 2], "float32"),
        ("state", [layers, 1, h], "float32"),
    ]
    assert io("a2l_step", "outputs") == [
        ("displacement", [1, 1, 37, 2], "float32"),
        ("new_state", [layers, 1, h], "float32"),
    ]
    # ``weights`` names which fitted weights run (an enrolment), not a tensor: no graph input
    denoise_args = [p for p in inspect.signature(Backend.denoise).parameters if p not in ("self", "weights")]
    assert [t[0] for t in io("denoise", "inputs")] == denoise_args
    assert io("denoise", "inputs")[1] == ("timestep", [1], "int64")
    assert io("denoise", "outputs") == [("x0", [1, 8, 32, 32], "float32")]
    assert io("decode", "inputs") == [("latents", [1, 8, rows, 32], "float32")]
    assert io("decode", "outputs") == [("images", [1, 3, 8 * rows, 256], "float32")]
    assert io("encode", "inputs") == [("images", [1, 3, 256, 256], "float32")]
    assert io("encode", "outputs") == [("latents", [1, 8, 32, 32], "float32")]
    for name, graph in g.items():
        path = export_dir / graph["file"]
        onnx.checker.check_model(str(path), full_check=True)
        assert graph["sha256"] == file_hash(path)
        assert graph["parity"]["max_rel"] <= graph["parity"]["tolerance_rel"] == 1e-4, name
        slim = graph["onnxslim"]
        assert isinstance(slim["kept"], bool) and slim["nodes_before"] > 0, name
        assert not slim["kept"] or slim["nodes_after"] < slim["nodes_before"], name
        assert graph["nodes"] == len(onnx.load(str(path)).graph.node)
        assert graph["tensorrt"]["unsupported"] == [] and graph["tensorrt"]["opset_ok"], name
    assert load_manifest(export_dir).graphs.keys() == set(GRAPHS)
    assert autoencoder_hash(export_dir) == autoencoder_hash(tiny_model) == avatar_mod.model_hash(tiny_model)


def test_every_graph_matches_torch_through_the_backend_interface(torch_backend, ort_backend):
    # a2l runs 6 frames: the single-step graph looped with its state must equal torch's one sequence call.
    assert_backends_agree(torch_backend, ort_backend, batch=1, tol=1e-4)


def test_a2l_state_carries_across_calls(ort_backend, torch_backend):
    mel, speaker, ref, state = random_calls(ort_backend.cfg, 1, np.random.default_rng(3))["a2l"]
    whole, whole_state = torch_backend.a2l(mel, speaker, ref, state)
    first, mid = ort_backend.a2l(mel[:, :2], speaker, ref, state)
    rest, end = ort_backend.a2l(mel[:, 2:], speaker, ref, mid)
    assert rel_error(np.concatenate([first, rest], 1), whole) < 1e-4
    assert rel_error(end, whole_state) < 1e-4
    empty, same = ort_backend.a2l(mel[:, :0], speaker, ref, state)
    assert empty.shape == (1, 0, 37, 2) and np.array_equal(same, state)


def test_a_batch_export_runs_any_batch(tiny_model, torch_backend, tmp_path):
    export_model(tiny_model, tmp_path, batch=2, options=NO_SLIM, log=lambda s: None, dynamic_batch=False)
    assert load_manifest(tmp_path).graphs["denoise"].inputs[0].shape == (2, 8, 32, 32)
    ort = OnnxRuntimeBackend(tmp_path, threads=1)
    assert_backends_agree(torch_backend, ort, batch=3, tol=1e-4)  # two calls, the second padded
    assert_backends_agree(torch_backend, ort, batch=1, tol=1e-4)  # the pipeline's batch, padded to 2


def test_fp16_export_keeps_float32_io_and_stays_close(tiny_model, torch_backend, tmp_path):
    manifest = export_model(tiny_model, tmp_path, fp16=True, options=NO_SLIM, log=lambda s: None)
    assert manifest.fp16 and json.loads((tmp_path / "manifest.json").read_text())["fp16"] is True
    assert {t.dtype for g in manifest.graphs.values() for t in g.inputs + g.outputs} == {"float32", "int64"}
    assert all(g.checks["parity"]["tolerance_rel"] == ParityTolerance().fp16 for g in manifest.graphs.values())
    assert_backends_agree(torch_backend, OnnxRuntimeBackend(tmp_path, threads=1), batch=1, tol=ParityTolerance().fp16)


def test_a_graph_that_differs_from_torch_fails_the_export(tiny_model, export_dir):
    cfg = load_config(tiny_model)
    decode = graph_modules(tiny_model, cfg)["decode"]

    class Shifted(torch.nn.Module):
        def forward(self, x):
            return decode(x) + 0.01

    with pytest.raises(ExportParityError, match="decode: ONNX Runtime differs from torch"):
        check_parity("decode", export_dir / "decode.onnx", Shifted(), cfg, 1, QUICK, fp16=False)


# ------------------------------------------------------------------------------------------ the real pipeline


def test_onnxruntime_gives_the_torch_frames_through_the_pipeline(torch_backend, ort_backend):
    audio = speech_like(1.0, seed=3)
    frames = {}
    for backend in (torch_backend, ort_backend):
        av = avatar_mod.prepare_avatar(ASSETS / "astronaut.jpg", backend.encode, backend.cfg)
        session = LipSyncSession(backend, backend.cfg, av, np.zeros(256, np.float32))
        frames[backend.name] = []
        run_session(session, audio, frames[backend.name].append, chunk_samples=1000)
    ref, got = frames["torch"], frames["onnxruntime"]
    assert [f.index for f in got] == [f.index for f in ref] == list(range(25))
    diff = np.stack([np.abs(a.crop.astype(int) - b.crop.astype(int)) for a, b in zip(ref, got, strict=True)])
    # Measured: a few single pixels differ by 2 grey levels (a float rounding at .5, doubled by the colour match's
    # gain of up to 2 on the tiny model's decoded face); everything else is identical.
    assert diff.max() <= 2 and diff.mean() < 0.01


def test_the_exported_voice_network_matches_resemblyzer_and_any_number_of_partials(torch_backend, ort_backend):
    rng = np.random.default_rng(0)
    for n in (1, 4):
        mels = rng.random((n, 160, 40), dtype=np.float32)
        assert rel_error(ort_backend.speaker_partials(mels), torch_backend.speaker_partials(mels)) < 1e-4
    audio = speech_like(3.0, seed=4)
    got = speaker_embedding(audio, ort_backend.speaker_partials)
    assert np.abs(got - speaker_embedding(audio, torch_backend.speaker_partials)).max() < 1e-5


def test_both_backends_say_which_autoencoder_avatar_bundles_belong_to(tiny_model, torch_backend, ort_backend):
    assert torch_backend.autoencoder_hash == ort_backend.autoencoder_hash == avatar_mod.model_hash(tiny_model)


def test_onnxruntime_encodes_the_latents_of_a_bundle_saved_without_them(torch_backend, ort_backend, tmp_path):
    """A bundle prepared for a model without L2V has no latents; the tiny export runs L2V, so they are encoded at
    load with its own encoder graph, as ``prepare_avatar`` on that backend encodes them."""
    lean = avatar_mod.prepare_avatar(ASSETS / "astronaut.jpg", None, torch_backend.cfg)
    bundle = lean.save(tmp_path / "bundle", torch_backend.autoencoder_hash)
    loaded = avatar_mod.load_avatar(bundle, ort_backend)
    eager = avatar_mod.prepare_avatar(ASSETS / "astronaut.jpg", ort_backend.encode, ort_backend.cfg)
    for name in avatar_mod.LATENT_ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(eager, name), err_msg=name)


def _without_torch(code: str, tmp_path) -> dict:
    """Run ``code`` in a fresh interpreter; it prints a JSON line last, to which the heavy imports are added."""
    check = "\nimport json, sys\nprint(json.dumps({m: m in sys.modules for m in ('torch', 'diffusers')}))\n"
    done = subprocess.run([sys.executable, "-c", code + check], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_generate_with_onnxruntime_never_imports_torch_or_diffusers(export_dir, tmp_path):
    audio = write_wav(tmp_path / "speech.wav", speech_like(1.5, seed=5), 16_000)
    out = tmp_path / "out.mp4"
    argv = ["generate", "--backend", "onnxruntime", "--model", str(export_dir), "--audio", str(audio)]
    argv += ["--out", str(out), "--steps", "1"]
    code = f"from facecast.cli import main\nassert main({argv!r}) == 0"
    assert _without_torch(code, tmp_path) == {"torch": False, "diffusers": False}
    assert out.stat().st_size > 0


def test_serving_with_onnxruntime_never_imports_torch_or_diffusers(export_dir):
    from facecast.streaming.benchmark import serving_process

    # What `facecast serve --backend onnxruntime` does before it listens, in a fresh process.
    report = serving_process.measure("onnxruntime", export_dir, ASSETS / "astronaut.jpg")
    assert report["error"] is None, report
    assert report["imported"] == {"torch": False, "diffusers": False}
    assert report["ready_s"] > 0 and report["rss_mb"] > 0


def test_decode_refuses_a_height_the_export_does_not_have(ort_backend):
    with pytest.raises(WeightsError, match="decodes latents of 19 rows"):
        ort_backend.decode(np.zeros((1, 8, 32, 32), np.float32))
    with pytest.raises(WeightsError, match="export it again"):
        ort_backend.encode(np.zeros((1, 3, 128, 128), np.float32))


# ------------------------------------------------------------------------------------------ backend selection


def test_load_backend_picks_by_name_and_folder(tiny_model, export_dir):
    torch_b = load_backend("torch", tiny_model)
    ort_b = load_backend("onnxruntime", export_dir)
    assert (torch_b.name, ort_b.name) == ("torch", "onnxruntime")
    assert ort_b.cfg == torch_b.cfg == load_config(tiny_model)
    assert ort_b.providers == ["CPUExecutionProvider"]  # device "cpu" keeps ORT on the CPU
    assert ort_b.a2l_state_shape() == torch_b.a2l_state_shape()


def test_load_backend_errors_say_what_to_do(tiny_model, export_dir, tmp_path, monkeypatch):
    with pytest.raises(DependencyError, match="unknown backend 'tflite'"):
        load_backend("tflite", tiny_model)
    with pytest.raises(WeightsError, match=r"is a model folder, not an export: run `facecast export --model"):
        load_backend("onnxruntime", tiny_model)
    with pytest.raises(WeightsError, match="no manifest.json"):
        load_backend("onnxruntime", tmp_path)
    with pytest.raises(WeightsError, match="torch backend needs the model folder"):
        load_backend("torch", export_dir)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT, even where it exists
    with pytest.raises(DependencyError, match=r"pip install 'facecast\[tensorrt\]' on a machine with an NVIDIA GPU"):
        load_backend("tensorrt", export_dir)
    with pytest.raises(DependencyError, match=r"facecast\[tensorrt\]"):
        TensorRTBackend(export_dir, tmp_path / "cache")


def test_a_damaged_export_is_refused(export_dir, tmp_path):
    for f in export_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "decode.onnx").write_bytes(b"not a graph")
    with pytest.raises(WeightsError, match="does not match"):
        OnnxRuntimeBackend(tmp_path)


def test_providers_are_tensorrt_then_cuda_then_cpu():
    every = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "AzureExecutionProvider"]
    assert choose_providers(available=every) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(available=["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider"], available=every) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    with pytest.raises(DependencyError, match="onnxruntime-gpu"):
        choose_providers(["CUDAExecutionProvider"], available=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------ TensorRT's pure parts


def test_our_graphs_use_only_operators_tensorrt_parses(export_dir):
    for graph in GRAPHS:
        support = tensorrt_ops.check_model(export_dir / f"{graph}.onnx")
        assert support.ok and support.unsupported == (), (graph, support.unsupported)
        assert "Conv" in support.op_types or "GRU" in support.op_types


def test_the_operator_check_reports_what_tensorrt_lacks():
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])
    nodes = [
        h.make_node("Relu", ["x"], ["a"]),
        h.make_node("Unique", ["a"], ["b"]),
        h.make_node("FusedGemm", ["b"], ["y"], domain="com.microsoft"),
    ]
    model = h.make_model(h.make_graph(nodes, "g", [x], [y]), opset_imports=[h.make_opsetid("", 17)])
    support = tensorrt_ops.check_model(model)
    assert support.unsupported == ("Unique", "com.microsoft::FusedGemm") and not support.ok


def test_engine_cache_key_changes_with_each_of_its_inputs():
    base = ("NVIDIA H100 80GB HBM3", "10.15.1", "0123456789abcdef", "strongly-typed")
    key = engine_cache_key(*base)
    assert engine_cache_key(*base) == key
    changed = [
        ("NVIDIA L4", *base[1:]),
        (base[0], "10.16.0", *base[2:]),
        (*base[:2], "fedcba9876543210", base[3]),
        (*base[:3], "fp16-flag"),
    ]
    keys = {engine_cache_key(*c) for c in changed}
    assert len(keys) == 4 and key not in keys


def test_precision_follows_the_export():
    assert precision_mode(export_fp16=True, fp16=None) == "strongly-typed"  # the graph already says fp16
    assert precision_mode(export_fp16=False, fp16=None) == "strongly-typed"
    assert precision_mode(export_fp16=False, fp16=True) == "fp16-flag"


# ------------------------------------------------------------------------------------------ commands


def test_export_and_bench_models_commands(tiny_model, export_dir, tmp_path):
    parser = build_parser()  # facecast's own: export, and bench models beside bench stream

    args = parser.parse_args(["export", "--model", str(tiny_model), "--out", str(tmp_path / "e"), "--no-slim"])
    args.func(args)
    assert load_manifest(tmp_path / "e").batch == 1

    report_path = tmp_path / "bench.json"
    argv = ["bench", "models", "--model", str(tiny_model), "--export", str(export_dir)]
    argv += ["--backend", "torch,onnxruntime", "--steps", "1,2", "--repeats", "2", "--warmup", "1"]
    args = parser.parse_args([*argv, "--json", str(report_path)])
    args.func(args)
    report = json.loads(report_path.read_text())
    items = ["a2l step", "unet", "decode", "encode", "frame 1 step", "frame 2 steps"]
    assert [(r["backend"], r["item"]) for r in report["rows"]] == [
        (b, i) for b in ("torch", "onnxruntime") for i in items
    ]
    for r in report["rows"]:
        assert r["batch"] == 1 and r["runs"] == 2 and 0 < r["median_ms"] <= r["p95_ms"]
        assert r["vs_torch"] is None if r["backend"] == "torch" else r["vs_torch"] > 0
    assert report["exports"] == {"1": str(export_dir)}
    assert "CPUExecutionProvider" in report["onnxruntime_providers"]

    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "models", "--backend", "torch,tflite"])
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "models", "--steps", "0"])

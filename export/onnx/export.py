"""``facecast export``: a model folder -> an export folder of static-shape ONNX graphs, each checked against torch.

Graphs (names as in the manifest):
- ``a2l_step``: ONE video frame of A2L, mel (B, 1, 320) + speaker + reference + GRU state -> displacement + state.
  Streaming runs one frame at a time, and a fixed T would force padding or a re-export per chunk size;
- ``denoise``: one L2V call, inputs exactly those of engine.backend.Backend.denoise;
- ``decode``: the autoencoder decoder for the latent rows the pipeline decodes (mask_top_row
  - L2VConfig.decode_margin_rows to the bottom), computed from the config;
- ``encode``: the encoder for the full 256² crop.
By default the batch axis is dynamic (``dynamic_batch``): one export serves one session or K sessions batched by
``facecast.streaming.live.model_worker``, and parity is checked at the traced batch and at ``PARITY_BATCH``. A static
export (``dynamic_batch=False``) keeps the traced batch, for runtimes or benchmarks that want fixed shapes.
Every graph passes onnx.checker, matches torch on random inputs within ``ParityTolerance``, is slimmed with onnxslim
only when that measurably helps, and is checked against TensorRT's ONNX operator list.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from facecast import __version__
from facecast.engine import checkpoint
from facecast.engine.config import SAMPLES_PER_FRAME, ModelConfig
from facecast.engine.errors import FacecastError
from facecast.engine.mouth_prior import MOUTH_PRIOR_FILE
from facecast.engine.whisper import SPEECH_PART

from . import tensorrt_ops
from .manifest import (
    BATCH_AXES,
    CONFIG,
    DYNAMIC_DIM,
    ENROLLED_A2L_GRAPH,
    ENROLLED_A2L_INFO,
    GRAPHS,
    MANIFEST,
    SPEAKER_GRAPH,
    SPEECH_GRAPH,
    GraphSpec,
    Manifest,
    TensorSpec,
)

Log = Callable[[str], None]


class ExportParityError(FacecastError):
    """An exported graph does not compute what the torch model computes."""

    exit_code = 5


@dataclass(frozen=True)
class ParityTolerance:
    """Largest allowed error of a graph against torch fp32, relative to the largest |torch output|.

    Relative to the peak, not per element: outputs cross zero, where per-element relative error means nothing.
    """

    fp32: float = 1e-4  # float32 reassociation in ORT's fused kernels stays around 1e-6 of the peak
    fp16: float = 3e-2  # half precision carries ~3 significant digits through ~30 layers
    # The speech encoder with int8 weights (per output channel) and int8 activations, on live windows of real
    # speech: 4.5% of the peak on the shipped model (A2L's held-out opening correlation and mouth LMD unchanged).
    int8: float = 0.1


@dataclass(frozen=True)
class ExportOptions:
    opset: int = 17  # LayerNormalization is native from 17; TensorRT 10 reads 9..24
    slim: bool = True
    slim_timing_runs: int = 10  # per variant, interleaved: enough to see a change, short on a busy CPU
    slim_noise: float = 0.05  # timing noise: a slimmed graph up to 5% slower in the quick timing counts as not slower
    threads: int | None = None  # ORT intra-op threads for the checks; None: physical cores
    # The speech encoder's MatMuls in int8 (onnxruntime dynamic quantization): 1.4-1.7x faster on a 2-core CPU,
    # where it runs every frame of every session (docs/benchmarks.md). False keeps it float32.
    speech_int8: bool = True
    a2l_parity_frames: int = 8  # consecutive A2L steps checked against torch's sequence call
    seed: int = 0
    tolerance: ParityTolerance = field(default_factory=ParityTolerance)


# ------------------------------------------------------------------------------------------ graph definitions

BATCH_AXIS_NAME = "batch"
PARITY_BATCH = 3  # a dynamic-batch graph is also checked at this batch: one that baked the traced batch in fails

INPUTS = {
    "a2l_step": ("mel_frames", "speaker", "reference_px", "state"),
    "denoise": ("noisy", "timestep", "masked", "identity", "previous", "heatmaps", "driven_px", "mel_window"),
    "decode": ("latents",),
    "encode": ("images",),
}
OUTPUTS = {"a2l_step": ("displacement", "new_state"), "denoise": ("x0",), "decode": ("images",), "encode": ("latents",)}


def dynamic_axes(graph: str) -> dict[str, dict[int, str]]:
    """torch.onnx.export's ``dynamic_axes`` for ``graph``: every input's and output's batch axis."""
    in_axes, out_axes = BATCH_AXES[graph]
    names = list(zip(INPUTS[graph], in_axes, strict=True)) + list(zip(OUTPUTS[graph], out_axes, strict=True))
    return {name: {axis: BATCH_AXIS_NAME} for name, axis in names}


def decode_rows(cfg: ModelConfig) -> tuple[int, int]:
    """(first latent row, number of rows) that engine.batching.decode_lower_faces decodes."""
    latent_px = cfg.face.crop_px // cfg.autoencoder.downscale
    top = max(0, cfg.l2v.mask_top_px * latent_px // cfg.face.crop_px - cfg.l2v.decode_margin_rows)
    return top, latent_px - top


def input_shapes(cfg: ModelConfig, batch: int) -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
    """Per graph, per input: (static shape, dtype)."""
    b, c = batch, cfg.autoencoder.latent_channels
    mel = cfg.audio.mels_per_frame * cfg.audio.n_mels
    a2l_in = cfg.speech.frame_dim if cfg.a2l.audio_features == "whisper" else mel
    lat = cfg.face.crop_px // cfg.autoencoder.downscale
    n_audio = 2 * cfg.l2v.audio_context_frames + 1
    f32 = "float32"
    return {
        "a2l_step": {
            "mel_frames": ((b, 1, a2l_in), f32),
            "speaker": ((b, cfg.a2l.speaker_dim), f32),
            "reference_px": ((b, 68, 2), f32),
            "state": ((cfg.a2l.layers, b, cfg.a2l.state_width), f32),
        },
        "denoise": {
            "noisy": ((b, c, lat, lat), f32),
            "timestep": ((b,), "int64"),
            "masked": ((b, c, lat, lat), f32),
            "identity": ((b, c, lat, lat), f32),
            "previous": ((b, c, lat, lat), f32),
            "heatmaps": ((b, cfg.l2v.heatmap_channels, lat, lat), f32),
            "driven_px": ((b, 37, 2), f32),
            "mel_window": ((b, n_audio, mel), f32),
        },
        "decode": {"latents": ((b, c, decode_rows(cfg)[1], lat), f32)},
        "encode": {"images": ((b, 3, cfg.face.crop_px, cfg.face.crop_px), f32)},
    }


def example_inputs(cfg: ModelConfig, graph: str, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random inputs in each input's working range (landmarks in the crop, images in [-1, 1], valid timesteps)."""
    out = []
    for name, (shape, dtype) in input_shapes(cfg, batch)[graph].items():
        if dtype == "int64":
            out.append(rng.integers(0, cfg.l2v.num_train_timesteps, shape).astype(np.int64))
        elif name.endswith("_px"):
            out.append(rng.uniform(0.25, 0.75, shape).astype(np.float32) * cfg.face.crop_px)
        elif name in ("images", "heatmaps"):
            out.append(rng.uniform(-1 if name == "images" else 0, 1, shape).astype(np.float32))
        else:
            out.append(rng.standard_normal(shape, dtype=np.float32))
    return out


class _A2LStep(torch.nn.Module):
    def __init__(self, a2l: torch.nn.Module) -> None:
        super().__init__()
        self.a2l = a2l

    def forward(self, mel, speaker, reference, state):
        return self.a2l(mel, speaker, reference, state)


class _Decode(torch.nn.Module):
    def __init__(self, codec: torch.nn.Module) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, latents):
        return self.codec.decode(latents)


class _Encode(_Decode):
    def forward(self, images):
        return self.codec.encode(images)


class _Half(torch.nn.Module):
    """Half-precision weights and compute with float32 graph inputs and outputs, so every runtime feeds the same."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, *xs):
        out = self.inner(*[x.half() if x.is_floating_point() else x for x in xs])
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def graph_modules(model_dir: Path, cfg: ModelConfig) -> dict[str, torch.nn.Module]:
    parts = {p: checkpoint.load_part(model_dir, p, cfg) for p in checkpoint.PARTS}
    return {
        "a2l_step": _A2LStep(parts["a2l"]).eval(),
        "denoise": parts["l2v"].eval(),
        "decode": _Decode(parts["autoencoder"]).eval(),
        "encode": _Encode(parts["autoencoder"]).eval(),
    }


# ------------------------------------------------------------------------------------------ checks


def _ort_session(path: Path, threads: int | None = None) -> Any:  # onnxruntime.InferenceSession
    from ..backends.ort_session import import_onnxruntime, session_options

    ort = import_onnxruntime()
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def _errors(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    diff = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
    peak = float(np.abs(ref).max()) if ref.size else 0.0
    return {"max_abs": diff, "max_rel": diff / max(peak, 1e-12), "peak": peak}


def check_parity(
    graph: str,
    path: Path,
    module: torch.nn.Module,
    cfg: ModelConfig,
    batch: int,
    opts: ExportOptions,
    fp16: bool,
    dynamic_batch: bool = False,
) -> dict[str, object]:
    """ORT on ``path`` vs torch fp32 ``module`` on fresh random inputs; raises ExportParityError past tolerance.

    A dynamic-batch graph is checked at ``batch`` and at ``PARITY_BATCH``."""
    rng = np.random.default_rng(opts.seed + 1)  # not the tracing inputs: a graph that baked them in would fail
    session = _ort_session(path, opts.threads)
    errors: dict[str, dict[str, float]] = {}
    for b in sorted({batch, PARITY_BATCH}) if dynamic_batch else [batch]:
        args = example_inputs(cfg, graph, b, rng)
        got = session.run(list(OUTPUTS[graph]), dict(zip(INPUTS[graph], args, strict=True)))
        with torch.inference_mode():
            ref = module(*(torch.from_numpy(a) for a in args))
        ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
        suffix = "" if b == batch else f"@batch{b}"
        errors |= {name + suffix: _errors(g, r) for name, g, r in zip(OUTPUTS[graph], got, ref, strict=True)}
    if graph == "a2l_step":
        errors["sequence"] = _a2l_sequence_errors(session, module, cfg, batch, opts.a2l_parity_frames, rng)
    tol = opts.tolerance.fp16 if fp16 else opts.tolerance.fp32
    worst = max(e["max_rel"] for e in errors.values())
    result = {
        "tolerance_rel": tol,
        "max_rel": worst,
        "max_abs": max(e["max_abs"] for e in errors.values()),
        "outputs": errors,
    }
    if not worst <= tol:  # `not <=` so that NaN fails too
        raise ExportParityError(
            f"{graph}: ONNX Runtime differs from torch by {worst:.3g} of the output's peak (tolerance {tol:g}); "
            f"details {errors}. Do not use the graph in {path}: try another --opset, or report this message."
        )
    return result


def _a2l_sequence_errors(
    session: Any, module: torch.nn.Module, cfg: ModelConfig, batch: int, frames: int, rng: np.random.Generator
) -> dict[str, float]:
    """T single ONNX steps carrying the state must equal torch's one call over (B, T, features)."""
    width = input_shapes(cfg, batch)["a2l_step"]["mel_frames"][0][-1]  # log-mel or Whisper tokens
    mel = rng.standard_normal((batch, frames, width), dtype=np.float32)
    _, speaker, reference, state = example_inputs(cfg, "a2l_step", batch, rng)
    with torch.inference_mode():
        ref_disp, ref_state = module(*(torch.from_numpy(a) for a in (mel, speaker, reference, state)))
    disps, s = [], state
    for t in range(frames):
        d, s = session.run(
            None, {"mel_frames": mel[:, t : t + 1], "speaker": speaker, "reference_px": reference, "state": s}
        )
        disps.append(d)
    disp_err, state_err = _errors(np.concatenate(disps, 1), ref_disp.numpy()), _errors(s, ref_state.numpy())
    return max(disp_err, state_err, key=lambda e: e["max_rel"])


def _time_ms(session: Any, feeds: dict[str, np.ndarray]) -> float:
    t = time.perf_counter()
    session.run(None, feeds)
    return (time.perf_counter() - t) * 1e3


def maybe_slim(
    path: Path, cfg: ModelConfig, graph: str, batch: int, opts: ExportOptions, log: Log
) -> dict[str, object]:
    """Run onnxslim; keep its graph only if it has fewer nodes and is not slower in a quick ORT timing."""
    model = onnx.load(str(path))
    record: dict[str, object] = {"nodes_before": len(model.graph.node), "kept": False}
    if not opts.slim:
        return {**record, "skipped": "disabled (--no-slim)"}
    try:
        import onnxslim
    except ImportError:
        return {**record, "skipped": "onnxslim is not installed (pip install onnxslim)"}
    record["version"] = getattr(onnxslim, "__version__", "?")
    slim_path = path.with_suffix(".slim.onnx")
    try:
        onnx.save(onnxslim.slim(model), str(slim_path))
        onnx.checker.check_model(str(slim_path), full_check=True)
    except Exception as e:  # noqa: BLE001 - any slimming failure just means we keep the original graph
        slim_path.unlink(missing_ok=True)
        return {**record, "skipped": f"onnxslim failed: {str(e)[:200]}"}
    record["nodes_after"] = len(onnx.load(str(slim_path)).graph.node)
    feeds = dict(zip(INPUTS[graph], example_inputs(cfg, graph, batch, np.random.default_rng(opts.seed)), strict=True))
    sessions = {"before": _ort_session(path, opts.threads), "after": _ort_session(slim_path, opts.threads)}
    times: dict[str, list[float]] = {"before": [], "after": []}
    for s in sessions.values():
        s.run(None, feeds)  # warm-up: first runs allocate
    for _ in range(opts.slim_timing_runs):  # interleaved, so load changes hit both variants alike
        for k, s in sessions.items():
            times[k].append(_time_ms(s, feeds))
    # Best of N, not the median: on a shared CPU other work only ever adds time, so the minimum is the cleanest signal.
    before, after = min(times["before"]), min(times["after"])
    fewer = record["nodes_after"] < record["nodes_before"]
    not_slower = after <= before * (1 + opts.slim_noise)
    record.update(ms_before=round(before, 3), ms_after=round(after, 3), kept=bool(fewer and not_slower))
    if record["kept"]:
        slim_path.replace(path)
    else:
        slim_path.unlink()
    log(
        f"  onnxslim {graph}: {record['nodes_before']} -> {record['nodes_after']} nodes, "
        f"{before:.2f} -> {after:.2f} ms: {'kept' if record['kept'] else 'not kept'}"
    )
    return record


# ------------------------------------------------------------------------------------------ export


def _export_graph(
    module: torch.nn.Module, args: list[np.ndarray], path: Path, graph: str, opset: int, dynamic_batch: bool
) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter warns about diffusers' shape asserts and its own deprecation: with static shapes
        # both are harmless, and onnxscript (the dynamo exporter's dependency) is not one of ours.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(torch.from_numpy(a) for a in args),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(INPUTS[graph]),
            output_names=list(OUTPUTS[graph]),
            do_constant_folding=True,
            dynamic_axes=dynamic_axes(graph) if dynamic_batch else None,
        )


def _specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    model = onnx.load(str(path), load_external_data=False)

    def spec(v: onnx.ValueInfoProto) -> TensorSpec:
        t = v.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        # A named (dynamic) axis has no value: it is written as DYNAMIC_DIM.
        shape = tuple(d.dim_value if d.HasField("dim_value") else DYNAMIC_DIM for d in t.shape.dim)
        return TensorSpec(v.name, shape, dtype)

    return tuple(spec(v) for v in model.graph.input), tuple(spec(v) for v in model.graph.output)


def export_model(
    model_dir: Path,
    out_dir: Path,
    fp16: bool = False,
    batch: int = 1,
    options: ExportOptions = ExportOptions(),
    log: Log = print,
    dynamic_batch: bool = True,
) -> Manifest:
    """Export the four graphs of ``model_dir`` into ``out_dir`` (traced at batch ``batch``; the batch axis dynamic
    unless ``dynamic_batch`` is False) and check them."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    cfg = checkpoint.load_config(model_dir)
    modules = graph_modules(model_dir, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # until the new one is written, this is not a finished export
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    graphs: dict[str, GraphSpec] = {}
    for graph in GRAPHS:
        t0 = time.perf_counter()
        path = out_dir / f"{graph}.onnx"
        module = modules[graph]
        # fp16: deep-copied so the fp32 module stays the reference for the parity check
        exported = _Half(copy.deepcopy(module)).eval() if fp16 else module
        _export_graph(exported, example_inputs(cfg, graph, batch, rng), path, graph, options.opset, dynamic_batch)
        onnx.checker.check_model(str(path), full_check=True)
        slim = maybe_slim(path, cfg, graph, batch, options, log)
        onnx.checker.check_model(str(path), full_check=True)
        parity = check_parity(graph, path, module, cfg, batch, options, fp16, dynamic_batch)
        ops = tensorrt_ops.check_model(path)
        inputs, outputs = _specs(path)
        graphs[graph] = GraphSpec(
            path.name,
            checkpoint.file_hash(path),
            inputs,
            outputs,
            {
                "nodes": len(onnx.load(str(path)).graph.node),
                "op_types": list(ops.op_types),
                "parity": parity,
                "onnxslim": slim,
                "tensorrt": ops.to_dict(),
            },
        )
        log(
            f"{graph}: max abs error {parity['max_abs']:.3g}, "
            f"max relative error {parity['max_rel']:.3g} (tolerance {parity['tolerance_rel']:g}), "
            f"{graphs[graph].checks['nodes']} nodes, {time.perf_counter() - t0:.1f} s"
        )
        if ops.unsupported:
            log(f"  warning: TensorRT's ONNX parser does not support {list(ops.unsupported)} ({tensorrt_ops.SOURCE})")
    speaker = export_speaker(out_dir, options)
    log(f"{SPEAKER_GRAPH}: max abs error {speaker.checks['parity']['max_abs']:.3g} (Resemblyzer's voice network)")
    speech = export_speech(model_dir, cfg, out_dir, options) if cfg.a2l.audio_features == "whisper" else None
    if speech is not None:
        kind = "int8, on speech" if speech.checks["parity"].get("int8") else "float32"
        error = speech.checks["parity"]["max_rel"]
        log(f"{SPEECH_GRAPH}: max error {error:.3g} of the peak ({kind}; Whisper's first encoder blocks)")
    if (model_dir / CONFIG).resolve() != (out_dir / CONFIG).resolve():
        shutil.copyfile(model_dir / CONFIG, out_dir / CONFIG)
        # The mouth prior is no network (numpy at run time): it travels beside the graphs as it is.
        if (model_dir / MOUTH_PRIOR_FILE).is_file():
            shutil.copyfile(model_dir / MOUTH_PRIOR_FILE, out_dir / MOUTH_PRIOR_FILE)
    top, rows = decode_rows(cfg)
    manifest = Manifest(
        facecast_version=__version__,
        opset=options.opset,
        fp16=fp16,
        batch=batch,
        dynamic_batch=dynamic_batch,
        decode_top_row=top,
        decode_rows=rows,
        source_model_dir=str(model_dir.resolve()),
        source_files={
            f.name: checkpoint.file_hash(f)
            for f in [model_dir / CONFIG, *(model_dir / f"{p}.safetensors" for p in checkpoint.PARTS)]
            + ([model_dir / f"{SPEECH_PART}.safetensors"] if speech is not None else [])
        },
        graphs=graphs,
        tools=_tool_versions(),
        speaker=speaker,
        speech=speech,
    )
    manifest.save(out_dir)
    return manifest


def export_enrolled_a2l(bundle: Path, model_dir: Path, options: ExportOptions = ExportOptions()) -> dict | None:
    """An enrolled bundle's own A2L (the person's, or the model's at the person's motion gain: ``enroll.
    enrolled_a2l``) as ``ENROLLED_A2L_GRAPH`` in the bundle, any batch, float32, checked against torch as the
    model's a2l_step is; ``ENROLLED_A2L_INFO`` records the model's A2L it was made from. None (nothing written)
    for a bundle that runs the model's A2L as it is. ``model_dir``: the model the bundle was enrolled with."""
    from facecast.engine.avatar.adapters import enrolled_a2l

    bundle, model_dir = Path(bundle), Path(model_dir)
    if not (bundle / "meta.json").is_file():
        raise FacecastError(f"{bundle} is not an avatar bundle (no meta.json): give a `facecast enroll` folder.")
    cfg = checkpoint.load_config(model_dir)
    a2l = enrolled_a2l(bundle, cfg, checkpoint.load_part(model_dir, "a2l", cfg))
    if a2l is None:
        return None
    module = _A2LStep(a2l).eval()
    path = bundle / ENROLLED_A2L_GRAPH
    rng = np.random.default_rng(options.seed)
    _export_graph(module, example_inputs(cfg, "a2l_step", 1, rng), path, "a2l_step", options.opset, True)
    onnx.checker.check_model(str(path), full_check=True)
    parity = check_parity("a2l_step", path, module, cfg, 1, options, fp16=False, dynamic_batch=True)
    info = {
        "base_a2l_hash": checkpoint.file_hash(model_dir / "a2l.safetensors"),
        "parity": parity,
        "tools": _tool_versions(),
    }
    (bundle / ENROLLED_A2L_INFO).write_text(json.dumps(info, indent=2))
    return info


def export_speaker(out_dir: Path, options: ExportOptions) -> GraphSpec:
    """Resemblyzer's voice network (engine/speaker.py) as ``speaker.onnx``, float32, any number of partials, checked
    against torch: the export's backends then embed speakers without torch."""
    from facecast.engine.speaker import MEL_BANDS, PARTIAL_FRAMES, resemblyzer_partials

    reference = resemblyzer_partials()  # first: its clear error when resemblyzer is missing
    rng = np.random.default_rng(options.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resemblyzer's imports (pkg_resources)
        from resemblyzer import VoiceEncoder

        module = VoiceEncoder("cpu", verbose=False).eval()
    return _export_any_batch(
        module,
        SPEAKER_GRAPH,
        ("mels", "embeddings", "partials"),
        rng.random((3, PARTIAL_FRAMES, MEL_BANDS), dtype=np.float32),
        rng.random((5, PARTIAL_FRAMES, MEL_BANDS), dtype=np.float32),  # another count than the tracing's
        reference,
        out_dir,
        options,
    )


def export_speech(model_dir: Path, cfg: ModelConfig, out_dir: Path, options: ExportOptions) -> GraphSpec:
    """Whisper's first encoder blocks as ``speech_encoder.onnx``, any batch of windows of the live length
    (``SpeechEncoderConfig.window_frames`` and ``pad_frames``), checked against torch; then, with
    ``options.speech_int8``, its MatMuls quantized to int8 and checked again on live windows of real speech."""
    from facecast.engine.whisper import load_speech_encoder

    module = load_speech_encoder(model_dir, cfg.speech)
    rng = np.random.default_rng(options.seed)
    frames = (cfg.speech.window_frames + cfg.speech.pad_frames) * SAMPLES_PER_FRAME // cfg.speech.hop_samples

    def reference(mel: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(mel)).numpy()

    spec = _export_any_batch(
        module,
        SPEECH_GRAPH,
        ("mel", "tokens", "windows"),
        rng.uniform(-1, 1.5, (2, cfg.speech.n_mels, frames)).astype(np.float32),  # Whisper log-mel's range
        rng.uniform(-1, 1.5, (3, cfg.speech.n_mels, frames)).astype(np.float32),
        reference,
        out_dir,
        options,
    )
    return quantize_speech(out_dir / spec.file, cfg, reference, options) if options.speech_int8 else spec


def speech_check_windows(cfg: ModelConfig, every_frames: int = 7) -> np.ndarray:
    """Whisper log-mel of live windows over the bundled speech (engine/assets/speech.wav), one window ending every
    ``every_frames`` frames: (windows, 80, F). Quantization error is measured on speech, not on noise."""
    from facecast.engine.bundled import DEFAULT_SPEECH
    from facecast.engine.config import SAMPLE_RATE
    from facecast.engine.media import load_audio
    from facecast.engine.whisper import whisper_log_mel

    speech, window = cfg.speech, cfg.speech.window_samples
    audio = np.concatenate([np.zeros(window, np.float32), load_audio(DEFAULT_SPEECH, SAMPLE_RATE)])
    ends = range(window, len(audio) + 1, every_frames * SAMPLES_PER_FRAME)
    windows = np.stack([audio[end - window : end] for end in ends])
    return whisper_log_mel(np.pad(windows, ((0, 0), (0, speech.pad_frames * SAMPLES_PER_FRAME))), speech)


def quantize_speech(
    path: Path, cfg: ModelConfig, reference: Callable[[np.ndarray], np.ndarray], options: ExportOptions
) -> GraphSpec:
    """``path`` (float32) rewritten with int8 MatMul weights per output channel and int8 activations quantized per
    call (onnxruntime's dynamic quantization), checked against torch on ``speech_check_windows``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_suffix(".fp32.onnx")
    path.replace(fp32)
    try:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs advice on pre-processing that does not apply here
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
    finally:
        fp32.unlink(missing_ok=True)
    return _checked_spec(
        path,
        "mel",
        speech_check_windows(cfg),
        reference,
        options.tolerance.int8,
        options.threads,
        f"{SPEECH_GRAPH}: the int8 graph on speech",
        "Export with --speech-fp32, or report this message.",
        int8=True,
    )


def _export_any_batch(
    module: torch.nn.Module,
    graph: str,
    names: tuple[str, str, str],
    example: np.ndarray,
    check: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray],
    out_dir: Path,
    options: ExportOptions,
) -> GraphSpec:
    """A one-input, one-output network as ``graph``.onnx with a dynamic first axis: traced on ``example``, checked
    by onnx and against ``reference`` (torch) on ``check``, a batch of another size. names: (input, output, the
    first axis's name)."""
    path = out_dir / f"{graph}.onnx"
    input_name, output_name, axis = names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on LSTMs and attention
        torch.onnx.export(
            module,
            (torch.from_numpy(example),),
            str(path),
            dynamo=False,
            opset_version=options.opset,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: axis}, output_name: {0: axis}},
        )
    onnx.checker.check_model(str(path), full_check=True)
    return _checked_spec(
        path,
        input_name,
        check,
        reference,
        options.tolerance.fp32,
        options.threads,
        f"{graph}: ONNX Runtime",
        f"Do not use {path}: try another --opset, or report this message.",
    )


def _checked_spec(
    path: Path,
    input_name: str,
    check: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray],
    tolerance: float,
    threads: int | None,
    what: str,
    advice: str,
    **notes: object,
) -> GraphSpec:
    """The GraphSpec of a one-input, one-output graph whose output on ``check`` is within ``tolerance`` of the
    output's peak of ``reference`` (torch); ExportParityError with ``advice`` otherwise."""
    got = _ort_session(path, threads).run(None, {input_name: check})[0]
    parity = {**_errors(got, reference(check)), "tolerance_rel": tolerance, **notes}
    if not parity["max_rel"] <= tolerance:
        raise ExportParityError(
            f"{what} differs from torch by {parity['max_rel']:.3g} of the output's peak (tolerance {tolerance:g}). "
            + advice
        )
    inputs, outputs = _specs(path)
    return GraphSpec(path.name, checkpoint.file_hash(path), inputs, outputs, {"parity": parity})


def _tool_versions() -> dict[str, str]:
    versions = {"torch": torch.__version__, "onnx": onnx.__version__}
    for name in ("onnxruntime", "onnxslim"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions

"""`facecast enroll`: a tiny enrolment on a generated video (tiny model, a few steps), the bundle's round trip
through `generate`, resume, the bad inputs, and the personal eval protocol."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ASSETS, moving_face_video, speech_like, write_wav

from facecast.engine import media
from facecast.engine.avatar.adapters import ADAPTER_CONFIG_FILE
from facecast.engine.avatar.frames_video import FRAMES_VIDEO_FILE
from facecast.engine.avatar.prepare import A2L_FILE, ADAPTER_FILE, Avatar, check_backend, model_hash
from facecast.engine.checkpoint import file_hash
from facecast.engine.errors import AudioError, FaceError, InputError
from facecast.engine.training import enroll as enroll_module
from facecast.engine.training.enroll import EnrollConfig, enroll, enrolled_motion_gain

# A few steps at a high rate: enough to move the adapter off zero, fast enough for CI.
TINY = EnrollConfig(
    max_steps=4,
    batch=2,
    lr=1e-2,
    warmup_steps=1,
    a2l_steps=4,
    a2l_batch=2,
    a2l_lr=1e-2,
    min_seconds=2.0,
    check_identity=False,
    log_every=2,
    save_every=2,
)


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return moving_face_video(tmp_path_factory.mktemp("enroll") / "person.mp4", frames=75)  # 3 s


@pytest.fixture(scope="module")
def bundle(tiny_model: Path, video: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bundle") / "person"
    return out, enroll(video, out, tiny_model, TINY, log=_quiet)


def _face_video(path: Path, frame_fn, frames: int, audio: np.ndarray | None = None) -> Path:
    """A video whose frame i is ``frame_fn(i, astronaut_face)``, with speech-like audio unless given."""
    face = np.ascontiguousarray(media.load_image(ASSETS / "astronaut.jpg")[0:320, 80:400])
    first = frame_fn(0, face)
    w = media.Mp4Writer(path, first.shape[1], first.shape[0])
    for i in range(frames):
        w.write(frame_fn(i, face))
    w.close(speech_like(frames / 25) if audio is None else audio)
    return path


def backend_reference(backend) -> np.ndarray:
    """A plausible (1, 68, 2) reference shape: the bundled portrait's landmarks are not needed, any face will do."""
    from facecast.engine.config import FaceConfig

    rng = np.random.default_rng(1)
    return (FaceConfig().crop_px / 2 + 40 * rng.standard_normal((1, 68, 2))).astype(np.float32)


# ---------------------------------------------------------------------------------------------- the bundle


def test_bundle_holds_the_avatar_and_a_small_adapter(bundle: tuple[Path, dict], tiny_model: Path) -> None:
    out, report = bundle
    files = {"avatar.npz", FRAMES_VIDEO_FILE, "meta.json", ADAPTER_FILE, ADAPTER_CONFIG_FILE, A2L_FILE}
    assert {p.name for p in out.iterdir()} == files
    assert not out.with_name(out.name + ".partial").exists()
    avatar = Avatar.load(out, model_hash(tiny_model))
    assert avatar.num_frames == 75 and avatar.crops.shape == (75, 256, 256, 3)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["enrolment"]["base_l2v_hash"] == file_hash(tiny_model / "l2v.safetensors")
    assert report["steps"] == TINY.max_steps and report["val_loss_last"] is not None
    assert report["train_frames"] + report["val_frames"] == 75
    from safetensors.torch import load_file

    weights = load_file(str(out / ADAPTER_FILE))
    assert weights and all("lora_" in k for k in weights)
    assert report["adapter_mb"] < 1.0  # only what changed: the tiny model's adapter is a few hundred kB


def test_enrolled_weights_change_the_output_and_the_models_own_do_not_change(
    bundle: tuple[Path, dict], tiny_model: Path
) -> None:
    """Calls that name the bundle's weights run them; calls that name none run the model's own, whatever avatars
    were loaded (the avatar carries its enrolment: ``Avatar.enrolment``)."""
    from facecast.engine.avatar.prepare import load_avatar
    from facecast.export.backends.torch_backend import TorchBackend

    out, _ = bundle
    before = file_hash(tiny_model / "l2v.safetensors")
    backend = TorchBackend(tiny_model)
    base_weights = {k: v.clone() for k, v in backend.l2v.state_dict().items()}
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 8, 32, 32), dtype=np.float32) for _ in range(4)]
    args = (inputs[0], np.array([500]), inputs[1], inputs[2], inputs[3])
    extra = (
        rng.random((1, 3, 32, 32), np.float32),
        rng.random((1, 37, 2), np.float32) * 256,
        rng.random((1, 5, 320), np.float32),
    )
    generic = backend.denoise(*args, *extra)
    mel = rng.standard_normal((1, 10, 320), dtype=np.float32)
    a2l_args = (mel, rng.standard_normal((1, 256), dtype=np.float32), backend_reference(backend))
    generic_motion = backend.a2l(*a2l_args, np.zeros(backend.a2l_state_shape(), np.float32))[0]

    person = load_avatar(out, backend)  # an enrolled bundle: its adapter goes into a copy of L2V
    assert person.enrolment == out.resolve()
    weights = person.enrolment
    enrolled = backend.denoise(*args, *extra, weights=weights)
    assert np.abs(enrolled - generic).max() > 1e-5
    enrolled_motion = backend.a2l(*a2l_args, np.zeros(backend.a2l_state_shape(), np.float32), weights=weights)[0]
    assert np.abs(enrolled_motion - generic_motion).max() > 1e-5
    np.testing.assert_array_equal(backend.denoise(*args, *extra), generic)  # the model's own, with it loaded

    assert load_avatar(ASSETS / "astronaut.jpg", backend).enrolment is None  # a plain avatar: the model's own
    np.testing.assert_array_equal(backend.denoise(*args, *extra), generic)
    np.testing.assert_array_equal(backend.denoise(*args, *extra, weights=weights), enrolled)  # and it, its own
    np.testing.assert_array_equal(
        backend.a2l(*a2l_args, np.zeros(backend.a2l_state_shape(), np.float32))[0], generic_motion
    )
    for k, v in backend.l2v.state_dict().items():
        assert np.array_equal(v.numpy(), base_weights[k].numpy()), k
    assert file_hash(tiny_model / "l2v.safetensors") == before


@pytest.fixture(scope="module")
def calibrated(tiny_model: Path, video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle without A2L training: the base A2L's motion gain re-measured on the person (the default), run as
    measured (rule "person", so the bundle's gain differs from the model's whichever way the person's lies)."""
    out = tmp_path_factory.mktemp("calibrated") / "person"
    person = dataclasses.replace(TINY, a2l_steps=0, max_steps=1, a2l_gain_rule="person")
    enroll(video, out, tiny_model, person, log=_quiet)
    return out


def test_bundle_records_the_persons_motion_gain(calibrated: Path, tiny_model: Path) -> None:
    from facecast.engine.checkpoint import load_config

    assert not (calibrated / A2L_FILE).exists()  # a scalar in meta.json, not a copy of A2L
    record = json.loads((calibrated / "meta.json").read_text())["enrolment"]
    assert EnrollConfig().calibrate_a2l_motion and record["config"]["calibrate_a2l_motion"]
    assert record["base_a2l_motion_gain"] == load_config(tiny_model).a2l.motion_gain
    measured = record["person_a2l_motion_gain"]
    assert np.isfinite(measured) and measured > 0 and measured != record["base_a2l_motion_gain"]
    rule = record["config"]["a2l_gain_rule"]
    assert record["a2l_motion_gain"] == enrolled_motion_gain(measured, record["base_a2l_motion_gain"], rule)


def test_lower_only_rule_never_raises_the_models_gain() -> None:
    assert enrolled_motion_gain(1.0, 2.25, "lower_only") == 1.0  # the person's, when it is lower
    assert enrolled_motion_gain(3.6, 2.25, "lower_only") == 2.25  # the model's, when the person's is higher
    assert enrolled_motion_gain(3.6, 2.25, "person") == 3.6
    assert enrolled_motion_gain(1.0, 2.25, "person") == 1.0
    with pytest.raises(InputError, match="a2l_gain_rule"):
        enrolled_motion_gain(1.0, 2.25, "higher")
    with pytest.raises(InputError, match="lower_only"):
        EnrollConfig(a2l_gain_rule="min")


def test_the_calibration_gives_a_whisper_hearing_a2l_its_speech_encoder(monkeypatch, tiny_model: Path) -> None:
    """The shipped model's A2L hears Whisper features: without the model's speech encoder the calibration failed
    ('needs its speech encoder') after the whole preparation. The tiny model hears log-mel, so the encoder the
    calibration is given is checked, not run."""
    from facecast.engine import checkpoint

    encoder, given = object(), {}
    monkeypatch.setattr(enroll_module, "model_encode", lambda model_dir, cfg: encoder)

    def with_motion_gain(cfg, a2l, clips, cache, target, encode=None):
        given["encode"] = encode
        return cfg

    monkeypatch.setattr(enroll_module, "with_motion_gain", with_motion_gain)
    cfg = checkpoint.load_config(tiny_model)
    clip = enroll_module._clip("train", np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 68, 2)), np.zeros(2560))
    enroll_module.person_motion_gain(tiny_model, cfg, clip, 0.8)
    assert given["encode"] is encoder


def test_calibrated_bundle_runs_the_base_a2l_at_the_persons_gain(calibrated: Path, tiny_model: Path) -> None:
    from facecast.engine.avatar.prepare import load_avatar
    from facecast.export.backends.torch_backend import TorchBackend

    record = json.loads((calibrated / "meta.json").read_text())["enrolment"]
    backend = TorchBackend(tiny_model)
    base_gain = backend.a2l_net.cfg.motion_gain
    rng = np.random.default_rng(0)
    args = (
        rng.standard_normal((1, 10, 320), dtype=np.float32),
        rng.standard_normal((1, 256), dtype=np.float32),
        backend_reference(backend),
    )

    def motion(weights: Path | None = None) -> np.ndarray:
        state = np.zeros(backend.a2l_state_shape(), np.float32)
        return backend.a2l(*args, state, **({} if weights is None else {"weights": weights}))[0]

    generic = motion()
    person = load_avatar(calibrated, backend).enrolment
    expected = generic * (record["a2l_motion_gain"] / base_gain)
    np.testing.assert_allclose(motion(person), expected, rtol=1e-5, atol=1e-6)
    load_avatar(ASSETS / "astronaut.jpg", backend)
    np.testing.assert_array_equal(motion(), generic)  # the model's own A2L, unchanged
    assert backend.a2l_net.cfg.motion_gain == base_gain


def test_calibration_off_keeps_the_base_a2l(video: Path, tiny_model: Path, tmp_path: Path) -> None:
    from facecast.engine.avatar.adapters import enrolled_a2l
    from facecast.export.backends.torch_backend import TorchBackend

    off = dataclasses.replace(TINY, a2l_steps=0, max_steps=1, calibrate_a2l_motion=False)
    enroll(video, tmp_path / "person", tiny_model, off, log=_quiet)
    assert json.loads((tmp_path / "person" / "meta.json").read_text())["enrolment"]["a2l_motion_gain"] is None
    backend = TorchBackend(tiny_model)
    assert enrolled_a2l(tmp_path / "person", backend.cfg, backend.a2l_net) is None
    backend.load_enrolment(tmp_path / "person")
    assert backend.networks(tmp_path / "person")[0] is backend.a2l_net  # the model's own A2L, at its own gain


def test_bundle_round_trips_through_generate(bundle: tuple[Path, dict], tiny_model: Path, tmp_path: Path) -> None:
    from facecast.cli import main

    out, _ = bundle
    wav = write_wav(tmp_path / "speech.wav", speech_like(0.6), 16_000)
    mp4 = tmp_path / "out.mp4"
    rc = main(["generate", "--avatar", str(out), "--audio", str(wav), "--out", str(mp4), "--model", str(tiny_model)])
    assert rc == 0 and media.probe_video(mp4).frames >= 10


def test_backends_without_adapters_refuse_an_enrolled_bundle(bundle: tuple[Path, dict]) -> None:
    class OnnxLike:
        name = "onnxruntime"

    with pytest.raises(InputError, match="cannot run it"):
        check_backend(OnnxLike(), bundle[0])
    check_backend(OnnxLike(), None)  # a plain avatar is fine


class CallLog:
    """A backend that records the weights and the batch size of every L2V call."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.cfg = inner, inner.name, inner.cfg
        self.calls: list[tuple[Path | None, int]] = []

    def denoise(self, *args, **kw):
        self.calls.append((kw.get("weights"), len(args[0])))
        return self.inner.denoise(*args, **kw)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_sessions_in_one_process_each_render_their_own_person(
    bundle: tuple[Path, dict], tiny_model: Path, tmp_path: Path
) -> None:
    """Two sessions on one backend and one shared model worker, one on an enrolled bundle and one on a plain
    portrait: each renders exactly what it renders alone, before and after a third avatar is uploaded. The worker
    batches the frames of sessions on the same weights and gives the others a call of their own."""
    import threading

    import cv2

    from facecast.engine.avatar.prepare import load_avatar
    from facecast.engine.config import InferenceConfig
    from facecast.engine.pipeline import LipSyncSession
    from facecast.export.backends.torch_backend import TorchBackend
    from facecast.streaming.live.model_worker import ModelWorker

    out, _ = bundle
    portrait = ASSETS / "astronaut.jpg"
    audio, speaker, inference = speech_like(0.6, seed=9), np.zeros(256, np.float32), InferenceConfig(steps=1)

    def steps(session: LipSyncSession):  # the session's model requests, for the worker to batch
        frames = yield from session.push_audio_steps(audio)
        frames += yield from session.finish_steps()
        return [f.crop for f in frames]

    def alone(avatar: Path) -> list[np.ndarray]:
        backend = TorchBackend(tiny_model)  # a process of its own
        session = LipSyncSession(backend, backend.cfg, load_avatar(avatar, backend), speaker, inference)
        return [f.crop for f in session.push_audio(audio) + session.finish()]

    backend = CallLog(TorchBackend(tiny_model))
    worker = ModelWorker(backend)

    def together(avatars: list) -> list[list[np.ndarray]]:
        """One session per avatar, their frames due in the same rounds of the shared worker."""
        blocker, release = worker.join(), threading.Event()
        blocker.submit(release.wait)  # the worker waits until every session's work is queued
        lanes = [worker.join() for _ in avatars]
        sessions = [LipSyncSession(backend, backend.cfg, a, speaker, inference) for a in avatars]
        futures = [lane.submit(steps, s) for lane, s in zip(lanes, sessions, strict=True)]
        release.set()
        crops = [f.result(timeout=120) for f in futures]
        for lane in (blocker, *lanes):
            lane.shutdown()
        return crops

    expected = [alone(out), alone(portrait)]
    person, plain = load_avatar(out, backend), load_avatar(portrait, backend)
    before = together([person, plain])
    mirrored = tmp_path / "mirrored.png"
    cv2.imwrite(str(mirrored), cv2.flip(cv2.imread(str(portrait)), 1))
    third = load_avatar(mirrored, backend)  # a third person uploaded: a plain portrait, the model's own weights
    after = together([person, plain])
    backend.calls.clear()
    three = together([person, plain, third])
    calls = set(backend.calls)

    for got in (before, after, [three[0], three[1]]):
        assert [len(c) for c in got] == [len(c) for c in expected] and len(expected[0]) >= 10
        for crops, alone_crops in zip(got[:1], expected[:1], strict=True):  # the enrolled person: exact
            assert all(np.array_equal(a, b) for a, b in zip(crops, alone_crops, strict=True))
    for got in (before, after):  # the plain portrait, in a call of its own: exact too
        assert all(np.array_equal(a, b) for a, b in zip(got[1], expected[1], strict=True))
    # with a second plain session, their frames share one call (float sums in another order: nearly equal)
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(three[1], expected[1], strict=True))
    # and the person's own weights matter: on the model's own, the same avatar renders otherwise
    (generic,) = together([dataclasses.replace(person, enrolment=None)])
    assert any(not np.array_equal(a, b) for a, b in zip(generic, expected[0], strict=True))
    assert calls == {(None, 2), (person.enrolment, 1)}  # one call per weights, each round


# ---------------------------------------------------------------------------------------------- resume


def test_interrupted_run_resumes(
    video: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_batch = enroll_module.l2v_batch
    calls = {"n": 0}

    def interrupting_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # the validation batch, the timing batch, then training steps 1, 2: stop in step 3
            raise KeyboardInterrupt
        return real_batch(*args, **kwargs)

    out = tmp_path / "person"
    monkeypatch.setattr(enroll_module, "l2v_batch", interrupting_batch)
    with pytest.raises(KeyboardInterrupt):
        enroll(video, out, tiny_model, TINY, log=_quiet)
    assert not out.exists()  # never a half-written bundle
    state = json.loads((tmp_path / "person.partial" / "runs" / "l2v_lora" / "state.json").read_text())
    assert state["step"] == 2
    monkeypatch.setattr(enroll_module, "l2v_batch", real_batch)
    report = enroll(video, out, tiny_model, TINY, resume=True, log=_quiet)
    assert report["steps"] == TINY.max_steps
    assert (out / ADAPTER_FILE).is_file() and not (tmp_path / "person.partial").exists()


# ---------------------------------------------------------------------------------------------- bad input


def test_too_short_says_how_long_is_needed(tiny_model: Path, tmp_path: Path) -> None:
    short = moving_face_video(tmp_path / "short.mp4", frames=12)
    with pytest.raises(InputError, match="at least 10 s"):
        enroll(short, tmp_path / "b", tiny_model, EnrollConfig(), log=_quiet)
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_no_speech_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    silent = _face_video(tmp_path / "silent.mp4", lambda i, f: f, 75, audio=np.zeros(75 * 640, np.float32))
    with pytest.raises(AudioError):
        enroll(silent, tmp_path / "b", tiny_model, TINY, log=_quiet)
    mute = moving_face_video(tmp_path / "mute.mp4", frames=75, with_audio=False)
    with pytest.raises(AudioError, match="no audio"):
        enroll(mute, tmp_path / "b", tiny_model, TINY, log=_quiet)
    assert not (tmp_path / "b").exists()


def test_several_people_are_refused(tiny_model: Path, tmp_path: Path) -> None:
    two = _face_video(tmp_path / "two.mp4", lambda i, f: np.concatenate([f, f[:, ::-1]], axis=1), 75)
    with pytest.raises(FaceError, match="several people"):
        enroll(two, tmp_path / "b", tiny_model, TINY, log=_quiet)


def test_face_lost_in_many_frames_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    blank = lambda i, f: f if i % 3 == 0 else np.full_like(f, 90)  # noqa: E731 - the face in a third of frames
    lost = _face_video(tmp_path / "lost.mp4", blank, 75)
    with pytest.raises(FaceError, match="lost"):
        enroll(lost, tmp_path / "b", tiny_model, TINY, log=_quiet)


def test_a_different_person_in_the_second_half_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    def frame(i: int, f: np.ndarray) -> np.ndarray:
        canvas = np.full((320, 384, 3), 128, np.uint8)
        face = f if i < 125 else cv2.resize(f, (384, 288))  # then another face's proportions: wider, flatter
        canvas[: face.shape[0], : face.shape[1]] = face
        return canvas

    other = _face_video(tmp_path / "other.mp4", frame, 250)  # 10 s: the identity checks' minimum
    with pytest.raises(InputError, match="different person") as refused:
        enroll(other, tmp_path / "b", tiny_model, dataclasses.replace(TINY, check_identity=True), log=_quiet)
    assert "--no-identity-check" in str(refused.value)  # the way out when it is one person after all


def test_cli_enroll_no_identity_check_turns_the_check_off(monkeypatch, tiny_model: Path, tmp_path: Path) -> None:
    import facecast.engine.training.enroll as enroll_module
    from facecast.cli import main

    seen = []

    def fake_enroll(video, out, model, ecfg, **kwargs):
        seen.append(ecfg.check_identity)
        raise InputError("stop here")

    monkeypatch.setattr(enroll_module, "enroll", fake_enroll)
    base = ["enroll", "--video", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "b"), "--model", str(tiny_model)]
    assert main(base) == 2 and main([*base, "--no-identity-check"]) == 2
    assert seen == [True, False]


# ---------------------------------------------------------------------------------------------- eval


def test_personal_protocol_scores_enrolled_and_generic_side_by_side(video: Path, tiny_model: Path) -> None:
    from facecast.engine.evaluation.evaluate import EvalConfig, evaluate
    from facecast.export.backends.torch_backend import TorchBackend

    backend = TorchBackend(tiny_model)
    ecfg = EvalConfig(protocol="personal", steps=1, max_frames=20, enroll=dataclasses.replace(TINY, min_seconds=1.0))
    report = evaluate(video, backend, ecfg)
    assert not report["skipped"], report["skipped"]
    scores = report["clips"][video.stem]
    for system in ("model", "generic", "oracle", "generic_oracle", "static", "topline"):
        assert np.isfinite(scores[system]["psnr_mouth"]), system
    ratios = report["enrolled_vs_generic"][video.stem]
    assert set(ratios) >= {"lmd_mouth_ratio", "psnr_mouth_gain_db"}
    assert report["enrolment"][video.stem]["steps"] == TINY.max_steps


def test_cli_enroll_reports_bad_input_with_exit_code_2(tiny_model: Path, tmp_path: Path) -> None:
    from facecast.cli import main

    short = moving_face_video(tmp_path / "short.mp4", frames=12)
    rc = main(["enroll", "--video", str(short), "--out", str(tmp_path / "b"), "--model", str(tiny_model)])
    assert rc == 2 and not (tmp_path / "b").exists()


def test_cli_eval_refuses_an_unknown_gain_rule_with_exit_code_2(video: Path, tiny_model: Path, tmp_path: Path) -> None:
    from facecast.cli import main

    out = tmp_path / "report.json"
    args = ["eval", "--clips", str(video), "--protocol", "personal", "--model", str(tiny_model), "--out", str(out)]
    assert main([*args, "--enroll-gain-rule", "higher"]) == 2 and not out.exists()


def test_an_enrolled_bundle_runs_its_own_a2l_on_onnxruntime(
    bundle: tuple[Path, dict], tiny_model: Path, tmp_path: Path
) -> None:
    """On a model whose mouth prior paints the interior (no L2V picture is shown), onnxruntime serves an enrolled
    person with their own A2L graph, as torch does; without that graph, or on a model that shows L2V, it says
    what to do."""
    from facecast.engine.avatar.prepare import load_avatar
    from facecast.export.backends.onnxruntime_backend import OnnxRuntimeBackend
    from facecast.export.backends.torch_backend import TorchBackend
    from facecast.export.onnx.export import ExportOptions, export_enrolled_a2l, export_model

    model = with_prior(tiny_model, tmp_path / "model")
    export = tmp_path / "export"
    export_model(model, export, options=ExportOptions(threads=1, slim=False), log=_quiet)
    person = tmp_path / "person"
    shutil.copytree(bundle[0], person)  # enrolled on the tiny model itself: the same A2L and L2V as ``model``
    ort = OnnxRuntimeBackend(export, threads=1)
    with pytest.raises(InputError, match="facecast export --avatar"):
        load_avatar(person, ort)
    assert export_enrolled_a2l(person, model, ExportOptions(threads=1)) is not None
    avatar = load_avatar(person, ort)
    assert avatar.enrolment == person.resolve()
    torch_backend = TorchBackend(model)
    rng = np.random.default_rng(0)
    mel = rng.standard_normal((1, 6, 320)).astype(np.float32)
    speaker = np.ones((1, 256), np.float32) / 16
    reference = avatar.reference[None]
    state = np.zeros(ort.a2l_state_shape(), np.float32)
    got = ort.a2l(mel, speaker, reference, state, weights=avatar.enrolment)[0]
    want = torch_backend.a2l(mel, speaker, reference, state, weights=avatar.enrolment)[0]
    base = ort.a2l(mel, speaker, reference, state)[0]
    assert np.abs(got - want).max() < 1e-3 * max(1.0, float(np.abs(want).max()))
    assert np.abs(got - base).max() > 10 * np.abs(got - want).max()  # the person's A2L, not the model's
    # A model that shows L2V's picture (no mouth prior) would need the L2V adapter, which onnxruntime cannot apply.
    plain = tmp_path / "plain"
    export_model(tiny_model, plain, options=ExportOptions(threads=1, slim=False), log=_quiet)
    with pytest.raises(InputError, match="--backend torch"):
        load_avatar(person, OnnxRuntimeBackend(plain, threads=1))


def with_prior(tiny_model: Path, folder: Path) -> Path:
    """A copy of the tiny model with a mouth prior: its frames show no L2V picture (``mouth_prior.shows_l2v``)."""
    from facecast.engine.mouth_prior import MOUTH_PRIOR_FILE, MouthPrior

    shutil.copytree(tiny_model, folder)
    MouthPrior(
        np.zeros((37, 2), np.float32),
        0.0,
        0.1,
        0.1,
        np.full((1, 2, 4, 8, 3), 0.2, np.float32),
        0.1,
        np.array([0.1], np.float32),
        np.array([10]),
        np.ones(3, np.float32),
    ).save(folder / MOUTH_PRIOR_FILE)
    return folder


def test_a_model_that_shows_no_l2v_picture_enrols_the_a2l_only(video: Path, tiny_model: Path, tmp_path: Path) -> None:
    """No L2V adapter is fitted (nothing of it would be shown); the bundle still runs the person's own A2L."""
    from facecast.engine.avatar.prepare import is_enrolled, load_avatar
    from facecast.export.backends.torch_backend import TorchBackend

    model = with_prior(tiny_model, tmp_path / "model")
    out = tmp_path / "person"
    report = enroll(video, out, model, TINY, log=_quiet)
    assert report["adapter"] is None and report["steps"] == 0 and report["adapter_mb"] == 0.0
    assert not (out / ADAPTER_FILE).is_file() and (out / A2L_FILE).is_file() and is_enrolled(out)
    backend = TorchBackend(model)
    avatar = load_avatar(out, backend)
    assert avatar.enrolment == out.resolve()
    a2l, l2v = backend.networks(avatar.enrolment)
    assert l2v is backend.l2v and a2l is not backend.a2l_net
    # Nor are the avatar's latents encoded (its sessions never read them) ...
    assert avatar.latents is None and avatar.masked_latents is None
    # ... until a model that shows L2V loads the bundle: then they are, at load.
    assert load_avatar(out, TorchBackend(tiny_model)).has_latents

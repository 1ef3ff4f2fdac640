import numpy as np
import pytest
from conftest import speech_like, write_wav

from facecast.engine import media
from facecast.engine.audio import MelExtractor, check_speech, log_mel, mel_per_video_frame
from facecast.engine.config import AudioConfig
from facecast.engine.errors import AudioError, InputError
from facecast.engine.evaluation.metrics import audio_envelope


def test_mel_grid_is_four_frames_per_video_frame():
    cfg = AudioConfig()
    audio = speech_like(2.0)
    mel = log_mel(audio)
    assert mel.shape == (len(audio) // cfg.hop_samples, cfg.n_mels)
    per_frame = mel_per_video_frame(mel)
    assert per_frame.shape == (50, 4 * cfg.n_mels)
    assert np.isfinite(mel).all()


def _written_out_filterbank(cfg: AudioConfig) -> np.ndarray:
    """The filterbank facecast computed by hand before it called librosa (HTK mel scale, equal-area triangles)."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    fft_hz = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(cfg.fmin_hz)), hz_to_mel(np.array(cfg.fmax_hz)), cfg.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(
        0.0, np.minimum((fft_hz[None] - lower) / (centre - lower), (upper - fft_hz[None]) / (upper - centre))
    )
    return (weights * 2.0 / (upper - lower)).astype(np.float32)


def test_librosa_filterbank_leaves_the_features_unchanged(monkeypatch):
    """librosa.filters.mel(htk=True, norm="slaney") is the filterbank the models were trained on: same features."""
    from facecast.engine import audio as audio_module

    cfg, speech = AudioConfig(), speech_like(2.0, seed=3)
    np.testing.assert_allclose(audio_module.mel_filterbank(cfg), _written_out_filterbank(cfg), rtol=0, atol=1e-6)
    features = log_mel(speech)
    monkeypatch.setattr(audio_module, "mel_filterbank", _written_out_filterbank)
    np.testing.assert_allclose(features, log_mel(speech), rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_features_equal_offline_for_random_chunks(seed):
    audio = speech_like(3.0, seed=seed)
    offline = log_mel(audio)
    rng = np.random.default_rng(seed)
    extractor, parts, i = MelExtractor(), [], 0
    while i < len(audio):
        n = int(rng.integers(1, 2500))
        parts.append(extractor.push(audio[i : i + n]))
        i += n
    streamed = np.concatenate(parts)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-4)


def test_features_are_causal():
    # Changing audio after sample s must not change mel frames that end at or before s.
    audio = speech_like(1.0)
    changed = audio.copy()
    changed[8000:] = 0
    a, b = log_mel(audio), log_mel(changed)
    assert np.array_equal(a[: 8000 // 160], b[: 8000 // 160])
    assert not np.array_equal(a[8000 // 160 :], b[8000 // 160 :])


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_sample_rate_is_resampled_to_16k(tmp_path, rate):
    seconds = 1.5
    path = write_wav(tmp_path / f"s{rate}.wav", speech_like(seconds, rate=rate), rate)
    audio = media.load_audio(path)
    assert audio.dtype == np.float32
    assert abs(len(audio) - seconds * 16000) < 200
    # The syllable envelope (3 Hz) survives resampling: energy per frame correlates with the 16 kHz original.
    ref = audio_envelope(speech_like(seconds), int(seconds * 25))
    got = audio_envelope(audio, len(audio) // 640)
    n = min(len(ref), len(got))
    assert np.corrcoef(ref[:n], got[:n])[0, 1] > 0.9


def test_bad_audio_gives_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        media.load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        media.load_audio(empty)
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioError, match="cannot decode"):
        media.load_audio(garbage)
    with pytest.raises(AudioError, match="silent"):
        check_speech(np.zeros(32000, np.float32))
    with pytest.raises(AudioError, match="shorter"):
        check_speech(np.ones(100, np.float32))
    bad = speech_like(1.0)
    bad[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        check_speech(bad)


def test_speaker_embedding_is_resemblyzers_own_bit_for_bit():
    # engine/speaker.py writes Resemblyzer's audio side out (no torch at runtime): it must give Resemblyzer's result.
    import warnings

    from facecast.engine.speaker import preprocess_speech, speaker_embedding

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resemblyzer import VoiceEncoder, preprocess_wav
    encoder = VoiceEncoder("cpu", verbose=False)
    for seconds, seed in ((1.2, 1), (3.0, 0), (7.3, 2)):
        audio = speech_like(seconds, seed=seed)
        theirs = preprocess_wav(audio)
        assert np.array_equal(preprocess_speech(audio), theirs)
        assert np.array_equal(speaker_embedding(audio), encoder.embed_utterance(theirs).astype(np.float32))

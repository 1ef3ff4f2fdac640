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


@pytest.mark.parametrize(
    "sample_rate, n_fft, n_mels, fmin, fmax, htk",
    [
        (
            AudioConfig().sample_rate,
            AudioConfig().n_fft,
            AudioConfig().n_mels,
            AudioConfig().fmin_hz,
            AudioConfig().fmax_hz,
            True,
        ),
        (16000, 400, 80, 0.0, None, False),  # Whisper's
        (16000, 400, 40, 0.0, None, False),  # Resemblyzer's
    ],
)
def test_mel_filters_are_librosas(sample_rate, n_fft, n_mels, fmin, fmax, htk):
    """The filters written out in numpy (importing librosa costs a fresh process 0.6-1.1 s) are librosa's."""
    import librosa

    from facecast.engine.audio import mel_filters

    want = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm="slaney", dtype=np.float32
    )
    np.testing.assert_allclose(mel_filters(sample_rate, n_fft, n_mels, fmin, fmax, htk), want, rtol=0, atol=1e-6)


def test_speaker_mels_are_librosas_melspectrogram():
    """Resemblyzer's partials hear librosa.feature.melspectrogram's numbers, now computed without librosa."""
    import librosa

    from facecast.engine import speaker

    wav = speech_like(1.7, seed=5)
    want = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    got = speaker.partial_mels(wav)
    frames = speaker.PARTIAL_FRAMES
    np.testing.assert_allclose(got[0], want[:frames], rtol=1e-4, atol=1e-6 * want.max())


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


def test_speaker_embedding_is_resemblyzers_own():
    # engine/speaker.py writes Resemblyzer's audio side out (no torch or librosa at runtime): it must give
    # Resemblyzer's result, to float rounding (the mels were librosa's bit for bit; numpy's FFT differs by 1e-7).
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
        ours, want = speaker_embedding(audio), encoder.embed_utterance(theirs).astype(np.float32)
        np.testing.assert_allclose(ours, want, rtol=0, atol=1e-6)  # unit vectors: 1e-6 of their length


def test_voice_activity_is_webrtcvads_own_frame_by_frame():
    """engine/vad.py calls webrtcvad's extension directly (its module imports pkg_resources): same answers."""
    import warnings

    from conftest import speech_like

    from facecast.engine.vad import speech_frames

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import webrtcvad

    pcm = np.round(np.concatenate([np.zeros(8000), speech_like(2.0)]) * 20000).astype("<i2")
    for frame, mode in ((480, 2), (480, 3), (160, 1)):
        got = speech_frames(pcm, frame, mode)
        vad = webrtcvad.Vad(mode)
        data = pcm.tobytes()
        want = [vad.is_speech(data[i : i + 2 * frame], 16000) for i in range(0, len(data) - 2 * frame + 1, 2 * frame)]
        assert got.tolist() == want and 0 < got.sum() < len(got)

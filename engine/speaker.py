"""Speaker-identity embedding: Resemblyzer's voice encoder, with its audio side here so the runtime needs no torch.

Resemblyzer's recipe (its ``preprocess_wav`` and ``VoiceEncoder.embed_utterance``), written out in numpy: raise the
volume to -30 dBFS, cut long silences (webrtcvad), 40-band mel spectrogram, 1.6 s partials at 1.3 per second; each
partial goes through the network, and the embedding is the normalised mean of the partial embeddings. Tests check
it against Resemblyzer's own. The network runs where the backend runs it (``Backend.speaker_partials``): torch
loads Resemblyzer's bundled weights (``resemblyzer_partials``), an export folder carries the same network as
``speaker.onnx``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from .audio import centred_power_spectrum, mel_filters
from .errors import DependencyError
from .vad import speech_frames

SPEAKER_DIM = 256
_MIN_SAMPLES = 16_000  # Resemblyzer needs about a second of speech for a stable embedding

# Resemblyzer's hyper-parameters (resemblyzer/hparams.py), which its weights were trained with.
SAMPLE_RATE = 16_000
MEL_WINDOW_SAMPLES = 400  # 25 ms
MEL_HOP_SAMPLES = 160  # 10 ms
MEL_BANDS = 40
PARTIAL_FRAMES = 160  # mel frames per partial utterance: 1.6 s
PARTIALS_PER_SECOND = 1.3
MIN_LAST_PARTIAL_COVERAGE = 0.75  # a shorter last partial is dropped (unless it is the only one)
VAD_WINDOW_SAMPLES = 480  # 30 ms
VAD_SMOOTHING_WINDOWS = 8  # moving average over this many VAD windows
VAD_MAX_SILENCE_WINDOWS = 6  # longer silences are cut
TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1

# (N, PARTIAL_FRAMES, MEL_BANDS) float32 mel partials -> (N, SPEAKER_DIM) unit-norm partial embeddings
PartialEncoder = Callable[[np.ndarray], np.ndarray]


def preprocess_speech(audio_16k: np.ndarray) -> np.ndarray:
    """Resemblyzer's ``preprocess_wav``: volume raised (never lowered) to TARGET_DBFS, long silences cut."""
    wav = np.asarray(audio_16k, np.float32)
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2))
    change_db = TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    if change_db >= 0:
        wav = wav * (10 ** (change_db / 20))
    return _trim_long_silences(wav)


def _trim_long_silences(wav: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    wav = wav[: len(wav) - len(wav) % VAD_WINDOW_SAMPLES]
    voiced = speech_frames(np.round(wav * INT16_MAX).astype("<i2"), VAD_WINDOW_SAMPLES, mode=3)
    width = VAD_SMOOTHING_WINDOWS
    padded = np.concatenate((np.zeros((width - 1) // 2), voiced, np.zeros(width // 2)))
    sums = np.cumsum(padded, dtype=float)
    sums[width:] = sums[width:] - sums[:-width]
    mask = np.round(sums[width - 1 :] / width).astype(bool)
    mask = binary_dilation(mask, np.ones(VAD_MAX_SILENCE_WINDOWS + 1))
    return wav[np.repeat(mask, VAD_WINDOW_SAMPLES)]


def partial_mels(wav: np.ndarray) -> np.ndarray:
    """Preprocessed speech -> (N, PARTIAL_FRAMES, MEL_BANDS) float32 mel partials (power, not log), zero-padded."""
    n_frames = int(np.ceil((len(wav) + 1) / MEL_HOP_SAMPLES))
    frame_step = int(np.round(SAMPLE_RATE / PARTIALS_PER_SECOND / MEL_HOP_SAMPLES))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step))
    coverage = (len(wav) - starts[-1] * MEL_HOP_SAMPLES) / (PARTIAL_FRAMES * MEL_HOP_SAMPLES)
    if coverage < MIN_LAST_PARTIAL_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    end = (starts[-1] + PARTIAL_FRAMES) * MEL_HOP_SAMPLES
    if end >= len(wav):
        wav = np.pad(wav, (0, end - len(wav)), "constant")
    # librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40), as Resemblyzer computes
    # it: zero-padded centred frames, power, Slaney mel filters (tests/test_audio.py checks it against librosa)
    power = centred_power_spectrum(np.asarray(wav, np.float32)[None], MEL_WINDOW_SAMPLES, MEL_HOP_SAMPLES, "constant")
    mel = power[0] @ mel_filters(SAMPLE_RATE, MEL_WINDOW_SAMPLES, MEL_BANDS).T
    return np.array([mel[s : s + PARTIAL_FRAMES] for s in starts])


@lru_cache(maxsize=1)
def resemblyzer_partials() -> PartialEncoder:
    """Resemblyzer's network in torch, with the weights its wheel ships (offline)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resemblyzer's imports warn about pkg_resources
        try:
            import torch
            from resemblyzer import VoiceEncoder
        except ImportError as e:
            raise DependencyError(
                f"resemblyzer is not importable ({e}): pip install resemblyzer 'setuptools<81'"
            ) from e
        encoder = VoiceEncoder("cpu", verbose=False)

    @torch.no_grad()
    def encode(mels: np.ndarray) -> np.ndarray:
        return encoder(torch.from_numpy(np.ascontiguousarray(mels, np.float32))).numpy()

    return encode


def speaker_embedding(audio_16k: np.ndarray, encoder: PartialEncoder | None = None) -> np.ndarray:
    """Unit-norm (256,) embedding of the voice in ``audio_16k``; zeros when there is too little speech.

    ``encoder`` runs the network (a backend's ``speaker_partials``); default: Resemblyzer's in torch.
    """
    if audio_16k.size < _MIN_SAMPLES or not np.any(audio_16k):
        return np.zeros(SPEAKER_DIM, np.float32)
    wav = preprocess_speech(audio_16k)
    if wav.size < _MIN_SAMPLES // 2:
        return np.zeros(SPEAKER_DIM, np.float32)
    partials = (encoder or resemblyzer_partials())(partial_mels(wav))
    mean = np.mean(partials, axis=0)
    return (mean / np.linalg.norm(mean, 2)).astype(np.float32)

"""Speaker-identity embedding from Resemblyzer's bundled encoder (offline; weights ship in the wheel)."""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

from .errors import DependencyError

SPEAKER_DIM = 256
_MIN_SAMPLES = 16_000  # Resemblyzer needs about a second of speech for a stable embedding


@lru_cache(maxsize=1)
def _encoder():  # noqa: ANN202 - resemblyzer has no type hints
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resemblyzer's imports warn about pkg_resources
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as e:
            raise DependencyError(
                f"resemblyzer is not importable ({e}): pip install resemblyzer 'setuptools<81'"
            ) from e
        return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(audio_16k: np.ndarray) -> np.ndarray:
    """Unit-norm (256,) embedding of the voice in ``audio_16k``; zeros when there is too little speech."""
    if audio_16k.size < _MIN_SAMPLES or not np.any(audio_16k):
        return np.zeros(SPEAKER_DIM, np.float32)
    encoder = _encoder()
    from resemblyzer import preprocess_wav  # already imported (and warned about) by _encoder()

    wav = preprocess_wav(audio_16k.astype(np.float32))
    if wav.size < _MIN_SAMPLES // 2:
        return np.zeros(SPEAKER_DIM, np.float32)
    return encoder.embed_utterance(wav).astype(np.float32)

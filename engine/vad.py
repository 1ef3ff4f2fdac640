"""WebRTC's voice activity detector: which 10, 20 or 30 ms frames of 16-bit PCM hold speech.

Called through the ``webrtcvad`` package's compiled ``_webrtcvad`` extension. The package's Python module imports
``pkg_resources`` only to read its own version, which cost 0.1 s of a fresh process's first speaker embedding
(the live engine's warm-up) and warns on newer setuptools.
"""

from __future__ import annotations

import numpy as np

from .errors import DependencyError

SAMPLE_RATE = 16_000


def speech_frames(pcm: np.ndarray, frame_samples: int, mode: int) -> np.ndarray:
    """int16 samples at 16 kHz -> (whole frames,) bool: whether each ``frame_samples`` frame holds speech.

    ``mode`` 0..3: how aggressively non-speech is filtered out (3 the most)."""
    try:
        import _webrtcvad
    except ImportError as e:
        raise DependencyError("voice activity detection needs webrtcvad: pip install webrtcvad") from e
    vad = _webrtcvad.create()
    _webrtcvad.init(vad)
    _webrtcvad.set_mode(vad, mode)
    data = np.ascontiguousarray(pcm, "<i2").tobytes()
    step = 2 * frame_samples  # bytes
    whole = len(data) // step * step
    return np.array(
        [_webrtcvad.process(vad, SAMPLE_RATE, data[i : i + step], frame_samples) for i in range(0, whole, step)],
        dtype=bool,
    )

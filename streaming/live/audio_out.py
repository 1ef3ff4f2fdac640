"""The sound that goes out with each output frame: input block n, delayed and upsampled to 48 kHz."""

from __future__ import annotations

import numpy as np


def lowpass_taps(up: int, half_taps: int = 10, kaiser_beta: float = 5.0) -> np.ndarray:
    """The windowed-sinc low-pass ``scipy.signal.resample_poly`` designs for an upsampling by ``up`` (its default:
    ``firwin(2 * 10 * up + 1, 1 / up, window=("kaiser", 5.0))``, unit gain at DC), in numpy.

    Here and in ``upsample`` instead of scipy.signal itself: importing scipy.signal (which pulls in scipy.stats) was
    0.44 s of a fresh serving process's 1.7 s start, for one filter and one convolution (tests/test_streaming.py
    checks both against scipy's)."""
    n = 2 * half_taps * up + 1
    m = np.arange(n) - (n - 1) / 2
    taps = np.sinc(m / up) * np.kaiser(n, kaiser_beta)
    return taps / taps.sum()


def upsample(x: np.ndarray, up: int, taps: np.ndarray) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, 1, window=taps)``: zeros stuffed between the samples, the linear-phase
    filter (gain ``up``) run over them, and its delay of ``len(taps) // 2`` samples dropped."""
    stuffed = np.zeros(len(x) * up)
    stuffed[::up] = x
    delay = len(taps) // 2
    return np.convolve(stuffed, taps * up)[delay : delay + len(stuffed)]


class AudioOut:
    """The input blocks, delayed and upsampled 16 kHz -> 48 kHz block by block without seams.

    Each block is resampled with ``CONTEXT`` samples of its neighbours on both sides and only its own span kept,
    so the concatenated output equals resampling the whole signal at once (the filter spans 10 input samples).
    """

    CONTEXT = 16
    UP = 3  # 16 kHz -> 48 kHz
    FILTER = lowpass_taps(UP)  # made once, not on the event loop every tick

    def __init__(self, samples_per_frame: int, keep_frames: int) -> None:
        self.samples_per_frame = samples_per_frame
        self.keep_frames = keep_frames
        self._blocks: dict[int, np.ndarray] = {}
        self._silence = np.zeros(samples_per_frame, np.float32)

    def push(self, k: int, block_16k: np.ndarray) -> None:
        self._blocks[k] = block_16k
        self._blocks.pop(k - self.keep_frames, None)

    def silence_from(self, n: int) -> None:
        """Barge-in: blocks n and later, already taken but not sent yet, go out silent."""
        for k in [k for k in self._blocks if k >= n]:
            del self._blocks[k]

    def block_48k(self, n: int) -> np.ndarray:
        """int16 samples of input block n at 48 kHz (zeros for blocks never pushed)."""
        c = self.CONTEXT
        prev = self._blocks.get(n - 1, self._silence)
        cur = self._blocks.get(n, self._silence)
        nxt = self._blocks.get(n + 1, self._silence)
        x = np.concatenate([prev[-c:], cur, nxt[:c]]).astype(np.float64)
        y = upsample(x, self.UP, self.FILTER)[self.UP * c : self.UP * (c + len(cur))]
        return np.round(np.clip(y, -1.0, 1.0) * 32767).astype(np.int16)

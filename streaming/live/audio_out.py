"""The sound that goes out with each output frame: input block n, delayed and upsampled to 48 kHz."""

from __future__ import annotations

import numpy as np
from scipy.signal import firwin, resample_poly


class AudioOut:
    """The input blocks, delayed and upsampled 16 kHz -> 48 kHz block by block without seams.

    Each block is resampled with ``CONTEXT`` samples of its neighbours on both sides and only its own span kept,
    so the concatenated output equals resampling the whole signal at once (the filter spans 10 input samples).
    """

    CONTEXT = 16
    UP = 3  # 16 kHz -> 48 kHz
    # resample_poly's own low-pass for UP (its default design: 10 * UP taps a side, Kaiser beta 5), made once
    # instead of on every block: the same output, without a filter design on the event loop every tick.
    FILTER = firwin(2 * 10 * UP + 1, 1.0 / UP, window=("kaiser", 5.0))

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
        y = resample_poly(x, self.UP, 1, window=self.FILTER)[self.UP * c : self.UP * (c + len(cur))]
        return np.round(np.clip(y, -1.0, 1.0) * 32767).astype(np.int16)

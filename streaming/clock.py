"""Time for the live engine: a clock that can be replaced in tests, and the 25 fps output grid.

Every time and timestamp is computed from an integer frame counter (start + n / fps, n * 3600), never by adding
up float durations, so nothing drifts however long the engine runs.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Protocol

VIDEO_CLOCK_HZ = 90_000  # RTP video clock: video pts are in these units
AUDIO_OUT_HZ = 48_000  # what WebRTC (Opus) carries: audio pts count samples at this rate


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic clock; safe to call from any thread."""
        ...

    async def sleep_until(self, t: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t: float) -> None:
        # Always yields, even when already late, so a ticker catching up cannot starve the event loop.
        await asyncio.sleep(max(0.0, t - self.now()))


@dataclass(frozen=True)
class FrameClock:
    """The output grid: frame n is due at ``start_s + n / fps`` and carries exact integer pts."""

    start_s: float
    fps: int = 25

    def __post_init__(self) -> None:
        if VIDEO_CLOCK_HZ % self.fps or AUDIO_OUT_HZ % self.fps:
            raise ValueError(f"{self.fps} fps does not divide the 90 kHz and 48 kHz clocks: use 25 or 30")

    @property
    def frame_s(self) -> float:
        return 1.0 / self.fps

    @property
    def video_pts_per_frame(self) -> int:
        return VIDEO_CLOCK_HZ // self.fps

    @property
    def audio_samples_per_frame(self) -> int:
        return AUDIO_OUT_HZ // self.fps

    def time_of(self, n: int) -> float:
        return self.start_s + n / self.fps

    def frame_at(self, t: float) -> int:
        """The last frame due at or before time t."""
        return math.floor((t - self.start_s) * self.fps + 1e-9)

    def video_pts(self, n: int) -> int:
        return n * self.video_pts_per_frame

    def audio_pts(self, n: int) -> int:
        return n * self.audio_samples_per_frame

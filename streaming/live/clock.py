"""Time for the live engine: a clock that can be replaced in tests, and the 25 fps output grid.

Every time and timestamp is computed from an integer frame counter (start + n / fps, n * 3600), never by adding
up float durations, so nothing drifts however long the engine runs.
"""

from __future__ import annotations

import asyncio
import math
import threading
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


class VirtualClock:
    """Time that moves only when told (``advance_to``): ``facecast bench stream --fast`` and the tests. Compute takes
    no time on it unless a stand-in model says so: a worker thread calls ``block_for`` and returns once that much
    virtual time has passed, so a run is the same at any machine speed."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._cond = threading.Condition()
        self._waiting: list[float] = []  # until when each thread in block_for waits
        self.released = False

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t: float) -> None:
        if self.t >= t - 1e-9:
            await asyncio.sleep(0)  # yield like a real clock does, even when already due
            return
        fut = asyncio.get_running_loop().create_future()
        self._sleepers.append((t, fut))
        await fut

    def advance_to(self, t: float) -> None:
        """Move time forward, wake the threads in ``block_for`` that are due and (event loop thread only, or
        with no coroutine sleeping) every sleeper that is due."""
        with self._cond:
            self.t = max(self.t, t)
            self._cond.notify_all()
        due = [f for when, f in self._sleepers if when <= self.t + 1e-9]
        self._sleepers = [(when, f) for when, f in self._sleepers if when > self.t + 1e-9]
        for f in due:
            if not f.done():
                f.set_result(None)

    def block_for(self, seconds: float) -> None:
        """Called from a worker thread standing in for compute: return once ``seconds`` of virtual time passed."""
        with self._cond:
            until = self.t + seconds
            self._waiting.append(until)
            self._cond.wait_for(lambda: self.t >= until - 1e-9 or self.released)
            self._waiting.remove(until)

    @property
    def blocked(self) -> int:
        """Threads in ``block_for`` still waiting for a later time. One whose time has come counts as running from
        that moment, before it even wakes up, so a driver cannot move time again under it."""
        with self._cond:
            return sum(until > self.t + 1e-9 for until in self._waiting)

    def release(self) -> None:
        """Let every thread in ``block_for`` return at once, so that an engine can stop."""
        with self._cond:
            self.released = True
            self._cond.notify_all()


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

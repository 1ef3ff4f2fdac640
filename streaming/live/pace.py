"""How the live engine keeps up: ticks per second over the last two seconds, and a warning, at most every
``LiveConfig.log_every_s``, when frames were skipped or dropped in between."""

from __future__ import annotations

import logging
from collections import deque

from .render_policy import RenderPolicy

log = logging.getLogger("facecast.live")


def rate(times: deque[float]) -> float:
    """Events per second over the times kept (0 with fewer than two)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


class Pace:
    def __init__(self, fps: int, log_every_s: float, processing_frames: int) -> None:
        self.fps, self.log_every_s, self.processing_frames = fps, log_every_s, processing_frames
        self.tick_times: deque[float] = deque(maxlen=2 * fps)
        self._logged = (0, 0, 0)  # (tick, skipped, dropped) at the last "falling behind" log line

    def ticked(self, now: float) -> None:
        self.tick_times.append(now)

    def tick_rate(self) -> float:
        return rate(self.tick_times)

    def log_if_behind(self, k: int, skipped: int, dropped: int, policy: RenderPolicy | None) -> None:
        """At tick k, with ``skipped`` and ``dropped`` frames so far: warn if there are more than at the last log."""
        tick0, skipped0, dropped0 = self._logged
        if k - tick0 < self.log_every_s * self.fps:
            return
        if skipped > skipped0 or dropped > dropped0:
            log.warning(
                "falling behind: %d frames skipped and %d dropped in the last %.0f s (render %.0f ms a frame, "
                "budget %.0f ms): use fewer --steps, a faster backend, --speech-every 2, or more --processing-frames",
                skipped - skipped0,
                dropped - dropped0,
                self.log_every_s,
                # what the skips were decided with (the worker's cost of a frame), not the session's own round time
                1000 * (policy.predicted_s() if policy else 0.0),
                1000 * self.processing_frames / self.fps,
            )
        self._logged = (k, skipped, dropped)

"""Which frames the model thread renders: those that can still be shown in time (the live engine's drop rule)."""

from __future__ import annotations

from .clock import Clock, FrameClock


class RenderPolicy:
    """Worker side (``LipSyncSession``'s ``render_policy``): render frame n only if it can still be shown; a skipped
    frame costs no compute.

    Frame n is last showable at tick n + delay_frames + max_late_frames. With the measured render time (a moving
    average on the engine's clock), a frame predicted to miss that tick is skipped. While every frame is predicted
    late, one in ``probe_every_frames`` is rendered anyway so the estimate can recover when compute gets faster.
    """

    def __init__(
        self,
        frames: FrameClock,
        clock: Clock,
        delay_frames: int,
        max_late_frames: int,
        probe_every_frames: int,
        smoothing: float = 0.2,
    ) -> None:
        self.frames, self.clock = frames, clock
        self.last_tick_offset = delay_frames + max_late_frames
        self.probe_every_frames = probe_every_frames
        self.smoothing = smoothing
        self.render_s = 0.0  # optimistic start: the first frames are rendered and measured
        self._skips_in_a_row = 0

    def now(self) -> float:
        return self.clock.now()

    def deadline(self, n: int) -> float:
        """Clock time by which frame n must be ready: the last tick that can still show it."""
        return self.frames.time_of(n + self.last_tick_offset)

    def should_render(self, n: int) -> bool:
        if self.clock.now() + self.render_s <= self.deadline(n):
            self._skips_in_a_row = 0
            return True
        self._skips_in_a_row += 1
        if self._skips_in_a_row >= self.probe_every_frames:
            self._skips_in_a_row = 0
            return True
        return False

    def rendered(self, seconds: float) -> None:
        self.render_s += self.smoothing * (seconds - self.render_s) if self.render_s else seconds

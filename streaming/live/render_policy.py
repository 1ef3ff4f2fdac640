"""Which frames the model thread renders: those that can still be shown in time (the live engine's drop rule)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from .clock import Clock, FrameClock

if TYPE_CHECKING:
    from .model_worker import ModelWorker


class RenderPolicy:
    """Worker side (``LipSyncSession``'s ``render_policy``): render frame n only if it can still be shown; a skipped
    frame costs no compute.

    Frame n is last showable at tick n + delay_frames + max_late_frames. With the measured render time (a moving
    average on the engine's clock; on a model worker, the worker's cost of one frame: ``for_worker``), a frame
    predicted to miss that tick is skipped. While every frame is predicted
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
        frame_cost_s: Callable[[], float] | None = None,
    ) -> None:
        """``frame_cost_s``: seconds one frame costs the model thread, to predict with instead of this policy's own
        measured render time (``for_worker``)."""
        self.frames, self.clock = frames, clock
        self.frame_cost_s = frame_cost_s
        self.last_tick_offset = delay_frames + max_late_frames
        self.probe_every_frames = probe_every_frames
        self.smoothing = smoothing
        self.render_s = 0.0  # optimistic start: the first frames are rendered and measured
        self._skips_in_a_row = 0

    @classmethod
    def for_worker(
        cls,
        worker: ModelWorker,
        frames: FrameClock,
        clock: Clock,
        delay_frames: int,
        max_late_frames: int,
        probe_every_frames: int,
    ) -> RenderPolicy:
        """The policy of a session served by ``worker``: it predicts with the worker's measured cost of one frame
        (``ModelWorker.frame_cost_s``), the same for every session on it, and leaves the sharing to the worker.

        A session's own render time on a shared worker is the time of a whole round, so it depends on how many
        other frames that round rendered: the sessions rendered alone measured short rounds and kept rendering,
        the others measured long ones and were starved to probes."""
        return cls(
            frames, clock, delay_frames, max_late_frames, probe_every_frames, frame_cost_s=lambda: worker.frame_cost_s
        )

    def now(self) -> float:
        return self.clock.now()

    def deadline(self, n: int) -> float:
        """Clock time by which frame n must be ready: the last tick that can still show it."""
        return self.frames.time_of(n + self.last_tick_offset)

    def should_render(self, n: int) -> bool:
        if self.clock.now() + self.predicted_s() <= self.deadline(n):
            self._skips_in_a_row = 0
            return True
        self._skips_in_a_row += 1
        if self._skips_in_a_row >= self.probe_every_frames:
            self._skips_in_a_row = 0
            return True
        return False

    def predicted_s(self) -> float:
        """How long the next frame is expected to take (0 before anything was measured: render and measure).

        A worker measures only the frames it chooses among (L2V calls); a frame drawn without one (the warp and its
        mouth prior: ``LipSyncSession.runs_l2v``) never waits for a round, so its session's own time predicts it."""
        shared = self.frame_cost_s() if self.frame_cost_s is not None else 0.0
        return shared or self.render_s

    def rendered(self, seconds: float) -> None:
        self.render_s += self.smoothing * (seconds - self.render_s) if self.render_s else seconds


class RenderEveryFrame(RenderPolicy):
    """The policy of an engine whose clock waits for its model (``LiveConfig.wait_for_model``): no frame is ever
    too late, so every one is rendered, and its deadline is infinite so that a shared worker never leaves it out
    of an overloaded round either (``ModelWorker._choose``). Render times are still measured for the stats."""

    def deadline(self, n: int) -> float:
        return math.inf

    def should_render(self, n: int) -> bool:
        return True

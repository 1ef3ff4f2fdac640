"""The live engine's jobs on its lane of the model worker: submitted in order from the event loop, their results
back on it.

Counts the backlog (what a ticker that waits for its model waits on, ``caught_up``) and the model's errors, and
passes on only the frames of the current epoch: ``new_epoch()`` (a barge-in, an avatar change) disowns every job
submitted before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from facecast.engine.pipeline import Frame

from .model_worker import Lane

log = logging.getLogger("facecast.live")
T = TypeVar("T")


@dataclass
class EngineCounters:
    ticks: int = 0
    rendered: int = 0  # frames the model made
    skipped: int = 0  # frames not rendered because they would have been too late (drop policy)
    jumped: int = 0  # ticks left out after the event loop was stalled for longer than max_burst_frames
    model_errors: int = 0
    max_backlog: int = 0  # most model jobs ever waiting at once
    catch_ups: int = 0  # times the model fell so far behind that its waiting blocks were dropped (catch_up_frames)
    paired_blocks: int = 0  # blocks whose speech was encoded in pairs of frames after a catch-up (pair_speech_frames)
    interrupts: int = 0  # barge-ins (LiveEngine.interrupt)


class ModelJobs:
    """``submit`` from the event loop; a job that returns ``(epoch, frames)`` of the current epoch has its frames
    handed to ``on_frames`` (on the event loop). ``lane`` is None while the engine is stopped."""

    def __init__(self, counters: EngineCounters, on_frames: Callable[[list[Frame]], None]) -> None:
        self.counters, self.on_frames = counters, on_frames
        self.lane: Lane | None = None
        self.reset()

    def reset(self) -> None:
        self.epoch = 0  # bumped by new_epoch(): older jobs and frames are then ignored
        self.backlog = 0  # jobs submitted and not finished
        self.behind = 0  # jobs of the current epoch submitted and not finished
        self.caught_up = asyncio.Event()  # set while the backlog is 0 (what a ticker with wait_for_model waits for)
        self.caught_up.set()

    def new_epoch(self) -> None:
        self.epoch += 1
        self.behind = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.lane is None:
            return
        fut = asyncio.get_running_loop().run_in_executor(self.lane, fn, *args)
        self.backlog += 1
        self.behind += 1
        self.caught_up.clear()
        self.counters.max_backlog = max(self.counters.max_backlog, self.backlog)
        epoch = self.epoch
        fut.add_done_callback(lambda f: self._done(f, epoch))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the model thread after everything submitted before it (or inline when stopped)."""
        if self.lane is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.lane, fn, *args)

    def _done(self, fut: asyncio.Future[Any], epoch: int) -> None:
        self.backlog -= 1
        if epoch == self.epoch:
            self.behind -= 1
        if self.backlog <= 0:  # (below 0 only for a job of before the last restart)
            self.caught_up.set()
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self.counters.model_errors += 1
            n = self.counters.model_errors
            if n == 1 or n % 100 == 0:  # a broken model fails every tick: say it, but not 25 times a second
                log.error("model step failed (%d so far): %s", n, exc, exc_info=None if n > 1 else exc)
            return
        result = fut.result()
        if result is None:
            return
        epoch, frames = result
        if epoch != self.epoch:
            return
        self.on_frames(frames)

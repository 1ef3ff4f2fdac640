"""One model thread for many live sessions: each round it takes the next job of every session and batches them.

    session A lane ─┐                      ┌─ A2L      one call for every session with new audio
    session B lane ─┼─▶ ModelWorker round ─┼─ UNet     one call per DDIM step for every frame due
    session C lane ─┘   (head job of each) └─ decode   one call for every frame due

A ``Lane`` is an ``Executor``: the live engine submits its model work to its lane exactly as it would to a
one-thread pool, and a lane runs its own jobs in submission order. A job that returns a generator of model
requests (``engine.batching``: ``LipSyncSession.push_audio_steps`` and friends) is driven together with the other
lanes' jobs of the same round, so the frames due from K sessions go through A2L, UNet and decode as one batch per
call; any other job (speaker embedding, avatar swap) simply runs.

Policy when the worker cannot serve everyone in time (explicit, and the same as for one session):
- every round serves the head job of *every* lane that has one, so no session waits more than one round for
  another; rounds larger than ``max_batch`` are cut into batches, and the lanes served first rotate each round;
- each session's own ``RenderPolicy`` skips the frames it predicts late (its render time is measured around the
  batched call, so it sees the shared worker's real pace) and the display repeats its last picture;
- joining or leaving only adds or removes a lane between rounds: nobody else's jobs wait for it.

Gathering: engines on one worker tick on one frame grid (``align_start``), so their jobs arrive together; a round
that finds some lanes served last round still empty waits up to ``WorkerConfig.gather_ms`` for them, and never
for a lane that has gone quiet (between utterances, or gone).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

from facecast.engine.backend import Backend
from facecast.engine.batching import run_calls

log = logging.getLogger("facecast.model_worker")


@dataclass(frozen=True)
class WorkerConfig:
    max_batch: int | None = None  # most frames in one model call; None: every frame due (TensorRT's profile caps it)
    # A round waits this long for lanes that were served last round and have no job yet: ticks of sessions on one
    # grid submit within a millisecond or two, and a round without them would run twice as many model calls.
    gather_ms: float = 5.0


@dataclass
class WorkerCounters:
    rounds: int = 0  # times the worker took the head jobs of the waiting lanes
    jobs: int = 0
    batched_jobs: int = 0  # jobs that were generators of model requests (driven in a shared round)
    largest_round: int = 0  # most lanes served in one round


@dataclass
class _Job:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Lane(Executor):
    """One session's queue on a ModelWorker; its jobs run in submission order, one per worker round."""

    def __init__(self, worker: ModelWorker, name: str) -> None:
        self.worker, self.name = worker, name
        self.jobs: deque[_Job] = deque()
        self.closed = False
        self.idle = threading.Event()  # set while no job of this lane is running
        self.idle.set()
        self.last_round = -1  # the worker round that last served this lane

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self.worker.cond:
            if self.closed:
                raise RuntimeError(f"lane {self.name} has left the model worker: start the engine again")
            self.jobs.append(_Job(future, fn, args, kwargs))
            self.worker.cond.notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Leave the worker: later submits fail; ``cancel_futures`` drops queued jobs; ``wait`` waits for the
        running one. The other lanes are not touched."""
        with self.worker.cond:
            self.closed = True  # the worker drops the lane once its queue is empty
            if cancel_futures:
                while self.jobs:
                    self.jobs.popleft().future.cancel()
            self.worker.cond.notify()
        if wait:
            while True:
                with self.worker.cond:
                    if not self.jobs:
                        break
                self.idle.wait(0.05)  # queued jobs still run unless cancelled, as in a ThreadPoolExecutor
            self.idle.wait()


class ModelWorker:
    """``ModelWorker(backend, max_batch)``: a thread that serves every joined ``Lane`` (see the module docstring).

    The thread runs while at least one lane is joined, so a private worker (one session) costs the same thread
    a one-worker thread pool did."""

    def __init__(self, backend: Backend, config: WorkerConfig = WorkerConfig(), name: str = "facecast-model") -> None:
        if config.max_batch is not None and config.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1 (or None for no limit), got {config.max_batch}")
        self.backend, self.config, self.name = backend, config, name
        self._grid_start: float | None = None
        self.cond = threading.Condition()
        self.lanes: list[Lane] = []
        self.counters = WorkerCounters()
        self._thread: threading.Thread | None = None
        self._rotation = 0
        self._lanes_made = 0

    def join(self) -> Lane:
        """A new session's lane; starts the thread if it is not running."""
        with self.cond:
            self._lanes_made += 1
            lane = Lane(self, f"{self.name}-{self._lanes_made}")
            self.lanes.append(lane)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
        return lane

    def align_start(self, t: float, fps: int) -> float:
        """The first tick time at or after ``t`` on this worker's frame grid (set by the first engine to ask), so
        the engines sharing the worker tick together and their frames are due in the same round."""
        with self.cond:
            if self._grid_start is None:
                self._grid_start = t
            ticks = math.ceil((t - self._grid_start) * fps - 1e-9)
            return self._grid_start + max(0, ticks) / fps

    @property
    def sessions(self) -> int:
        """Lanes joined and not shut down."""
        with self.cond:
            return sum(not lane.closed for lane in self.lanes)

    # ------------------------------------------------------------------------------------------ the thread

    def _take_round(self) -> list[tuple[Lane, _Job]] | None:
        """Under the lock: the head job of every lane that has one, rotated; None when no lane is left."""
        while True:
            self.lanes = [lane for lane in self.lanes if lane.jobs or not lane.closed]
            if not self.lanes:
                self._thread = None
                return None
            ready = [lane for lane in self.lanes if lane.jobs]
            if ready:
                break
            self.cond.wait()
        self._gather()
        ready = [lane for lane in self.lanes if lane.jobs]
        start = self._rotation % len(ready)
        self._rotation += 1
        taken = []
        for lane in ready[start:] + ready[:start]:
            job = lane.jobs.popleft()
            lane.idle.clear()
            lane.last_round = self.counters.rounds
            taken.append((lane, job))
        return taken

    def _gather(self) -> None:
        """Under the lock: wait up to ``gather_ms`` for the lanes served last round that have no job yet."""
        deadline = time.monotonic() + self.config.gather_ms / 1e3
        while True:
            expected = [
                lane
                for lane in self.lanes
                if not lane.jobs and not lane.closed and lane.last_round == self.counters.rounds - 1
            ]
            left = deadline - time.monotonic()
            if not expected or left <= 0:
                return
            self.cond.wait(left)

    def _serve(self) -> None:
        while True:
            with self.cond:
                taken = self._take_round()
            if taken is None:
                return
            self.counters.rounds += 1
            self.counters.largest_round = max(self.counters.largest_round, len(taken))
            try:
                self._run_round([job for _, job in taken])
            finally:
                for lane, _ in taken:
                    lane.idle.set()

    def _run_round(self, jobs: list[_Job]) -> None:
        steps: list[tuple[_Job, Generator[Any, Any, Any]]] = []
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue
            self.counters.jobs += 1
            try:
                result = job.fn(*job.args, **job.kwargs)
            except BaseException as e:  # noqa: BLE001 - the job's own error goes to its caller
                job.future.set_exception(e)
                continue
            if isinstance(result, Generator):
                steps.append((job, result))
            else:
                job.future.set_result(result)
        if not steps:
            return
        self.counters.batched_jobs += len(steps)
        outcomes = run_calls(self.backend, [gen for _, gen in steps], self.config.max_batch)
        for (job, _), outcome in zip(steps, outcomes, strict=True):
            if outcome.error is not None:
                job.future.set_exception(outcome.error)
            else:
                job.future.set_result(outcome.value)

"""One model thread for many live sessions: each round it takes the next job of every session and batches them.

    session A lane ─┐                      ┌─ A2L      one call for every session with new audio
    session B lane ─┼─▶ ModelWorker round ─┼─ UNet     one call per DDIM step for every frame due
    session C lane ─┘   (head job of each) └─ decode   one call for every frame due

A ``Lane`` is an ``Executor``: the live engine submits its model work to its lane exactly as it would to a
one-thread pool, and a lane runs its own jobs in submission order. A job that returns a generator of model
requests (``engine.batching``: ``LipSyncSession.push_audio_steps`` and friends) is driven together with the other
lanes' jobs of the same round, so the frames due from K sessions go through A2L, UNet and decode as one batch per
call; any other job (speaker embedding, avatar swap) simply runs.

Policy when the worker cannot serve everyone in time (explicit, and the same for one session as for K):
- every round serves the head job of *every* lane that has one, so no session waits more than one round for
  another; rounds larger than ``max_batch`` are cut into batches, and the lanes served first rotate each round;
- each session's ``RenderPolicy`` skips the frames it predicts late and the display repeats its last picture; it
  predicts with this worker's cost of one frame (``frame_cost_s``, ``RenderPolicy.for_worker``), the same for every
  session, so it drops only what would be late even alone and leaves the sharing to the round's choice below (a
  session's own render time on a shared worker is a whole round's: every frame looked late, only probes were made);
- a round renders only the frames that fit: with the measured cost of one frame in a round (``frame_cost_s``),
  frames are taken longest-unserved session first while the round still ends before every taken frame's
  deadline (``FrameJob.deadline``); the others are answered "not rendered" (``engine.batching.NOT_RENDERED``) and
  skipped like a frame predicted late. At least one frame is always rendered, so one session alone is served
  exactly as its RenderPolicy decides, and under overload K sessions share what the worker can make in turns;
- joining or leaving only adds or removes a lane between rounds: nobody else's jobs wait for it.

Gathering: engines on one worker tick on one frame grid (``align_start``) and report each tick to their lane
(``Lane.ticked``, engine clock) after submitting that tick's work; a round waits until every lane that ticked
the previous grid tick has reported the newest one, so the frames that are due together run together. Nothing
waits on wall time: a lane that stopped ticking (its engine stopped, or stalled) is not waited for once it is
more than one tick behind.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from facecast.engine.backend import Backend
from facecast.engine.batching import FrameJob, run_calls
from facecast.engine.system import physical_cores

from .clock import Clock, MonotonicClock

log = logging.getLogger("facecast.model_worker")


@dataclass(frozen=True)
class WorkerConfig:
    max_batch: int | None = None  # most frames in one model call; None: every frame due (TensorRT's profile caps it)
    # Weight of the newest round in the moving average of one frame's cost (its share of a round's time): a few
    # rounds, so that it follows a change in load but not one slow round.
    cost_smoothing: float = 0.2
    # Threads on which a round's sessions do their own work between model calls (Whisper's log-mel, the warp and
    # the composite) side by side (``engine.batching.run_calls``' pool); 1: in turn on the model thread; None: one
    # per physical core. 1 by default: on this 2-core CPU, two sessions side by side made 24.4-24.5 new pictures/s
    # each against 24.6 in turn when quiet (23.5 against 24.4 on an unseen portrait), and 24.6-24.9 against
    # 23.1-23.3 with another job on one core (docs/benchmarks.md): the handing over costs what the second core gives
    # back unless the machine is busy.
    session_threads: int | None = 1


@dataclass
class WorkerCounters:
    rounds: int = 0  # times the worker took the head jobs of the waiting lanes
    jobs: int = 0
    batched_jobs: int = 0  # jobs that were generators of model requests (driven in a shared round)
    largest_round: int = 0  # most lanes served in one round
    frames_rendered: int = 0
    frames_not_rendered: int = 0  # frames left out of a round because they would have made it late


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
        self.tick_s: float | None = None  # engine clock time of the newest tick its engine reported
        self.frames_rendered_at = -1  # the worker's frame count when this lane last had a frame rendered

    def ticked(self, t: float) -> None:
        """The engine has submitted all its work for the tick due at ``t`` (engine clock, on the worker's grid)."""
        with self.worker.cond:
            self.tick_s = t
            if self.worker.gathering:
                self.worker.cond.notify()

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
    """A thread that serves every joined ``Lane`` (see the module docstring).

    The thread runs while at least one lane is joined, so a private worker (one session) costs the same thread
    a one-worker thread pool did."""

    def __init__(
        self,
        backend: Backend,
        config: WorkerConfig = WorkerConfig(),
        name: str = "facecast-model",
        clock: Clock | None = None,
    ) -> None:
        """``clock``: the engines' clock (deadlines and tick times are on it); all engines on a worker share one."""
        if config.max_batch is not None and config.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1 (or None for no limit), got {config.max_batch}")
        self.backend, self.config, self.name = backend, config, name
        self.clock = clock or MonotonicClock()
        self._grid_start: float | None = None
        self._frame_s: float | None = None
        self.gathering = False  # the thread waits for lanes to report a tick (only then do ticks notify it)
        self.frame_cost_s = 0.0  # moving average of one rendered frame's share of a round (0: not measured yet)
        self._first_choice_s: float | None = None  # clock time of this round's first choice of frames
        self.cond = threading.Condition()
        self.lanes: list[Lane] = []
        self.counters = WorkerCounters()
        self._thread: threading.Thread | None = None
        self._rotation = 0
        self._lanes_made = 0
        threads = physical_cores() if config.session_threads is None else config.session_threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"{name}-sessions") if threads > 1 else None

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
                self._grid_start, self._frame_s = t, 1 / fps
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
            if any(lane.jobs for lane in self.lanes):
                self._gather()
                ready = [lane for lane in self.lanes if lane.jobs]  # a lane may have left while gathering
                if ready:
                    break
            else:
                self.cond.wait()
        start = self._rotation % len(ready)
        self._rotation += 1
        taken = []
        for lane in ready[start:] + ready[:start]:
            job = lane.jobs.popleft()
            lane.idle.clear()
            taken.append((lane, job))
        return taken

    def _gather(self) -> None:
        """Under the lock: wait until every lane that ticked one grid tick before the newest reported tick has
        reported the newest too (engines on one event loop do so within the same loop turn)."""
        if self._frame_s is None:
            return
        half = self._frame_s / 2
        self.gathering = True
        try:
            while True:
                ticks = [lane.tick_s for lane in self.lanes if not lane.closed and lane.tick_s is not None]
                newest = max(ticks, default=None)
                if newest is None or not any(newest - 3 * half < t < newest - half for t in ticks):
                    return
                self.cond.wait()
        finally:
            self.gathering = False

    def _serve(self) -> None:
        while self._serve_round():
            pass

    def _serve_round(self) -> bool:
        """One round; False when no lane is left. Its jobs are locals here, so nothing of a round is held while
        the thread waits for the next one (an ended session's engine must be freed)."""
        with self.cond:
            taken = self._take_round()
        if taken is None:
            return False
        self.counters.rounds += 1
        self.counters.largest_round = max(self.counters.largest_round, len(taken))
        try:
            self._run_round(taken)
        finally:
            for lane, _ in taken:
                lane.idle.set()
        return True

    def _choose(self, lanes: list[Lane], jobs: list[FrameJob]) -> list[int]:
        """Which of the frames waiting in this round to render (indices into ``jobs``): the longest-unserved
        sessions first, as many as still end before every taken frame's deadline; always at least one."""
        order = sorted(range(len(jobs)), key=lambda j: lanes[j].frames_rendered_at)
        now, taken = self.clock.now(), []
        if self._first_choice_s is None:
            self._first_choice_s = now
        deadline = math.inf
        for j in order:
            d = min(deadline, jobs[j].deadline if jobs[j].deadline is not None else math.inf)
            if taken and jobs[j].deadline is not None and now + (len(taken) + 1) * self.frame_cost_s > d:
                continue  # would make this frame or an earlier one late: not rendered this round
            taken.append(j)
            deadline = d
        for j in taken:
            lanes[j].frames_rendered_at = self.counters.frames_rendered
            self.counters.frames_rendered += 1
        self.counters.frames_not_rendered += len(jobs) - len(taken)
        return sorted(taken)

    def _run_round(self, taken: list[tuple[Lane, _Job]]) -> None:
        steps: list[tuple[Lane, _Job, Generator[Any, Any, Any]]] = []
        for lane, job in taken:
            if not job.future.set_running_or_notify_cancel():
                continue
            self.counters.jobs += 1
            try:
                result = job.fn(*job.args, **job.kwargs)
            except BaseException as e:  # noqa: BLE001 - the job's own error goes to its caller
                job.future.set_exception(e)
                continue
            if isinstance(result, Generator):
                steps.append((lane, job, result))
            else:
                job.future.set_result(result)
        if not steps:
            return
        self.counters.batched_jobs += len(steps)
        lanes = [lane for lane, _, _ in steps]
        rendered = self.counters.frames_rendered
        self._first_choice_s = None
        outcomes = run_calls(
            self.backend,
            [gen for _, _, gen in steps],
            self.config.max_batch,
            choose=lambda ids, jobs: [ids[j] for j in self._choose([lanes[i] for i in ids], jobs)],
            pool=self._pool,
        )
        frames = self.counters.frames_rendered - rendered
        if frames and self._first_choice_s is not None:
            # from the first choice to the round's end: what the chosen frames cost (A2L and the sessions' own
            # preparation, done before any choice, are already spent when the next choice is made)
            cost, a = (self.clock.now() - self._first_choice_s) / frames, self.config.cost_smoothing
            self.frame_cost_s = cost if not self.frame_cost_s else self.frame_cost_s + a * (cost - self.frame_cost_s)
        for (_, job, _), outcome in zip(steps, outcomes, strict=True):
            if outcome.error is not None:
                job.future.set_exception(outcome.error)
            else:
                job.future.set_result(outcome.value)

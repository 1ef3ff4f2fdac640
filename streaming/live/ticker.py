"""The live engine's output clock: tick k is due at ``start + k / fps``. It takes input block k from the mixer, lets
the speech gate decide whether the model hears it, and sends output frame n = k - delay_frames to the outputs.

If the event loop was stalled for more than ``max_burst_frames`` (suspend, debugger), the ticks missed are jumped
over: the latency stays, no burst of frames goes out. A ticker with ``LiveConfig.wait_for_model`` instead waits for
the model before each tick, and falls behind real time rather than skip a picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import numpy as np

from facecast.engine.avatar.prepare import Avatar

from ..config import LiveConfig
from .clock import Clock, FrameClock
from .compositor import Compositor
from .mixer import Mixer
from .model_jobs import EngineCounters
from .outputs import Outputs
from .pace import Pace
from .render_policy import RenderPolicy
from .session_runner import SessionRunner
from .speech_gate import SpeechGate

log = logging.getLogger("facecast.live")


class Ticker:
    """Event loop side. ``reset`` starts a fresh run's state (the gate, the compositor, the pace); ``start`` ticks;
    a stopped ticker keeps its state for the engine's stats."""

    def __init__(
        self,
        config: LiveConfig,
        clock: Clock,
        samples_per_frame: int,
        fps: int,
        delay_frames: int,
        mixer: Mixer,
        runner: SessionRunner,
        outputs: Outputs,
        counters: EngineCounters,
        avatar: Avatar,
    ) -> None:
        self.config, self.clock, self.delay_frames = config, clock, delay_frames
        self.spf, self.fps = samples_per_frame, fps
        self.mixer, self.runner, self.outputs, self.counters = mixer, runner, outputs, counters
        self.avatar = avatar  # whose frames go out (LiveEngine.set_avatar changes it)
        self.frames: FrameClock | None = None  # the grid of the current run, set by start()
        self.policy: RenderPolicy | None = None  # what decides the skips, for the "falling behind" warning
        self.task: asyncio.Task[None] | None = None
        self.reset()

    def reset(self) -> None:
        c = self.config
        self.gate = SpeechGate(c.speech_rms, c.hangover_frames, c.fade_frames)
        self.compositor = Compositor(c, self.spf, self.delay_frames, self.fps)
        self.pace = Pace(self.fps, c.log_every_s, c.processing_frames)
        self.k = -1  # the last tick

    def start(self, frames: FrameClock, policy: RenderPolicy) -> None:
        self.frames, self.policy = frames, policy
        self.task = asyncio.create_task(self._run(), name="facecast-ticker")
        self.task.add_done_callback(self._ended)

    async def stop(self) -> None:
        if self.task is None:
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.task = None

    async def _run(self) -> None:
        assert self.frames is not None
        k = 0
        while True:
            await self.clock.sleep_until(self.frames.time_of(k))
            if self.config.wait_for_model:
                # The frame this tick sends was fed by the ticks before it: let the model finish them, however long
                # that takes. Ticks that fell due meanwhile follow back to back and none is jumped (that would drop
                # their sound), so the stream catches up with real time whenever the model does.
                await self.runner.jobs.caught_up.wait()
                self.tick(k)
                k += 1
                continue
            behind = self.frames.frame_at(self.clock.now()) - k
            if behind > self.config.max_burst_frames:
                # The loop was stalled (suspend, debugger): jumping keeps the latency, bursting would not.
                log.warning("output clock stalled for %d frames; skipping ahead", behind)
                self.counters.jumped += behind
                k += behind
            self.tick(k)
            k += 1

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug: say so loudly, the stream has stopped
            log.error("the output clock stopped", exc_info=task.exception())

    def _catch_up(self, k: int) -> bool:
        """Whether the model is so far behind that the blocks waiting for it are dropped and the utterance starts
        afresh at block k (``LiveConfig.catch_up_frames``). The dropped blocks' frames go out as the last picture
        (the display repeats it), as skipped frames do."""
        limit, jobs = self.config.catch_up_backlog, self.runner.jobs
        if limit is None or jobs.behind < limit:
            return False
        jobs.new_epoch()
        self.counters.catch_ups += 1
        self.runner.pair_speech(self.config.pair_speech_frames)  # 0: no block
        if self.counters.catch_ups == 1 or self.counters.catch_ups % 50 == 0:
            log.warning(
                "the model is %d blocks behind: dropped them and restarted the speech at block %d (%d times so far; "
                "the CPU cannot keep up: fewer sessions, `--speech-every 2`, `--model logmel`, or a faster machine)",
                limit,
                k,
                self.counters.catch_ups,
            )
        return True

    def tick(self, k: int) -> None:
        assert self.frames is not None
        self.k = k
        block = self.mixer.take(self.spf)
        take = self.mixer.last_take
        for o in self.outputs.observers:
            o.audio_taken(k, block)
        self.compositor.add_block(k, block, take)
        rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))
        step = self.gate.step(k, rms)
        if step.feed:
            begin = k if step.begin or self._catch_up(k) else None
            self.runner.submit_block(block, begin, step.end)
        elif self.runner.speaker.talker_gone(k, self.gate.last_end):
            self.runner.reset_speaker()  # a long silence: whoever speaks next may be someone else
        lane = self.runner.jobs.lane
        if lane is not None and not self.config.wait_for_model:
            # this tick's work is in: the worker may gather it. Not when this ticker waits for the worker: the
            # worker would be waiting for a tick that waits for it.
            lane.ticked(self.frames.time_of(k))
        n = k - self.delay_frames
        if n >= 0:
            self.outputs.send(self.compositor.compose(n, self.avatar, self.gate, self.frames, self.clock, self.outputs))
        self.counters.ticks += 1
        self.pace.ticked(self.clock.now())
        self.pace.log_if_behind(k, self.counters.skipped, self.compositor.display.counters.dropped, self.policy)

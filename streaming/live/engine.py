"""The live engine: audio sources in, one picture and 40 ms of sound out per tick of a 25 fps clock.

    sources ──write──▶ Mixer (jitter buffer per source)
                          │ one 640-sample block per tick (event loop)
                          ▼
                     SpeechGate ──feed──▶ model worker thread (LipSyncSession.push_audio / finish)
                          │                         │ frames (or "skipped")
                          ▼                         ▼
     AudioOut (delay line, 48 kHz) ──▶ OutputFrame n = k - delay ◀── Display (newest frame within max lateness)
                                            │
                                            ▼ subscribers (WebRTC tracks, tests)

All model work (push_audio, finish, the speaker embedding, avatar preparation) runs in one worker thread, in
submission order, so the event loop never blocks on it and the session needs no locks. That thread is a
``ModelWorker``: the engine's own by default, or one shared by many engines (``worker=``), which then batches the
frames due from every session into one model call (model_worker.py).

Whoever measures the engine (``facecast bench stream``, tests) watches it through ``observe(EngineObserver)``: the
audio each tick takes, the frames the model makes, every frame out, and the frames dropped.

``LiveEngine`` is the public face and the wiring; each part has one job: ``ticker.py`` (the 25 fps clock and what
one tick does), ``compositor.py`` (output frame n: picture and sound), ``outputs.py`` (``OutputFrame``, the
observer events, the fan-out to subscribers), ``model_jobs.py`` (jobs on the model worker, their results, the
backlog), ``session_runner.py`` (the session on the model thread), ``speaker_tracker.py`` (whose voice) and
``pace.py`` (rates, the "falling behind" warning).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any, TypeVar

import numpy as np

from facecast.engine.avatar.prepare import Avatar
from facecast.engine.backend import Backend
from facecast.engine.config import InferenceConfig
from facecast.engine.pipeline import SKIPPED, Frame
from facecast.engine.speaker import speaker_embedding
from facecast.engine.system import limit_blas_threads

from ..config import LiveConfig
from .clock import Clock, FrameClock, MonotonicClock
from .display import Display
from .mixer import Mixer, SourceBuffer
from .model_jobs import EngineCounters, ModelJobs
from .model_worker import ModelWorker
from .outputs import EngineObserver, OutputFrame, Outputs
from .pace import rate
from .render_policy import RenderEveryFrame, RenderPolicy
from .session_runner import SessionRunner
from .speaker_tracker import SpeakerTracker
from .speech_gate import SpeechGate
from .ticker import Ticker

__all__ = ["EngineCounters", "EngineObserver", "LiveEngine", "OutputFrame"]  # OutputFrame, EngineObserver: here too

T = TypeVar("T")


class LiveEngine:
    def __init__(
        self,
        backend: Backend,
        avatar: Avatar,
        config: LiveConfig | None = None,
        clock: Clock | None = None,
        speaker_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        worker: ModelWorker | None = None,
    ) -> None:
        """``speaker_fn``: 16 kHz speech -> (256,) embedding; default ``speaker_embedding`` on the backend's voice
        network (so an export's backend needs no torch)."""
        config = config or LiveConfig()
        if config.blas_threads is not None:
            limit_blas_threads(config.blas_threads)
        if worker is not None and clock is not None and worker.clock is not clock:
            raise ValueError("a shared ModelWorker and its engines need one clock: build the worker with clock=")
        self.clock = clock or (worker.clock if worker is not None else MonotonicClock())
        # shared with other engines, or this engine's own; deadlines and ticks are on this engine's clock
        self.worker = worker or ModelWorker(backend, clock=self.clock)
        cfg = config.model_config(backend.cfg)
        self.backend, self.cfg, self.config = backend, cfg, config
        self.speaker_fn = speaker_fn or partial(speaker_embedding, encoder=backend.speaker_partials)
        self.inference = InferenceConfig(steps=config.steps, seed=config.seed)
        self.spf = cfg.audio.samples_per_frame
        self.delay_frames = cfg.latency_frames + config.processing_frames
        self.mixer = Mixer(config, cfg.audio.sample_rate, self.spf, self.clock.now)
        self.counters = EngineCounters()
        self.policy: RenderPolicy | None = None  # set by start(); kept after stop() for the stats
        self.outputs = Outputs(config.output_queue_frames)
        self.jobs = ModelJobs(self.counters, self._frames_back)
        self.speaker = SpeakerTracker(config, cfg.audio.sample_rate, cfg.audio.fps)
        parts = (self.jobs, self.speaker, self.speaker_fn, self.outputs)
        self.runner = SessionRunner(backend, cfg, self.inference, avatar, *parts)
        timing = (config, self.clock, self.spf, cfg.audio.fps, self.delay_frames)
        self.ticker = Ticker(*timing, self.mixer, self.runner, self.outputs, self.counters, avatar)

    # ------------------------------------------------------------------------------------------ its parts' state

    @property
    def avatar(self) -> Avatar:
        return self.ticker.avatar

    @property
    def frames(self) -> FrameClock | None:
        return self.ticker.frames

    @property
    def gate(self) -> SpeechGate:
        return self.ticker.gate

    @property
    def display(self) -> Display:
        return self.ticker.compositor.display

    @property
    def running(self) -> bool:
        return self.ticker.task is not None

    @property
    def latency_ms(self) -> float:
        """Audio in to picture and sound out, by construction: lookahead + processing + the jitter buffer (its
        least: a block also waits for the next tick, up to one more)."""
        return self.delay_frames * 1000 / self.cfg.audio.fps + self.config.jitter_ms

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.running:
            return
        self.ticker.reset()
        self.jobs.reset()
        self.speaker.forget()
        self.jobs.lane = self.worker.join()
        # On the worker's frame grid, so that engines sharing it tick (and need frames) together.
        fps, c = self.cfg.audio.fps, self.config
        frames = FrameClock(self.worker.align_start(self.clock.now() + c.start_slack_ms / 1000, fps), fps)
        policy = RenderEveryFrame if c.wait_for_model else RenderPolicy
        self.policy = policy.for_worker(
            self.worker, frames, self.clock, self.delay_frames, c.max_late_frames, c.probe_every_frames
        )
        self.runner.session.render_policy = self.policy
        self.ticker.start(frames, self.policy)

    async def stop(self) -> None:
        """Stop ticking, end every subscriber's stream and let the worker thread finish its current job."""
        if not self.running:
            return
        await self.ticker.stop()
        self.outputs.end()
        lane, self.jobs.lane = self.jobs.lane, None
        if lane is not None:
            lane.shutdown(wait=False, cancel_futures=True)
            await asyncio.get_running_loop().run_in_executor(None, lane.shutdown)
        self.runner.session.render_policy = None
        self.runner.session.reset()

    async def warm_up(self) -> None:
        """Run every model once: torch's first calls and loading Resemblyzer take seconds, better before viewers. The
        speaker network warms up on a thread of its own meanwhile (onnxruntime and torch let go of the GIL while they
        compute), so that a fresh process on two cores is ready sooner."""

        def models() -> None:
            session = self.runner.new_session(self.avatar, None)
            session.push_audio(np.zeros(self.spf * (self.cfg.latency_frames + 1), np.float32))

        def speaker() -> None:
            noise = np.random.default_rng(0).standard_normal(self.cfg.audio.sample_rate).astype(np.float32)
            self.speaker_fn(0.1 * noise)

        # submitted now: ``call_in_worker`` runs ``models`` inline when the engine is stopped
        speaker_done = None
        if self.config.speaker_seconds > 0:
            speaker_done = asyncio.get_running_loop().run_in_executor(None, speaker)
        await self.call_in_worker(models)
        if speaker_done is not None:
            await speaker_done

    async def call_in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the model thread after everything submitted before it (or inline when stopped)."""
        return await self.jobs.call(fn, *args)

    async def flush(self) -> None:
        """Wait until the model thread has finished every job submitted so far and its frames are in."""
        await self.call_in_worker(lambda: None)
        await asyncio.sleep(0)  # the previous jobs' done-callbacks were queued before this wake-up; let them run

    async def set_avatar(self, avatar: Avatar) -> None:
        """Switch avatars: from the next tick on, the new one's frames go out; an utterance restarts on it."""
        session = self.runner.new_session(avatar, self.runner.session.render_policy)
        self.jobs.new_epoch()
        self.gate.cut(self.ticker.k + 1)
        self.ticker.compositor.forget_pictures()
        self.ticker.avatar = avatar
        await self.runner.switch_to(session)

    def interrupt(self) -> list[Hashable]:
        """Barge-in (a TTS cut off mid-sentence): every queued and in-flight frame is dropped and the very next
        output frame is the avatar's idle frame with silence.

        Dropped: the sources' waiting audio, the blocks already taken but not sent (their sound and pictures),
        the model jobs not run yet, the frames the model returns for them, and the frames waiting in subscriber
        queues. The next speech starts a fresh utterance. Returns the end marks (``SourceBuffer.mark_end``) that
        will now never be reached, so that whoever waits for them can report the segment as interrupted.
        """
        first_unsent = self.ticker.k + 1 - self.delay_frames  # the next output frame
        dropped = self.mixer.clear()
        dropped += self.ticker.compositor.cut(first_unsent)
        self.gate.interrupt(first_unsent)
        self.jobs.new_epoch()  # frames of the dropped blocks that still come back from the model are ignored
        self.outputs.drop_queued()
        self.counters.interrupts += 1
        return dropped

    def reset_speaker(self) -> None:
        """Forget the talker's voice: the next ``speaker_seconds`` of speech set a new embedding."""
        self.runner.reset_speaker()

    # ------------------------------------------------------------------------------------------ audio in, frames out

    def open_source(self, name: str, live: bool, max_s: float | None = None) -> SourceBuffer:
        return self.mixer.open(name, live, max_s)

    def close_source(self, buf: SourceBuffer) -> None:
        self.mixer.close(buf)

    def subscribe(self) -> asyncio.Queue[OutputFrame | None]:
        """A queue of every OutputFrame from now on; None marks the end (engine stopped)."""
        return self.outputs.subscribe()

    def unsubscribe(self, q: asyncio.Queue[OutputFrame | None]) -> None:
        self.outputs.unsubscribe(q)

    def observe(self, observer: EngineObserver) -> None:
        """Call ``observer``'s callbacks from now on (see EngineObserver)."""
        self.outputs.observe(observer)

    def unobserve(self, observer: EngineObserver) -> None:
        self.outputs.unobserve(observer)

    def _frames_back(self, frames: list[Frame]) -> None:
        """Event loop: the frames a job of the current epoch made; rendered ones wait in the display."""
        for f in frames:
            if SKIPPED in f.timings_ms:
                self.counters.skipped += 1
            else:
                self.counters.rendered += 1
                self.display.add(f)

    def stats(self) -> dict[str, Any]:
        policy, d, gate = self.policy, self.display.counters, self.gate
        return {
            "running": self.running,
            "fps": round(self.ticker.pace.tick_rate(), 2),
            "generated_fps": round(rate(self.ticker.compositor.shown_times), 2) if gate.active else 0.0,
            "latency_ms": round(self.latency_ms, 1),
            "delay_frames": self.delay_frames,
            "render_ms": round(1000 * policy.render_s, 1) if policy else None,
            "speaking": gate.active,
            "speaker_set": bool(self.speaker.embedding.any()),
            "frames": self.counters.ticks,
            "rendered": self.counters.rendered,
            "skipped": self.counters.skipped,
            "dropped": d.dropped,
            "late": d.late,
            "repeated": d.repeated,
            "shown": d.shown,
            "jumped": self.counters.jumped,
            "model_errors": self.counters.model_errors,
            "backlog": self.jobs.backlog,
            "max_backlog": self.counters.max_backlog,
            "catch_ups": self.counters.catch_ups,
            "paired_blocks": self.counters.paired_blocks,
            "steps": self.inference.steps,
            "avatar": self.avatar.source,
            **self.mixer.stats(),
        }

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import cv2
import numpy as np

from facecast.engine.avatar import Avatar
from facecast.engine.backend import Backend
from facecast.engine.batching import Steps
from facecast.engine.config import InferenceConfig, ModelConfig
from facecast.engine.pipeline import SKIPPED, Frame, LipSyncSession
from facecast.engine.speaker import SPEAKER_DIM, speaker_embedding

from .audio_out import AudioOut
from .clock import Clock, FrameClock, MonotonicClock
from .config import LiveConfig
from .display import Display
from .mixer import Mixer, SourceBuffer, Take
from .model_worker import Lane, ModelWorker
from .render_policy import RenderEveryFrame, RenderPolicy
from .speech_gate import SpeechGate

log = logging.getLogger("facecast.live")
T = TypeVar("T")


@dataclass
class OutputFrame:
    index: int  # n on the 25 fps output clock; sent at tick n + delay_frames
    image: np.ndarray  # uint8 (H, W, 3) RGB: what viewers see
    audio_48k: np.ndarray  # int16 (1920,): input block n, i.e. the sound of this same 40 ms
    video_pts: int  # 90 kHz
    audio_pts: int  # samples at 48 kHz
    generated: Frame | None = None  # the model's frame inside the picture (None: the avatar's own frame)
    alpha: float = 0.0  # how much of the generated picture is blended over the avatar frame
    fresh: bool = False  # ``generated`` is new this tick (False: the previous picture again, nothing was ready)
    audible: bool = False  # a source played real audio into this 40 ms (not only jitter-buffer silence)
    marks: tuple[Hashable, ...] = ()  # SourceBuffer.mark_end labels whose segment's last sample is in this frame


@dataclass
class EngineCounters:
    ticks: int = 0
    rendered: int = 0  # frames the model made
    skipped: int = 0  # frames not rendered because they would have been too late (drop policy)
    jumped: int = 0  # ticks left out after the event loop was stalled for longer than max_burst_frames
    model_errors: int = 0
    max_backlog: int = 0  # most model jobs ever waiting at once
    interrupts: int = 0  # barge-ins (LiveEngine.interrupt)


class EngineObserver:
    """Events of a LiveEngine, for ``engine.observe(observer)``: override the ones you need (each does nothing here).

    Every callback runs on the event loop except ``frames_made``, which runs on the model thread as soon as the
    frames exist. Callbacks must be quick and must not raise: they run inside the engine's clock.
    """

    def audio_taken(self, k: int, block_16k: np.ndarray) -> None:
        """Tick k took this 40 ms of audio (float32, 16 kHz) from the sources: the sound of output frame k."""

    def frames_made(self, frames: list[Frame]) -> None:
        """Model thread: the frames one block of audio completed (a skipped one has ``timings_ms[SKIPPED]``)."""

    def frame_out(self, out: OutputFrame) -> None:
        """Output frame ``out.index`` leaves the engine for every subscriber."""

    def frames_dropped(self, n: int, count: int) -> None:
        """While output frame n was picked, ``count`` rendered frames were thrown away: ready too late to show."""


class LiveEngine:
    def __init__(
        self,
        backend: Backend,
        cfg: ModelConfig,
        avatar: Avatar,
        config: LiveConfig | None = None,
        clock: Clock | None = None,
        speaker_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        worker: ModelWorker | None = None,
    ) -> None:
        """``speaker_fn``: 16 kHz speech -> (256,) embedding; default ``speaker_embedding`` on the backend's voice
        network (so an export's backend needs no torch)."""
        config = config or LiveConfig()
        if worker is not None and clock is not None and worker.clock is not clock:
            raise ValueError("a shared ModelWorker and its engines need one clock: build the worker with clock=")
        self.clock = clock or (worker.clock if worker is not None else MonotonicClock())
        # shared with other engines, or this engine's own; deadlines and ticks are on this engine's clock
        self.worker = worker or ModelWorker(backend, clock=self.clock)
        self.backend, self.cfg, self.config = backend, cfg, config
        self.speaker_fn = speaker_fn or partial(speaker_embedding, encoder=backend.speaker_partials)
        self.inference = InferenceConfig(steps=config.steps, seed=config.seed)
        self.avatar = avatar
        self.spf = cfg.audio.samples_per_frame
        self.delay_frames = cfg.latency_frames + config.processing_frames
        self.mixer = Mixer(config, cfg.audio.sample_rate)
        self.counters = EngineCounters()
        self.frames: FrameClock | None = None
        self.policy: RenderPolicy | None = None  # set by start(); kept after stop() for the stats
        self._speaker = np.zeros(SPEAKER_DIM, np.float32)  # written by the model thread only
        self._session = self._new_session(avatar, None)
        self._subscribers: list[asyncio.Queue[OutputFrame | None]] = []
        self._observers: list[EngineObserver] = []
        self._executor: Lane | None = None  # this engine's lane on the model worker while running
        self._ticker: asyncio.Task[None] | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        c = self.config
        self.gate = SpeechGate(c.speech_rms, c.hangover_frames, c.fade_frames)
        self.display = Display(c.max_late_frames)
        self.audio_out = AudioOut(self.spf, keep_frames=self.delay_frames + 3)
        self._epoch = 0  # bumped when the avatar changes or on interrupt(): older jobs and frames are then ignored
        self._backlog = 0  # model jobs submitted and not finished
        self._caught_up = asyncio.Event()  # set while the backlog is 0 (what a ticker with wait_for_model waits for)
        self._caught_up.set()
        self._last_picture: Frame | None = None
        self._takes: dict[int, Take] = {}  # input block k -> what the mixer said about it, until frame k goes out
        self._speech: list[np.ndarray] = []  # speech collected for the speaker embedding
        self._speech_samples = 0
        self._speaker_taken = False  # loop side: an embedding was (or is being) computed for this talker
        self._tick_times: deque[float] = deque(maxlen=2 * self.cfg.audio.fps)
        self._shown_times: deque[float] = deque(maxlen=2 * self.cfg.audio.fps)
        self._logged = (0, 0, 0)  # (tick, skipped, dropped) at the last "falling behind" log line
        self._k = -1

    def _new_session(self, avatar: Avatar, policy: RenderPolicy | None) -> LipSyncSession:
        """A session on the engine's frame clock; ``policy`` None renders every frame (before the engine starts)."""
        return LipSyncSession(self.backend, self.cfg, avatar, self._speaker, self.inference, render_policy=policy)

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._ticker is not None

    @property
    def latency_ms(self) -> float:
        """Audio in to picture and sound out, by construction: lookahead + processing + the jitter buffer."""
        return self.delay_frames * 1000 / self.cfg.audio.fps + self.config.jitter_ms

    async def start(self) -> None:
        if self.running:
            return
        self._reset_state()
        self._executor = self.worker.join()
        # One frame of slack so that the first ticks are not already late while start() returns.
        # On the worker's frame grid, so that engines sharing it tick (and need frames) together.
        fps = self.cfg.audio.fps
        self.frames = FrameClock(self.worker.align_start(self.clock.now() + 1 / fps, fps), fps)
        policy = RenderEveryFrame if self.config.wait_for_model else RenderPolicy
        self.policy = policy.for_worker(
            self.worker,
            self.frames,
            self.clock,
            self.delay_frames,
            self.config.max_late_frames,
            self.config.probe_every_frames,
        )
        self._session.render_policy = self.policy
        self._ticker = asyncio.create_task(self._run(), name="facecast-ticker")
        self._ticker.add_done_callback(self._ticker_ended)

    async def stop(self) -> None:
        """Stop ticking, end every subscriber's stream and let the worker thread finish its current job."""
        if self._ticker is None:
            return
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        self._ticker = None
        for q in self._subscribers:
            self._offer(q, None)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        self._session.render_policy = None
        self._session.reset()

    async def warm_up(self) -> None:
        """Run every model once: torch's first calls and loading Resemblyzer take seconds, better before viewers."""

        def work() -> None:
            session = self._new_session(self.avatar, None)
            session.push_audio(np.zeros(self.spf * (self.cfg.latency_frames + 1), np.float32))
            if self.config.speaker_seconds > 0:
                noise = np.random.default_rng(0).standard_normal(self.cfg.audio.sample_rate).astype(np.float32)
                self.speaker_fn(0.1 * noise)

        await self.call_in_worker(work)

    async def call_in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the model thread after everything submitted before it (or inline when stopped)."""
        if self._executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def flush(self) -> None:
        """Wait until the model thread has finished every job submitted so far and its frames are in."""
        await self.call_in_worker(lambda: None)
        await asyncio.sleep(0)  # the previous jobs' done-callbacks were queued before this wake-up; let them run

    async def set_avatar(self, avatar: Avatar) -> None:
        """Switch avatars: from the next tick on, the new one's frames go out; an utterance restarts on it."""
        session = self._new_session(avatar, self._session.render_policy)
        self._epoch += 1
        self.gate.cut(self._k + 1)
        self.display.clear()
        self._last_picture = None
        self.avatar = avatar

        def swap() -> None:
            session.speaker = self._speaker[None].copy()
            self._session = session

        await self.call_in_worker(swap)

    def interrupt(self) -> list[Hashable]:
        """Barge-in (a TTS cut off mid-sentence): every queued and in-flight frame is dropped and the very next
        output frame is the avatar's idle frame with silence.

        Dropped: the sources' waiting audio, the blocks already taken but not sent (their sound and pictures),
        the model jobs not run yet, the frames the model returns for them, and the frames waiting in subscriber
        queues. The next speech starts a fresh utterance. Returns the end marks (``SourceBuffer.mark_end``) that
        will now never be reached, so that whoever waits for them can report the segment as interrupted.
        """
        dropped = self.mixer.clear()
        first_unsent = self._k + 1 - self.delay_frames  # the next output frame
        for k in [k for k in self._takes if k >= first_unsent]:
            dropped += self._takes.pop(k).marks
        self.audio_out.silence_from(first_unsent)
        self.gate.interrupt(first_unsent)
        self._epoch += 1  # frames of the dropped blocks that still come back from the model are ignored
        self.display.clear()
        self._last_picture = None
        for q in self._subscribers:
            kept = [f for f in self._drain(q) if f is None]  # the end-of-stream marker stays
            for f in kept:
                q.put_nowait(f)
        self.counters.interrupts += 1
        return dropped

    @staticmethod
    def _drain(q: asyncio.Queue[OutputFrame | None]) -> list[OutputFrame | None]:
        items = []
        while not q.empty():
            items.append(q.get_nowait())
        return items

    def reset_speaker(self) -> None:
        """Forget the talker's voice: the next ``speaker_seconds`` of speech set a new embedding."""
        self._speech, self._speech_samples, self._speaker_taken = [], 0, False
        zeros = np.zeros(SPEAKER_DIM, np.float32)
        if self._executor is None:
            self._set_speaker(zeros)
        else:
            self._submit(self._set_speaker, zeros)

    # ------------------------------------------------------------------------------------------ audio in

    def open_source(self, name: str, live: bool, max_s: float | None = None) -> SourceBuffer:
        return self.mixer.open(name, live, max_s)

    def close_source(self, buf: SourceBuffer) -> None:
        self.mixer.close(buf)

    # ------------------------------------------------------------------------------------------ output

    def subscribe(self) -> asyncio.Queue[OutputFrame | None]:
        """A queue of every OutputFrame from now on; None marks the end (engine stopped)."""
        q: asyncio.Queue[OutputFrame | None] = asyncio.Queue(maxsize=self.config.output_queue_frames)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[OutputFrame | None]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(q)

    def observe(self, observer: EngineObserver) -> None:
        """Call ``observer``'s callbacks from now on (see EngineObserver)."""
        self._observers.append(observer)

    def unobserve(self, observer: EngineObserver) -> None:
        with contextlib.suppress(ValueError):
            self._observers.remove(observer)

    @staticmethod
    def _offer(q: asyncio.Queue[OutputFrame | None], item: OutputFrame | None) -> None:
        if q.full():  # a reader that fell behind loses its oldest frames, never the engine's pace
            q.get_nowait()
        q.put_nowait(item)

    # ------------------------------------------------------------------------------------------ the ticker

    async def _run(self) -> None:
        assert self.frames is not None
        k = 0
        while True:
            await self.clock.sleep_until(self.frames.time_of(k))
            if self.config.wait_for_model:
                # The frame this tick sends was fed by the ticks before it: let the model finish them, however long
                # that takes. Ticks that fell due meanwhile follow back to back and none is jumped (that would drop
                # their sound), so the stream catches up with real time whenever the model does.
                await self._caught_up.wait()
                self._tick(k)
                k += 1
                continue
            behind = self.frames.frame_at(self.clock.now()) - k
            if behind > self.config.max_burst_frames:
                # The loop was stalled (suspend, debugger): jumping keeps the latency, bursting would not.
                log.warning("output clock stalled for %d frames; skipping ahead", behind)
                self.counters.jumped += behind
                k += behind
            self._tick(k)
            k += 1

    @staticmethod
    def _ticker_ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug: say so loudly, the stream has stopped
            log.error("the output clock stopped", exc_info=task.exception())

    def _tick(self, k: int) -> None:
        self._k = k
        block = self.mixer.take(self.spf)
        self._takes[k] = self.mixer.last_take
        for o in self._observers:
            o.audio_taken(k, block)
        self.audio_out.push(k, block)
        rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))
        step = self.gate.step(k, rms)
        if step.feed:
            self._submit(self._feed, self._epoch, block, k if step.begin else None, step.end)
            self._collect_speech(block)
        elif self._speaker_taken and k - (self.gate.last_end or 0) > self.config.speaker_reset_s * self.cfg.audio.fps:
            self.reset_speaker()  # a long silence: whoever speaks next may be someone else
        if self._executor is not None and not self.config.wait_for_model:
            assert self.frames is not None
            # this tick's work is in: the worker may gather it. Not when this ticker waits for the worker: the
            # worker would be waiting for a tick that waits for it.
            self._executor.ticked(self.frames.time_of(k))
        n = k - self.delay_frames
        if n >= 0:
            out = self._compose(n)
            for o in self._observers:
                o.frame_out(out)
            for q in self._subscribers:
                self._offer(q, out)
        now = self.clock.now()
        self.counters.ticks += 1
        self._tick_times.append(now)
        self._log_if_behind(k)

    def _compose(self, n: int) -> OutputFrame:
        av = self.avatar
        base = av.frames[av.index_for(n)]
        segment = self.gate.segment_of(n)
        dropped = self.display.counters.dropped
        frame = self.display.pick(n)
        take = self._takes.pop(n, Take())
        for k in [k for k in self._takes if k < n]:  # blocks whose frame was jumped over: their marks come now
            take = Take(take.audible, self._takes.pop(k).marks + take.marks)
        if self.display.counters.dropped > dropped:
            for o in self._observers:
                o.frames_dropped(n, self.display.counters.dropped - dropped)
        if frame is not None:
            self._last_picture = frame
            self._shown_times.append(self.clock.now())
        elif segment is not None:
            self.display.counters.repeated += 1
        picture, alpha = self._last_picture, self.gate.alpha(n)
        if segment is None or picture is None or picture.index < segment[0] or alpha <= 0:
            image, picture, alpha = base, None, 0.0  # idle, or nothing generated yet in this utterance
        elif alpha >= 1:
            image = picture.image
        else:
            image = cv2.addWeighted(picture.image, alpha, base, 1.0 - alpha, 0.0)
        assert self.frames is not None
        return OutputFrame(
            n,
            image,
            self.audio_out.block_48k(n),
            self.frames.video_pts(n),
            self.frames.audio_pts(n),
            picture,
            alpha,
            fresh=picture is not None and picture is frame,
            audible=take.audible,
            marks=take.marks,
        )

    # ------------------------------------------------------------------------------------------ the worker

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._executor is None:
            return
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        self._backlog += 1
        self._caught_up.clear()
        self.counters.max_backlog = max(self.counters.max_backlog, self._backlog)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._backlog -= 1
        if self._backlog <= 0:  # (below 0 only for a job of before the last restart)
            self._caught_up.set()
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
        if epoch != self._epoch:
            return
        for f in frames:
            if SKIPPED in f.timings_ms:
                self.counters.skipped += 1
            else:
                self.counters.rendered += 1
                self.display.add(f)

    def _feed(self, epoch: int, block: np.ndarray, begin: int | None, end: bool) -> Steps:
        """Model thread: one 40 ms block into the session; returns (epoch, the frames it completed). Its model
        calls are requests the worker batches with other sessions' (engine.batching)."""
        if epoch != self._epoch:
            return epoch, []  # dropped by interrupt() or an avatar change while it waited: no compute for it
        session = self._session
        if begin is not None:
            session.begin(begin)
        frames = yield from session.push_audio_steps(block)
        if end:
            frames += yield from session.finish_steps()
        for o in self._observers:
            o.frames_made(frames)
        return epoch, frames

    def _collect_speech(self, block: np.ndarray) -> None:
        need = int(self.config.speaker_seconds * self.cfg.audio.sample_rate)
        if need <= 0 or self._speech_samples >= need:
            return
        self._speech.append(block)
        self._speech_samples += block.size
        if self._speech_samples >= need:
            self._speaker_taken = True
            self._submit(self._embed_speaker, np.concatenate(self._speech))
            self._speech = []

    def _embed_speaker(self, audio_16k: np.ndarray) -> None:
        self._set_speaker(self.speaker_fn(audio_16k))

    def _set_speaker(self, embedding: np.ndarray) -> None:
        """Model thread: every frame after this uses the new embedding (the session's GRU state is kept)."""
        self._speaker = np.asarray(embedding, np.float32).reshape(-1)
        self._session.speaker = self._speaker[None].copy()

    # ------------------------------------------------------------------------------------------ stats

    def _log_if_behind(self, k: int) -> None:
        tick0, skipped0, dropped0 = self._logged
        if k - tick0 < self.config.log_every_s * self.cfg.audio.fps:
            return
        skipped, dropped = self.counters.skipped, self.display.counters.dropped
        if skipped > skipped0 or dropped > dropped0:
            policy = self.policy
            log.warning(
                "falling behind: %d frames skipped and %d dropped in the last %.0f s (render %.0f ms a frame, "
                "budget %.0f ms): use fewer --steps, a faster backend, or more --processing-frames",
                skipped - skipped0,
                dropped - dropped0,
                self.config.log_every_s,
                # what the skips were decided with (the worker's cost of a frame), not the session's own round time
                1000 * (policy.predicted_s() if policy else 0.0),
                1000 * self.config.processing_frames / self.cfg.audio.fps,
            )
        self._logged = (k, skipped, dropped)

    @staticmethod
    def _rate(times: deque[float]) -> float:
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def stats(self) -> dict[str, Any]:
        policy = self.policy
        d = self.display.counters
        return {
            "running": self.running,
            "fps": round(self._rate(self._tick_times), 2),
            "generated_fps": round(self._rate(self._shown_times), 2) if self.gate.active else 0.0,
            "latency_ms": round(self.latency_ms, 1),
            "delay_frames": self.delay_frames,
            "render_ms": round(1000 * policy.render_s, 1) if policy else None,
            "speaking": self.gate.active,
            "speaker_set": bool(self._speaker.any()),
            "frames": self.counters.ticks,
            "rendered": self.counters.rendered,
            "skipped": self.counters.skipped,
            "dropped": d.dropped,
            "late": d.late,
            "repeated": d.repeated,
            "shown": d.shown,
            "jumped": self.counters.jumped,
            "model_errors": self.counters.model_errors,
            "backlog": self._backlog,
            "max_backlog": self.counters.max_backlog,
            "steps": self.inference.steps,
            "avatar": self.avatar.source,
            **self.mixer.stats(),
        }

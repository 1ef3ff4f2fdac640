"""One measured run of the live engine: K engines on one backend, a paced talker each, every event timestamped.

What the engine cannot tell by itself is measured at its two ends:

- **audio arrival**: a talker writes the speech into each engine 40 ms at a time and remembers when each block
  arrived; after every tick takes its audio (``EngineObserver.audio_taken``) the talker's buffer tells how far into
  its audio the engine has read, so each input block k (= output frame k) gets the arrival time of its newest sample;
- **frames out**: the engine's observer events note when each OutputFrame left the engine and when the model
  thread finished each frame, and with ``webrtc`` a loopback aiortc client on 127.0.0.1 notes when each picture arrived
  (the frame index travels in the picture itself, as a stripe of black and white cells: aiortc rebases RTP
  timestamps on both ends, so pts alone cannot name a frame at the client).

Every time is on the engine's clock, so the whole run can be driven on virtual time (``--fast``, and the tests);
the model's per-stage times come from ``Frame.timings_ms`` and VP8 encode times from the bench's own timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from facecast.engine.pipeline import SKIPPED, Frame

from ..config import ServerConfig
from ..live.clock import AUDIO_OUT_HZ, VIDEO_CLOCK_HZ, FrameClock, VirtualClock
from ..live.engine import EngineObserver, LiveEngine, OutputFrame
from ..live.mixer import SourceBuffer
from ..web.webrtc import EngineVideoTrack, Peers, video_frame
from .memory import MemoryWatch

Timer = Callable[[], float]

# ------------------------------------------------------------------------------------------ what a run records


@dataclass(slots=True)
class Emitted:
    """One OutputFrame as the bench's subscriber saw it leave the engine."""

    index: int
    t: float  # engine clock
    fresh: bool  # a new generated picture this tick
    picture: int | None  # index of the generated frame shown (None: the avatar's own frame)
    speaking: bool  # inside an utterance
    video_pts: int
    audio_pts: int


@dataclass
class SessionLog:
    """Everything one engine did during a run, on its clock. Written by the event loop, except ``ready`` and
    ``timings`` (the model thread; plain dict/list updates are atomic under the GIL)."""

    start: float | None = None  # engine.start() was called
    arrivals: dict[int, float] = field(default_factory=dict)  # input block k -> arrival of its newest talker sample
    taken: dict[int, float] = field(default_factory=dict)  # input block k -> the tick that took it from the mixer
    emitted: list[Emitted] = field(default_factory=list)
    ready: dict[int, float] = field(default_factory=dict)  # generated frame -> the model thread returned it
    timings: list[dict[str, float]] = field(default_factory=list)  # Frame.timings_ms of every rendered frame
    encode_ms: list[float] = field(default_factory=list)  # VP8 encode of output frames (bench viewers)
    client: dict[int, float] = field(default_factory=dict)  # frame index -> arrival at the WebRTC client
    client_unreadable: int = 0  # pictures at the client whose stamp did not decode
    first_speech_block: int | None = None  # input block that opened the first utterance
    closed: bool = False  # the measured time is over: what finishes while everything stops is not recorded


class PacedTalker:
    """The talker: a speech signal looped into one engine, one 40 ms block per tick of its own frame clock (as
    FileSource does), remembering when each block arrived."""

    def __init__(
        self,
        engine: LiveEngine,
        audio_16k: np.ndarray,
        late_ms: float = 0.0,
        seed: int = 0,
        lead_ms: float | None = None,
    ) -> None:
        """``lead_ms``: each block arrives this long before one of the engine's ticks (None: the talker starts
        when it is run, after ``engine.start()``, whatever that makes of the phase)."""
        if not len(audio_16k):
            raise ValueError("the talker needs some audio")
        self.engine, self.audio = engine, np.asarray(audio_16k, np.float32)
        self.late_s = late_ms / 1000  # each block up to this late (a late block holds back the ones after it)
        self.lead_s = None if lead_ms is None else lead_ms / 1000
        self._rng = np.random.default_rng(seed)
        self.spf = engine.spf
        self.arrival_s: list[float] = []  # talker block i arrived at arrival_s[i]
        self.written = 0
        self._buf: SourceBuffer | None = None
        self._consumed = 0

    async def run(self) -> None:
        clock = self.engine.clock
        # Not live: never trimmed; the pacing keeps it at the jitter buffer's size, as for a file source.
        self._buf = buf = self.engine.open_source("bench talker", live=False)
        try:
            start = clock.now()
            ticks = self.engine.frames
            if self.lead_s is not None and ticks is not None:
                start = ticks.time_of(ticks.frame_at(start) + 2) - self.lead_s  # a tick from now, on its phase
            frames = FrameClock(start, self.engine.cfg.audio.fps)
            i = 0
            while True:
                late_s = self._rng.uniform(0.0, self.late_s) if self.late_s else 0.0
                await clock.sleep_until(frames.time_of(i) + late_s)
                buf.write(np.take(self.audio, np.arange(i * self.spf, (i + 1) * self.spf), mode="wrap"))
                self.arrival_s.append(clock.now())
                self.written += self.spf
                i += 1
        finally:
            self.engine.close_source(buf)

    def took(self) -> float | None:
        """After an engine tick: arrival time of the newest talker sample it consumed (None: nothing new)."""
        if self._buf is None:
            return None
        consumed = self.written - self._buf.buffered_samples
        if consumed <= self._consumed:
            return None  # the jitter buffer is (re)filling: the tick played silence
        self._consumed = consumed
        return self.arrival_s[(consumed - 1) // self.spf]


class RunObserver(EngineObserver):
    """Logs, through the engine's public events, what it has no counters for: which talker audio each tick
    consumed, when the model thread finished each frame, and every frame out."""

    def __init__(self, engine: LiveEngine, talker: PacedTalker, log: SessionLog) -> None:
        self.engine, self.talker, self.log = engine, talker, log

    def audio_taken(self, k: int, block_16k: np.ndarray) -> None:
        arrival = self.talker.took()
        if arrival is not None and not self.log.closed:
            self.log.arrivals[k] = arrival
            self.log.taken[k] = self.engine.clock.now()

    def frames_made(self, frames: list[Frame]) -> None:
        now = self.engine.clock.now()  # when these frames reach the display; one block's frames come back together
        for f in frames if not self.log.closed else ():
            if SKIPPED not in f.timings_ms:
                self.log.ready[f.index] = now
                self.log.timings.append(dict(f.timings_ms))

    def frame_out(self, out: OutputFrame) -> None:
        log = self.log
        if log.closed:
            return
        segment = self.engine.gate.segment_of(out.index)
        if segment is not None and log.first_speech_block is None:
            log.first_speech_block = segment[0]
        g = out.generated.index if out.generated is not None else None
        log.emitted.append(
            Emitted(out.index, self.engine.clock.now(), out.fresh, g, segment is not None, out.video_pts, out.audio_pts)
        )


# ------------------------------------------------------------------------------------------ viewers


class EncodingViewer:
    """What one WebRTC viewer costs the server without the network: every output frame converted and
    VP8-encoded on the default executor, as aiortc's sender does; encode times go to the session log."""

    def __init__(
        self,
        queue: asyncio.Queue[OutputFrame | None],
        log: SessionLog,
        timer: Timer,
        encoder_factory: Callable[[], Any] = Vp8Encoder,
    ) -> None:
        self.queue, self.log, self.timer = queue, log, timer
        self.encoder = encoder_factory()
        self.idle = asyncio.Event()  # nothing being encoded (the lockstep driver waits for it)
        self.idle.set()

    def _encode(self, frame: av.VideoFrame) -> float:
        t = self.timer()
        self.encoder.encode(frame)
        return 1000 * (self.timer() - t)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while (out := await self.queue.get()) is not None:
            self.idle.clear()
            frame = video_frame(out.image, out.video_pts)  # as the server's video track converts it
            ms = await loop.run_in_executor(None, self._encode, frame)
            if not self.log.closed:
                self.log.encode_ms.append(ms)
            if self.queue.empty():
                self.idle.set()
        self.idle.set()

    async def drained(self) -> None:
        while not (self.queue.empty() and self.idle.is_set()):
            if self.idle.is_set():
                await asyncio.sleep(0)  # a frame is queued: let run() pick it up
            else:
                await self.idle.wait()


STAMP_BITS = 16  # frame index modulo 65536 (43 minutes at 25 fps), then its complement as a check


def stamp_index(image: np.ndarray, n: int) -> np.ndarray:
    """A copy of ``image`` whose bottom row of cells spells n: 16 bits then their complement, white or black,
    each cell one 16-pixel macroblock at 512 px so that VP8 keeps it intact."""
    h, w = image.shape[:2]
    cell = max(1, w // (2 * STAMP_BITS))
    bits = [(n >> i) & 1 for i in range(STAMP_BITS)]
    out = image.copy()
    for i, b in enumerate(bits + [1 - b for b in bits]):
        out[h - cell :, i * cell : (i + 1) * cell] = 235 if b else 16
    return out


def read_stamp(gray: np.ndarray) -> int | None:
    """The index stamped by ``stamp_index`` into a decoded luma picture; None when the check bits disagree."""
    h, w = gray.shape[:2]
    cell = max(1, w // (2 * STAMP_BITS))
    inner = slice(cell // 4, cell - cell // 4) if cell >= 4 else slice(0, cell)
    rows = gray[h - cell :][inner].astype(np.float32)
    bits = [rows[:, i * cell : (i + 1) * cell][:, inner].mean() > 128 for i in range(2 * STAMP_BITS)]
    value, check = bits[:STAMP_BITS], bits[STAMP_BITS:]
    if any(v == c for v, c in zip(value, check, strict=True)):
        return None
    return sum(int(b) << i for i, b in enumerate(value))


class StampedVideoTrack(EngineVideoTrack):
    """The engine's video track with each picture's frame index stamped into it (bench only)."""

    async def recv(self) -> av.VideoFrame:
        out = await self.next_output()
        return video_frame(stamp_index(out.image, out.index), out.video_pts)


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """ICE on 127.0.0.1 only, for as long as the bench runs: aioice would offer every other address of this
    machine and leave loopback out, and the bench's viewer must not leave the machine. A patch, because neither
    aiortc's RTCConfiguration nor aioice's Connection takes the host addresses to gather (aioice 0.13, aiortc 1.16)."""
    import aioice.ice

    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


class LoopbackViewer:
    """An aiortc client in this process: the server side is the one ``facecast serve`` uses (Peers: relay, VP8,
    Opus), RTP goes over UDP on 127.0.0.1, and each decoded picture's stamp gives its arrival time."""

    def __init__(self, engine: LiveEngine, log: SessionLog) -> None:
        self.engine, self.log = engine, log
        self.peers = Peers(engine, ServerConfig(), video=StampedVideoTrack(engine))
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        reader = self._read_video(track) if track.kind == "video" else self._drain(track)
        self._tasks.append(asyncio.create_task(reader, name=f"bench-client-{track.kind}"))

    async def connect(self, timeout_s: float) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await self.peers.answer(self.pc.localDescription)
        await self.pc.setRemoteDescription(answer)
        clock_end = asyncio.get_running_loop().time() + timeout_s
        while self.pc.connectionState != "connected":
            if self.pc.connectionState == "failed" or asyncio.get_running_loop().time() > clock_end:
                raise RuntimeError(f"the loopback WebRTC viewer did not connect ({self.pc.connectionState})")
            await asyncio.sleep(0.02)

    async def _read_video(self, track: MediaStreamTrack) -> None:
        clock = self.engine.clock
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                t = clock.now()
                n = read_stamp(frame.to_ndarray(format="gray"))
                if self.log.closed:
                    continue
                if n is None:
                    self.log.client_unreadable += 1
                else:
                    self.log.client.setdefault(n, t)

    @staticmethod
    async def _drain(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def close(self) -> None:
        await self.pc.close()
        await self.peers.close_all()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# ------------------------------------------------------------------------------------------ drivers


@dataclass
class Run:
    """What a driver may look at while it moves time."""

    engines: list[LiveEngine]
    viewers: list[EncodingViewer]


class Driver(Protocol):
    async def run(self, run: Run, seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Return after ``seconds`` of the engines' clock, or as soon as ``until()`` is true."""
        ...

    def release(self) -> None:
        """The run is over: let whatever still waits on the clock finish, so that the engines can stop."""
        ...


class RealTimeDriver:
    """The engines' own clock runs by itself: just wait."""

    def __init__(self, poll_s: float = 0.02) -> None:
        self.poll_s = poll_s

    async def run(self, run: Run, seconds: float, until: Callable[[], bool] | None = None) -> None:
        clock = run.engines[0].clock
        end = clock.now() + seconds
        while clock.now() < end and not (until is not None and until()):
            await clock.sleep_until(min(end, clock.now() + self.poll_s))

    def release(self) -> None:
        return None  # real time releases itself


class LockstepDriver:
    """``--fast``: on a VirtualClock, each tick comes as soon as every model thread and encoder has finished the
    work of the previous one, so nothing is ever late and the wall time is pure compute."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock

    async def run(self, run: Run, seconds: float, until: Callable[[], bool] | None = None) -> None:
        first = run.engines[0]
        assert first.frames is not None
        for _ in range(round(seconds * first.cfg.audio.fps)):
            if until is not None and until():
                return
            for engine in run.engines:
                await engine.flush()
            for viewer in run.viewers:
                await viewer.drained()
            due = [e.counters.ticks for e in run.engines]
            self.clock.advance_to(max(e.frames.time_of(k) for e, k in zip(run.engines, due, strict=True)))
            for _ in range(10_000):  # bounded: a stuck ticker fails the run instead of hanging it
                if all(e.counters.ticks > k for e, k in zip(run.engines, due, strict=True)):
                    break
                await asyncio.sleep(0)
            else:
                raise RuntimeError("the engine's ticker did not tick on the virtual clock")
            for _ in range(3):  # the talkers and subscribers woken at the same instant run too
                await asyncio.sleep(0)

    def release(self) -> None:
        return None  # nothing waits on virtual time between ticks


# ------------------------------------------------------------------------------------------ a run


@dataclass(frozen=True)
class RunOptions:
    seconds: float = 20.0
    webrtc: bool = False  # a loopback aiortc viewer per session (else ``viewers`` bench encoders per session)
    viewers: int = 1
    connect_timeout_s: float = 20.0
    timed: bool = True  # False on a VirtualClock (--fast): its latencies are zero by construction, not measured
    talker_late_ms: float = 0.0  # each talker block comes 0..this late (uniform, seeded): network jitter
    talker_lead_ms: float | None = None  # each talker block comes this long before a tick (None: as it starts)


@dataclass
class RunRecord:
    logs: list[SessionLog]
    stats: list[dict[str, Any]]  # engine.stats() of each session when the measured time ended
    wall_s: float
    memory: dict[str, float | None]
    steps: int
    fps: int
    lookahead_frames: int
    latency_by_construction_ms: float
    processing_budget_ms: float  # processing_frames ticks: from the lookahead block's tick to the frame's
    timed: bool


async def measure_run(
    engines: list[LiveEngine],
    audio_16k: np.ndarray,
    options: RunOptions,
    driver: Driver,
    timer: Timer = time.perf_counter,
    until: Callable[[list[SessionLog]], bool] | None = None,
    encoder_factory: Callable[[], Any] | None = None,  # None: aiortc's Vp8Encoder
) -> RunRecord:
    """Start every engine with its talker at once, let ``driver`` move time for ``options.seconds`` (or until
    ``until(logs)``), stop everything and return what was logged. The engines must be stopped and warmed up."""
    logs = [SessionLog() for _ in engines]
    talkers = [
        PacedTalker(e, audio_16k, options.talker_late_ms, seed=i, lead_ms=options.talker_lead_ms)
        for i, e in enumerate(engines)
    ]
    observers = [RunObserver(e, t, log) for e, t, log in zip(engines, talkers, logs, strict=True)]
    for engine, observer in zip(engines, observers, strict=True):
        engine.observe(observer)
    viewers: list[EncodingViewer] = []
    clients: list[LoopbackViewer] = []
    if options.webrtc:
        for engine, log in zip(engines, logs, strict=True):
            client = LoopbackViewer(engine, log)
            clients.append(client)
            await client.connect(options.connect_timeout_s)
    else:
        viewers = [
            EncodingViewer(e.subscribe(), log, timer, encoder_factory or Vp8Encoder)
            for e, log in zip(engines, logs, strict=True)
            for _ in range(options.viewers)
        ]
    encoders = [asyncio.create_task(v.run()) for v in viewers]
    memory = MemoryWatch()
    memory.start()
    talking: list[asyncio.Task[None]] = []
    t0 = timer()
    try:
        for engine, talker, log in zip(engines, talkers, logs, strict=True):
            log.start = engine.clock.now()
            await engine.start()
            talking.append(asyncio.create_task(talker.run(), name="bench-talker"))
        await driver.run(Run(engines, viewers), options.seconds, None if until is None else lambda: until(logs))
    finally:
        wall_s = timer() - t0
        stats = [e.stats() for e in engines]  # counters at the same instant as the logs close
        for log in logs:
            log.closed = True
        driver.release()
        for task in talking:
            task.cancel()
        await asyncio.gather(*talking, return_exceptions=True)
        for engine, observer in zip(engines, observers, strict=True):
            await engine.stop()  # ends every subscriber: encoders and WebRTC tracks return
            engine.unobserve(observer)
        await asyncio.gather(*encoders, return_exceptions=True)
        for client in clients:
            await client.close()
        await memory.stop()
    first = engines[0]
    return RunRecord(
        logs=logs,
        stats=stats,
        wall_s=wall_s,
        memory=memory.report(len(engines)),
        steps=first.inference.steps,
        fps=first.cfg.audio.fps,
        lookahead_frames=first.cfg.a2l.lookahead_frames,
        latency_by_construction_ms=round(first.latency_ms, 1),
        processing_budget_ms=round(first.config.processing_frames * 1000 / first.cfg.audio.fps, 1),
        timed=options.timed,
    )


# ------------------------------------------------------------------------------------------ statistics


def summary(values: list[float] | np.ndarray) -> dict[str, float] | None:
    """n, mean, p50, p95, p99 and max of a sample (None when empty)."""
    a = np.asarray(values, np.float64)
    if not a.size:
        return None
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": int(a.size),
        "mean": round(float(a.mean()), 2),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(float(a.max()), 2),
    }


def slope_per_min(t: list[float], y: list[float]) -> float | None:
    """Least-squares slope of y over t (seconds), per minute."""
    if len(t) < 2 or max(t) - min(t) <= 0:
        return None
    x, v = np.asarray(t, np.float64), np.asarray(y, np.float64)
    return round(float(np.polyfit(x - x[0], v - v[0], 1)[0]) * 60, 4)  # relative to the first: clocks are large


@dataclass
class _Samples:
    """Raw per-frame values of one session (or several pooled), before they are summarised."""

    e2e: list[float] = field(default_factory=list)
    input_wait: list[float] = field(default_factory=list)
    picture_e2e: list[float] = field(default_factory=list)
    model_ready: list[float] = field(default_factory=list)
    client_e2e: list[float] = field(default_factory=list)
    transport: list[float] = field(default_factory=list)
    offset_t: list[float] = field(default_factory=list)
    offset: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    clock_error: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)

    def extend(self, other: _Samples) -> None:
        for f in fields(self):
            if f.name != "stages":
                getattr(self, f.name).extend(getattr(other, f.name))
        for k, v in other.stages.items():
            self.stages.setdefault(k, []).extend(v)


def _samples(log: SessionLog, record: RunRecord) -> tuple[_Samples, dict[str, list[float | None]]]:
    """Per-frame values of one session, and its series for the plot: per output frame ``t_s`` and the latencies
    (None where not known, and all None on a virtual clock), and per rendered frame ``frame_ms``."""
    ms, look, frame_ms = 1000.0, record.lookahead_frames, 1000.0 / record.fps
    s = _Samples()
    series: dict[str, list[float | None]] = {"t_s": [], "e2e_ms": [], "picture_e2e_ms": [], "client_e2e_ms": []}
    t0 = log.start if log.start is not None else (log.emitted[0].t if log.emitted else 0.0)

    def since(t: float, arrival: float | None) -> float | None:
        return ms * (t - arrival) if record.timed and arrival is not None else None

    for e in log.emitted:
        arrival = log.arrivals.get(e.index + look)  # the newest audio frame n depends on: n + lookahead
        got = log.client.get(e.index)
        e2e = since(e.t, arrival)
        picture = log.arrivals.get(e.picture + look) if e.speaking and e.picture is not None else None
        picture_e2e = since(e.t, picture)
        client_e2e = since(got, arrival) if got is not None else None
        for values, value in ((s.e2e, e2e), (s.picture_e2e, picture_e2e), (s.client_e2e, client_e2e)):
            if value is not None:
                values.append(value)
        if e.speaking and e.picture is not None:
            s.lag.append(frame_ms * (e.index - e.picture))  # how far the shown mouth is behind its sound
        if got is not None and record.timed:
            s.transport.append(ms * (got - e.t))
        s.offset_t.append(e.t)
        s.offset.append(ms * (e.audio_pts / AUDIO_OUT_HZ - e.video_pts / VIDEO_CLOCK_HZ))
        s.clock_error.append(ms * (e.t - e.video_pts / VIDEO_CLOCK_HZ))
        for key, value in (("e2e_ms", e2e), ("picture_e2e_ms", picture_e2e), ("client_e2e_ms", client_e2e)):
            series[key].append(None if value is None else round(value, 2))
        series["t_s"].append(round(e.t - t0, 3))
    for k, taken in log.taken.items():
        if record.timed:
            s.input_wait.append(ms * (taken - log.arrivals[k]))  # jitter buffer: arrival to the tick that took it
    for g, ready in log.ready.items():
        arrival = log.arrivals.get(g + look)
        if record.timed and arrival is not None:
            s.model_ready.append(ms * (ready - arrival))
    frame_total = []
    for timings in log.timings:
        for k, v in timings.items():
            s.stages.setdefault(k, []).append(v)
        if "unet" in timings:
            s.stages.setdefault("unet_per_step", []).append(timings["unet"] / record.steps)
        frame_total.append(sum(timings.values()))  # all model-thread work for the frame
    if frame_total:
        s.stages["frame"] = frame_total
    if log.encode_ms:
        s.stages["encode"] = list(log.encode_ms)
    series["frame_ms"] = [round(v, 2) for v in frame_total]
    return s, series


def _latency(s: _Samples, record: RunRecord) -> dict[str, Any]:
    return {  # all None on a virtual clock: _samples keeps no latencies there
        "e2e": summary(s.e2e),
        "input_wait": summary(s.input_wait),
        "processing_budget": record.processing_budget_ms,
        "picture_e2e": summary(s.picture_e2e),
        "model_ready": summary(s.model_ready),
        "client_e2e": summary(s.client_e2e),
        "transport": summary(s.transport),
        "by_construction": record.latency_by_construction_ms,
    }


def _av(s: _Samples, timed: bool) -> dict[str, Any]:
    return {
        "offset_ms": summary(s.offset),
        "drift_ms_per_min": slope_per_min(s.offset_t, s.offset),
        "picture_lag_ms": summary(s.lag),
        # Output pts against the clock they left on: a ticker falling behind would show as a slope here.
        "output_clock_drift_ms_per_min": slope_per_min(s.offset_t, s.clock_error) if timed else None,
    }


_COUNTERS = (
    "rendered",
    "skipped",
    "dropped",
    "late",
    "repeated",
    "jumped",
    "catch_ups",
    "paired_blocks",
    "model_errors",
    "underruns",
)


def _frames(log: SessionLog, stats: dict[str, Any]) -> dict[str, int]:
    speaking = [e for e in log.emitted if e.speaking]
    return {
        "out": len(log.emitted),
        "speaking": len(speaking),
        "fresh": sum(e.fresh for e in speaking),
        **{k: int(stats[k]) for k in _COUNTERS},
        "max_backlog": int(stats["max_backlog"]),
    }


def summarise_run(record: RunRecord, webrtc: bool = False) -> dict[str, Any]:
    """The numbers of one run: pooled over its sessions, and per session (with its latency series for plots)."""
    per_session = []
    pooled = _Samples()
    for log, stats in zip(record.logs, record.stats, strict=True):
        s, series = _samples(log, record)
        pooled.extend(s)
        per_session.append(_session(log, stats, s, series, record, webrtc))
    wall = max(record.wall_s, 1e-9)
    frames = {k: sum(p["frames"][k] for p in per_session) for k in per_session[0]["frames"]}
    frames["max_backlog"] = max(p["frames"]["max_backlog"] for p in per_session)

    def worst(key: str) -> float | None:
        values = [p[key] for p in per_session if p[key] is not None]
        return max(values) if values else None

    generated = [p["generated_fps_while_speaking"] for p in per_session]
    return {  # rates and first-frame times of the worst session; everything else pooled over the sessions
        "sessions": len(per_session),
        "wall_s": round(record.wall_s, 2),
        "output_s": round(max(len(log.emitted) for log in record.logs) / record.fps, 2),
        "fps": min(p["fps"] for p in per_session),
        "generated_fps_while_speaking": None if None in generated else min(generated),
        "throughput_fps": round(frames["rendered"] / wall, 2),
        "first_frame_ms": worst("first_frame_ms"),
        "first_generated_ms": worst("first_generated_ms"),
        "frames": frames,
        "latency_ms": _latency(pooled, record),
        "stages_ms": {k: summary(v) for k, v in sorted(pooled.stages.items())},
        "av": _av(pooled, record.timed),
        "memory": record.memory,
        "per_session": per_session,
    }


def _session(
    log: SessionLog,
    stats: dict[str, Any],
    s: _Samples,
    series: dict[str, list[float | None]],
    record: RunRecord,
    webrtc: bool,
) -> dict[str, Any]:
    frames = _frames(log, stats)
    timed, out = record.timed, log.emitted
    if timed:
        span = out[-1].t - out[0].t if len(out) > 1 else 0.0
        fps = (len(out) - 1) / span if span > 0 else 0.0
        generated = record.fps * frames["fresh"] / frames["speaking"] if frames["speaking"] else 0.0
    else:  # on virtual time a rate per clock second is 25 by construction: per wall second instead
        fps, generated = len(out) / max(record.wall_s, 1e-9), None
    first_frame = 1000 * (out[0].t - log.start) if timed and out and log.start is not None else None
    first_generated = None
    speech_arrival = log.arrivals.get(log.first_speech_block) if log.first_speech_block is not None else None
    shown = next((e for e in out if e.picture is not None), None)
    if timed and shown is not None and speech_arrival is not None:
        first_generated = round(1000 * (shown.t - speech_arrival), 1)
    return {
        "fps": round(fps, 2),
        "generated_fps_while_speaking": None if generated is None else round(generated, 2),
        "first_frame_ms": None if first_frame is None else round(first_frame, 1),
        "first_generated_ms": first_generated,
        "frames": frames,
        "latency_ms": _latency(s, record),
        "stages_ms": {k: summary(v) for k, v in sorted(s.stages.items())},
        "av": _av(s, timed),
        "webrtc": {"received": len(log.client), "unreadable": log.client_unreadable} if webrtc else None,
        "series": series,
    }

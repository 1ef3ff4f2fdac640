"""``facecast bench stream``: the live engine measured as viewers get it, every backend x steps x sessions asked
for in one run, against the real-time targets.

    facecast bench stream --avatar A --audio SPEECH [--model DIR] [--export DIR] [--backend torch,onnxruntime]
                          [--steps 1,2,4] [--sessions 1,2] [--realtime | --fast] [--webrtc] [--seconds S]
                          [--viewers N] [--threads N] [--json FILE] [--plot FILE.png]

From Python: ``run_bench(StreamBenchOptions(...))`` returns the report. Each variant starts fresh engines on a shared,
already loaded backend, loops the speech into each at real-time pace for ``--seconds`` (``--fast``: as fast as the
engines take it, on a virtual clock) and reports first-frame times, end-to-end latency, per-stage times, fps,
dropped frames, A/V offset and drift, and memory; the first variant is preceded by a cold start (model load, avatar,
warm-up, first frames). Variants are compared as ratios to torch with one step, and a verdict says whether the
targets (25 fps, p95 end-to-end <= 200 ms, first frame <= 1 s) are met, by how much not, and which stage costs most.
JSON for machines (docs/benchmarks.md documents every key), rich tables for people, a PNG for eyes.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

from facecast.engine.avatar.prepare import Avatar
from facecast.engine.backend import Backend
from facecast.engine.bundled import DEFAULT_AVATAR, DEFAULT_SPEECH
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.config import SAMPLE_RATE

from ..config import LiveConfig
from ..live.clock import Clock, MonotonicClock, VirtualClock
from ..live.model_worker import WorkerConfig
from .sessions_sweep import WORKER_MODES, WORKER_SHARED, sessions_sweep, sweep_table, worker_modes
from .sessions_sweep import lookup as _get

if TYPE_CHECKING:  # the measurement pulls in aiortc and PyAV: imported when a bench runs, not with the CLI
    from ..live.engine import LiveEngine
    from .measured_run import Driver, SessionLog, Timer

DESCRIPTION = "the live engine as viewers get it: latency, fps, per-stage time, drops, A/V sync, memory"
Log = Callable[[str], None]
console = Console(stderr=True)  # progress on stderr; stdout carries only the tables


@dataclass(frozen=True)
class Targets:
    """What real time means here. Reported against, never asserted."""

    fps: float = 25.0  # output frames and new pictures while speaking, per second, per session
    fps_slack: float = 0.5  # 24.5/s counts as 25: one missing picture in 2 s is not a missed target
    e2e_p95_ms: float = 200.0  # audio arrival -> frame out (or at the WebRTC client)
    first_frame_ms: float = 1000.0  # session start -> first frame out


@dataclass(frozen=True)
class StreamBenchOptions:
    model: Path = DEFAULT_MODEL_DIR
    avatar: Path = DEFAULT_AVATAR
    audio: Path = DEFAULT_SPEECH
    export: Path | None = None  # for onnxruntime/tensorrt; None: exported into a temporary folder when needed
    backends: tuple[str, ...] = ("torch",)
    steps: tuple[int, ...] = (1,)
    sessions: tuple[int, ...] = (1,)
    workers: tuple[str, ...] = WORKER_MODES  # for K > 1: shared model worker (batched) and/or one per session
    seconds: float = 20.0
    fast: bool = False
    webrtc: bool = False
    viewers: int = 1  # bench VP8 encoders per session when not --webrtc
    device: str = "cpu"
    threads: int | None = None  # torch and onnxruntime CPU threads; None: each library's default
    session_threads: int | None = WorkerConfig.session_threads  # the shared worker's (None: one per physical core)
    processing_frames: int = LiveConfig.processing_frames
    max_late_frames: int = LiveConfig.max_late_frames
    catch_up_frames: int | None = LiveConfig.catch_up_frames
    pair_speech_frames: int = LiveConfig.pair_speech_frames
    speech_every_frames: int | None = LiveConfig.speech_every_frames
    jitter_ms: int = LiveConfig.jitter_ms
    talker_late_ms: float = 0.0  # each talker block arrives up to this much late, at random: a jittery network
    talker_lead_ms: float | None = None  # each talker block arrives this long before a tick (None: as it starts)
    cold_max_s: float = 10.0  # the cold start ends at the first generated frame, or after this much audio
    targets: Targets = field(default_factory=Targets)


@dataclass(frozen=True)
class Harness:
    """Where time comes from: the real clock (--realtime), a virtual one in lockstep (--fast), or a test's."""

    clock: Clock
    driver: Driver
    timed: bool = True  # False: the clock is virtual, latencies on it are not measurements
    timer: Timer = time.perf_counter  # the bench's own durations (VP8 encode, wall time)
    encoder_factory: Callable[[], Any] | None = None  # None: aiortc's Vp8Encoder
    speaker_fn: Callable[[np.ndarray], np.ndarray] | None = None  # None: the engine's own (Resemblyzer)

    @classmethod
    def for_mode(cls, fast: bool) -> Harness:
        from .measured_run import LockstepDriver, RealTimeDriver

        if fast:
            clock = VirtualClock()
            return cls(clock, LockstepDriver(clock), timed=False)
        return cls(MonotonicClock(), RealTimeDriver())


# ------------------------------------------------------------------------------------------ runs


def live_config(options: StreamBenchOptions, steps: int) -> LiveConfig:
    """The engines' settings for a run at ``steps`` DDIM steps, with the bench's scheduling options."""
    return LiveConfig(
        steps=steps,
        processing_frames=options.processing_frames,
        max_late_frames=options.max_late_frames,
        catch_up_frames=options.catch_up_frames,
        pair_speech_frames=options.pair_speech_frames,
        speech_every_frames=options.speech_every_frames,
        jitter_ms=options.jitter_ms,
    )


def _engines(
    backend: Backend,
    avatar: Avatar,
    steps: int,
    sessions: int,
    options: StreamBenchOptions,
    harness: Harness,
    worker: str = WORKER_SHARED,
) -> list[LiveEngine]:
    from ..live.engine import LiveEngine
    from ..live.model_worker import ModelWorker

    live = live_config(options, steps)
    extra: dict[str, Any] = {} if harness.speaker_fn is None else {"speaker_fn": harness.speaker_fn}
    if worker == WORKER_SHARED:
        config = WorkerConfig(session_threads=options.session_threads)
        extra["worker"] = ModelWorker(backend, config, clock=harness.clock)  # else each engine makes its own
    return [LiveEngine(backend, avatar, live, harness.clock, **extra) for _ in range(sessions)]


def variant_name(backend: str, steps: int, sessions: int, worker: str = WORKER_SHARED) -> str:
    mode = f" worker={worker}" if sessions > 1 else ""
    return f"{backend} steps={steps} sessions={sessions}{mode}"


async def run_variant(
    backend: Backend,
    backend_name: str,
    avatar: Avatar,
    audio_16k: np.ndarray,
    steps: int,
    sessions: int,
    options: StreamBenchOptions,
    harness: Harness,
    worker: str = WORKER_SHARED,
) -> dict[str, Any]:
    """K fresh engines on ``backend`` at once, warmed up as ``facecast serve`` does, measured for ``seconds``;
    ``worker``: all on one shared model worker, or each on its own (sessions_sweep.py)."""
    from .measured_run import RunOptions, measure_run, summarise_run

    engines = _engines(backend, avatar, steps, sessions, options, harness, worker)
    for engine in engines:
        await engine.warm_up()
    run = RunOptions(
        seconds=options.seconds,
        webrtc=options.webrtc,
        viewers=options.viewers,
        timed=harness.timed,
        talker_late_ms=options.talker_late_ms,
        talker_lead_ms=options.talker_lead_ms,
    )
    record = await measure_run(engines, audio_16k, run, harness.driver, harness.timer, None, harness.encoder_factory)
    return {
        "name": variant_name(backend_name, steps, sessions, worker),
        "backend": backend_name,
        "steps": steps,
        "worker": worker,
        **summarise_run(record, options.webrtc),
    }


def _shown(logs: list[SessionLog]) -> bool:
    """The first generated picture is out (checked at every poll, so the newest few frames are enough)."""
    return any(e.picture is not None for e in logs[0].emitted[-5:])


async def cold_start(
    backend: Backend,
    backend_name: str,
    avatar: Avatar,
    audio_16k: np.ndarray,
    options: StreamBenchOptions,
    harness: Harness,
    load_ms: float,
    avatar_ms: float,
) -> dict[str, Any]:
    """The process's first session: warm-up, start, until its first generated picture is out."""
    from .measured_run import RunOptions, measure_run, summarise_run

    (engine,) = _engines(backend, avatar, options.steps[0], 1, options, harness)
    t = harness.timer()
    await engine.warm_up()
    warmup_ms = 1000 * (harness.timer() - t)
    run = RunOptions(seconds=options.cold_max_s, webrtc=False, viewers=options.viewers, timed=harness.timed)
    record = await measure_run([engine], audio_16k, run, harness.driver, harness.timer, _shown, harness.encoder_factory)
    s = summarise_run(record)
    start_to_first = s["first_frame_ms"]
    log = record.logs[0]
    # The first frames out are the avatar's own while the first speech is still in the pipeline; the first generated
    # picture comes with the talker's first speech (the bundled clip's first 40 ms block is silent).
    picture = next((e for e in log.emitted if e.picture is not None), None)
    timed = harness.timed and picture is not None and log.start is not None
    start_to_picture = round(1000 * (picture.t - log.start), 1) if timed else None
    return {
        "variant": variant_name(backend_name, options.steps[0], 1),
        "load_ms": round(load_ms, 1),
        "avatar_ms": round(avatar_ms, 1),
        "warmup_ms": round(warmup_ms, 1),
        "start_to_first_frame_ms": start_to_first,
        "start_to_first_picture_ms": start_to_picture,
        "first_frame_ms": None
        if start_to_first is None
        else round(load_ms + avatar_ms + warmup_ms + start_to_first, 1),
        "first_generated_ms": s["first_generated_ms"],
    }


def warm_session(cold: dict[str, Any], prepare: Callable[[], Avatar]) -> dict[str, Any]:
    """A later session of the same process that brings the same avatar: ``prepare`` it again (the face detector and
    the model are loaded, nothing warms up again), then the same start to first frame as the cold one."""
    t = time.perf_counter()
    prepare()
    avatar_ms = 1000 * (time.perf_counter() - t)
    start_to_first = cold["start_to_first_frame_ms"]
    return {
        "avatar_warm_ms": round(avatar_ms, 1),
        "warm_first_frame_ms": None if start_to_first is None else round(avatar_ms + start_to_first, 1),
    }


# ------------------------------------------------------------------------------------------ comparison and verdict


def headline(v: dict[str, Any]) -> dict[str, float | None]:
    """The numbers variants are compared on."""
    e2e = "client_e2e" if _get(v, "latency_ms", "client_e2e") is not None else "e2e"
    return {
        "frame_ms": _get(v, "stages_ms", "frame", "mean"),
        "unet_ms": _get(v, "stages_ms", "unet", "mean"),
        "throughput_fps": v["throughput_fps"],
        "generated_fps_while_speaking": v["generated_fps_while_speaking"],
        "e2e_p95_ms": _get(v, "latency_ms", e2e, "p95"),
        "picture_e2e_p95_ms": _get(v, "latency_ms", "picture_e2e", "p95"),
        "rss_peak_mb": _get(v, "memory", "rss_peak_mb"),
    }


def ratios(v: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """This variant's headline numbers divided by the baseline's (1.0 for the baseline itself)."""
    mine, theirs = headline(v), headline(base)
    return {k: round(mine[k] / theirs[k], 3) if mine[k] is not None and theirs[k] else None for k in mine}


def _check(measured: float | None, target: float, at_least: bool, slack: float = 0.0) -> dict[str, Any]:
    if measured is None:
        return {"target": target, "measured": None, "ok": None, "miss_by": None}
    ok = measured >= target - slack if at_least else measured <= target
    miss = 0.0 if ok else (target - measured if at_least else measured - target)
    return {"target": target, "measured": measured, "ok": ok, "miss_by": round(miss, 2)}


def e2e_parts(v: dict[str, Any]) -> dict[str, float | None] | None:
    """Where the median end-to-end latency goes: waiting in the input (jitter) buffer for a tick to take the
    audio, the processing budget (processing_frames ticks, fixed), the output tick's own lateness, and with
    --webrtc the transport to the client (encode, RTP on loopback, jitter buffer, decode)."""
    lat = v["latency_ms"]
    e2e = _get(lat, "e2e", "p50")
    if e2e is None:
        return None
    wait = _get(lat, "input_wait", "p50") or 0.0
    return {
        "input_wait": wait,
        "processing_budget": lat["processing_budget"],
        "output": round(e2e - wait - lat["processing_budget"], 2),
        "transport": _get(lat, "transport", "p50"),
    }


def verdict(v: dict[str, Any], targets: Targets, timed: bool) -> dict[str, Any]:
    """Each target met or missed by how much, and where a frame's time and the latency go."""
    sessions = v["sessions"]
    per_session_throughput = round(v["throughput_fps"] / sessions, 2)
    e2e = "client_e2e" if _get(v, "latency_ms", "client_e2e") is not None else "e2e"
    checks = {
        "delivered_fps": _check(v["fps"] if timed else None, targets.fps, True, targets.fps_slack),
        # --fast has no speaking rate on a virtual clock: raw throughput per session stands in for it
        "generated_fps": _check(
            v["generated_fps_while_speaking"] if timed else per_session_throughput, targets.fps, True, targets.fps_slack
        ),
        "e2e_p95_ms": _check(_get(v, "latency_ms", e2e, "p95"), targets.e2e_p95_ms, False),
        "first_frame_ms": _check(v["first_frame_ms"], targets.first_frame_ms, False),
    }
    stages = {k: s["mean"] for k, s in v["stages_ms"].items() if s and k not in ("frame", "unet_per_step")}
    costliest = max(stages, key=stages.get) if stages else None
    judged = [c["ok"] for c in checks.values() if c["ok"] is not None]
    result = {
        "met": all(judged) if judged else None,
        "checks": checks,
        "budget_ms": round(1000 / targets.fps, 1),
        "frame_ms": _get(v, "stages_ms", "frame", "mean"),
        "costliest_stage": costliest,
        "costliest_stage_ms": stages.get(costliest) if costliest else None,
        "e2e_parts_p50_ms": e2e_parts(v),
    }
    result["summary"] = _summary_line(result, sessions)
    return result


# What to try when a stage is what makes the frame miss the clock (the verdict's summary says it).
STAGE_ADVICE = {
    "features": "the speech encoder: --model logmel runs none (the same face, the log-mel A2L)",
    "unet": "fewer --steps, or a GPU",
}

_CHECK_NAMES = {
    "delivered_fps": "frames out/s",
    "generated_fps": "new pictures/s",
    "e2e_p95_ms": "p95 end-to-end ms",
    "first_frame_ms": "first frame ms",
}


def _summary_line(result: dict[str, Any], sessions: int) -> str:
    checks = result["checks"]
    missed = [k for k, c in checks.items() if c["ok"] is False]
    if not missed:
        return "meets every measured target"
    said = []
    for k in missed:
        c = checks[k]
        text = f"{_CHECK_NAMES[k]} {c['measured']} vs {c['target']:g} (by {c['miss_by']})"
        if k in ("delivered_fps", "generated_fps") and result["frame_ms"] is not None and result["costliest_stage"]:
            shared = f" per session, {sessions} sessions sharing the CPU" if sessions > 1 else ""
            text += (
                f": a frame takes {result['frame_ms']:.1f} ms of model time against {result['budget_ms']:.0f} ms"
                f"{shared}, most in {result['costliest_stage']} ({result['costliest_stage_ms']:.1f} ms)"
            )
            if result["costliest_stage"] in STAGE_ADVICE:
                text += f"; {STAGE_ADVICE[result['costliest_stage']]}"
        parts = result["e2e_parts_p50_ms"]
        if k == "e2e_p95_ms" and parts:
            text += (
                f": at p50, {parts['input_wait']:.0f} ms waiting in the input jitter buffer + "
                f"{parts['processing_budget']:.0f} ms processing budget + {parts['output']:.0f} ms output tick"
                + (f" + {parts['transport']:.0f} ms WebRTC transport" if parts["transport"] is not None else "")
            )
        said.append(text)
    return "misses " + "; ".join(said)


def baseline_of(variants: list[dict[str, Any]]) -> dict[str, Any]:
    """torch with one step and the fewest sessions when it ran, else the first variant."""
    torch1 = [v for v in variants if v["backend"] == "torch" and v["steps"] == 1]
    return min(torch1, key=lambda v: v["sessions"]) if torch1 else variants[0]


def build_report(
    options: StreamBenchOptions,
    variants: list[dict[str, Any]],
    cold: dict[str, Any] | None,
    timed: bool,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    base = baseline_of(variants)
    for v in variants:
        v["ratios"] = ratios(v, base)
        v["verdict"] = verdict(v, options.targets, timed)
    top = dict(base["verdict"])
    top["variant"] = base["name"]
    top["cold_first_frame_ms"] = _check(_get(cold, "first_frame_ms"), options.targets.first_frame_ms, False)
    top["variants_meeting_targets"] = [v["name"] for v in variants if v["verdict"]["met"]]
    return {
        "command": None,  # set by the command line
        "plot": None,
        **(context or {}),
        "mode": "realtime" if timed else "fast",
        "options": {
            "seconds": options.seconds,
            "webrtc": options.webrtc,
            "viewers": 0 if options.webrtc else options.viewers,
            "device": options.device,
            "threads": options.threads,
            "session_threads": options.session_threads,
            "processing_frames": options.processing_frames,
            "max_late_frames": options.max_late_frames,
            "catch_up_frames": options.catch_up_frames,
            "pair_speech_frames": options.pair_speech_frames,
            "speech_every_frames": options.speech_every_frames,
            "jitter_ms": options.jitter_ms,
            "talker_late_ms": options.talker_late_ms,
            "talker_lead_ms": options.talker_lead_ms,
        },
        "targets": asdict(options.targets),
        "cold": cold,
        "baseline": base["name"],
        "variants": variants,
        "sessions_sweep": sessions_sweep(variants),
        "verdict": top,
    }


# ------------------------------------------------------------------------------------------ the whole bench


def machine_info() -> dict[str, Any]:
    from .bench_models import machine_info as models_machine_info

    info = models_machine_info()
    for name in ("onnxruntime", "aiortc", "av"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def _load_backend(name: str, options: StreamBenchOptions, export_dir: Path | None) -> Backend:
    from facecast.export.backends import load_backend

    path = options.model if name == "torch" else export_dir
    assert path is not None
    return load_backend(name, path, device=options.device, threads=options.threads)


def _export_dir(options: StreamBenchOptions, tmp: Path, log: Log) -> Path:
    if options.export is not None:
        return options.export
    from facecast.export.onnx.export import ExportOptions, export_model

    out = tmp / "export"
    if not (out / "manifest.json").is_file():
        log(f"no --export folder: exporting {options.model} into a temporary folder")
        export_model(options.model, out, options=ExportOptions(threads=options.threads), log=lambda s: log(f"  {s}"))
    return out


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """On a CPU shared with other work fewer threads than cores can be much faster (docs/export.md)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


async def _bench(options: StreamBenchOptions, audio: np.ndarray, tmp: Path, harness: Harness, log: Log) -> dict:
    from facecast.engine.avatar.prepare import load_avatar

    from . import serving_process

    variants: list[dict[str, Any]] = []
    cold = interrupt = None
    export_used = None
    processes: list[dict[str, Any]] = []
    for name in options.backends:
        export_dir = None if name == "torch" else _export_dir(options, tmp, log)
        export_used = export_used or (export_dir and (str(export_dir) if options.export else "temporary export"))
        processes.append(serving_process.measure(name, export_dir or options.model, options.avatar, options.device))
        log(f"a fresh {name} serving process: {processes[-1]}")
        t = time.perf_counter()
        backend = _load_backend(name, options, export_dir)
        load_ms = 1000 * (time.perf_counter() - t)
        t = time.perf_counter()
        avatar = load_avatar(options.avatar, backend)
        avatar_ms = 1000 * (time.perf_counter() - t)
        if cold is None:
            log(f"cold start: {name}, load {load_ms:.0f} ms, avatar {avatar_ms:.0f} ms")
            cold = await cold_start(backend, name, avatar, audio, options, harness, load_ms, avatar_ms)
            cold.update(warm_session(cold, partial(load_avatar, options.avatar, backend)))
        for steps in options.steps:
            for sessions in options.sessions:
                for worker in worker_modes(sessions, options.workers):
                    log(f"{variant_name(name, steps, sessions, worker)}: {options.seconds:g} s")
                    v = await run_variant(backend, name, avatar, audio, steps, sessions, options, harness, worker)
                    log(f"  {_progress_line(v)}")
                    variants.append(v)
        if interrupt is None:
            interrupt = await _interrupt(backend, avatar, audio, options, harness, log)
    context = {
        "machine": machine_info(),
        "model": str(options.model),
        "export": export_used,
        "avatar": str(options.avatar),
        "audio": str(options.audio),
        "serving_process": processes,
    }
    return {**build_report(options, variants, cold, harness.timed, context), "interrupt": interrupt}


async def _interrupt(
    backend: Backend, avatar: Avatar, audio: np.ndarray, options: StreamBenchOptions, harness: Harness, log: Log
) -> dict[str, Any]:
    """Barge-in on the first backend: interrupt -> idle mouth (streaming/benchmark/interrupt_run.py)."""
    from .interrupt_run import measure_interrupt

    live = live_config(options, options.steps[0])
    r = await measure_interrupt(backend, avatar, audio, live, harness.clock, harness.driver, harness.timed)
    log(
        f"interrupt -> idle mouth: {r['interrupt_to_idle_frames']} frame(s), {r['interrupt_to_idle_ms']} ms "
        f"(worst of {r['trials']}; target <= {r['target_frames']} frames)"
    )
    return r


def _progress_line(v: dict[str, Any]) -> str:
    h = headline(v)
    return (
        f"fps {v['fps']}, new pictures/s while speaking {v['generated_fps_while_speaking']}, "
        f"throughput {v['throughput_fps']}/s, e2e p95 {h['e2e_p95_ms']} ms, frame {h['frame_ms']} ms"
    )


def run_bench(options: StreamBenchOptions, log: Log = print, harness: Harness | None = None) -> dict[str, Any]:
    """``facecast bench stream``: every variant of ``options``, measured; the report docs/benchmarks.md documents."""
    from facecast.engine.errors import InputError
    from facecast.engine.media import load_audio

    for path in (options.avatar, options.audio):
        if not Path(path).exists():
            raise InputError(f"not found: {path}. Give an existing avatar (--avatar) and speech file (--audio).")

    from .measured_run import loopback_ice

    audio = load_audio(options.audio, SAMPLE_RATE)
    harness = harness or Harness.for_mode(options.fast)
    ice = loopback_ice() if options.webrtc else contextlib.nullcontext()
    with (
        _torch_threads(options.threads),
        _quiet_engine(),
        ice,
        tempfile.TemporaryDirectory(prefix="facecast-bench-") as tmp,
    ):
        from ..web.serve import event_loop

        loop = event_loop()  # the loop `facecast serve` runs on (uvloop when installed)
        try:
            return loop.run_until_complete(_bench(options, audio, Path(tmp), harness, log))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()


@contextlib.contextmanager
def _quiet_engine() -> Iterator[None]:
    """The engine warns every 5 s while it skips frames; the bench counts them itself and would drown in those."""
    logger = logging.getLogger("facecast.live")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


# ------------------------------------------------------------------------------------------ tables


def _ms(s: dict[str, Any] | None, key: str = "mean") -> str:
    return "–" if not s else f"{s[key]:.1f}"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def render_tables(report: dict[str, Any]) -> list[Table]:
    variants = report["variants"]
    webrtc = report["options"]["webrtc"]
    main = Table(title=f"facecast bench stream ({report['mode']}, {report['options']['seconds']:g} s per variant)")
    for col in ("variant", "fps out", "new/s speaking", "throughput/s"):
        main.add_column(col, justify="left" if col == "variant" else "right")
    e2e_key = "client_e2e" if webrtc else "e2e"
    for col in (
        f"{'client ' if webrtc else ''}e2e ms p50/p95/p99",
        "picture e2e p95",
        "first frame ms",
        "skipped/dropped",
        "frame ms (x base)",
        "RSS MB",
        "met",
    ):
        main.add_column(col, justify="right")
    for v in variants:
        e2e = v["latency_ms"][e2e_key]
        f = v["frames"]
        main.add_row(
            v["name"],
            _num(v["fps"]),
            _num(v["generated_fps_while_speaking"]),
            _num(v["throughput_fps"]),
            "–" if not e2e else f"{e2e['p50']:.0f} / {e2e['p95']:.0f} / {e2e['p99']:.0f}",
            _ms(v["latency_ms"]["picture_e2e"], "p95"),
            _num(v["first_frame_ms"], "{:.0f}"),
            f"{f['skipped']} / {f['dropped']}",
            f"{_ms(v['stages_ms'].get('frame'))} ({_num(v['ratios']['frame_ms'], '{:.2f}')})",
            _num(v["memory"]["rss_peak_mb"], "{:.0f}"),
            {True: "yes", False: "no", None: "–"}[v["verdict"]["met"]],
        )
    stage_names = list(dict.fromkeys(k for v in variants for k in v["stages_ms"]))
    stages = Table(title="per-stage ms (mean; frame = all model-thread work per frame; encode = VP8 per frame)")
    stages.add_column("variant")
    for name in stage_names:
        stages.add_column(name, justify="right")
    for v in variants:
        stages.add_row(v["name"], *(_ms(v["stages_ms"].get(k)) for k in stage_names))
    base = report["baseline"]
    compared = Table(title=f"ratios to {base} (value / baseline: above 1 is more ms, more fps, more MB)")
    compared.add_column("variant")
    keys = list(variants[0]["ratios"])
    for key in keys:
        compared.add_column(key, justify="right")
    for v in variants:
        compared.add_row(v["name"], *(_num(v["ratios"][k], "{:.2f}") for k in keys))
    top = report["verdict"]
    verdict_table = Table(title=f"verdict for {top['variant']}: {top['summary']}")
    for col in ("target", "goal", "measured", "met", "missed by"):
        verdict_table.add_column(col, justify="left" if col == "target" else "right")
    checks = {**top["checks"], "cold first frame ms": top["cold_first_frame_ms"]}
    for name, c in checks.items():
        verdict_table.add_row(
            name,
            f"{'>=' if 'fps' in name else '<='} {c['target']:g}",
            _num(c["measured"]),
            {True: "yes", False: "NO", None: "–"}[c["ok"]],
            _num(c["miss_by"]),
        )
    cold = report["cold"]
    if cold:
        verdict_table.caption = (
            f"cold start ({cold['variant']}): load {cold['load_ms']:.0f} ms + avatar {cold['avatar_ms']:.0f} ms + "
            f"warm-up {cold['warmup_ms']:.0f} ms + start to first frame {_num(cold['start_to_first_frame_ms'])} ms; "
            f"first generated frame {_num(cold['first_generated_ms'])} ms after speech; a later session in this "
            f"process: avatar {_num(cold.get('avatar_warm_ms'))} ms, "
            f"first frame {_num(cold.get('warm_first_frame_ms'))} ms"
        )
    return [main, stages, compared, verdict_table, *sweep_table(report.get("sessions_sweep", []))]

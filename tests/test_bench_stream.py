"""``facecast bench stream`` measures what it claims: on virtual time, with model calls and VP8 encodes that take
known (virtual) milliseconds, the bench reports those milliseconds, the latency and frame rates they imply, the
drop counters, and zero A/V offset and drift. Nothing here depends on this machine's speed: the numbers checked
are all on the virtual clock, which moves only when the test moves it.
"""

import asyncio
import fractions
import json
import re
import threading
import types

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from conftest import REPO, speech_like, write_wav

from facecast.cli import build_parser
from facecast.engine import batching, pipeline
from facecast.export.backends.torch_backend import TorchBackend
from facecast.streaming.benchmark.latency_plot import write_plot
from facecast.streaming.benchmark.measured_run import read_stamp, stamp_index
from facecast.streaming.benchmark.sessions_sweep import WORKER_OWN, WORKER_SHARED
from facecast.streaming.benchmark.stream_bench import (
    Harness,
    StreamBenchOptions,
    build_report,
    cold_start,
    run_variant,
)
from facecast.streaming.config import LiveConfig
from facecast.streaming.live.clock import VirtualClock

STEP_S = 0.002  # the test clock moves in 2 ms steps; every injected delay is a multiple of it
A2L_MS, DENOISE_MS, DECODE_MS, ENCODE_MS = 2.0, 12.0, 8.0, 4.0


class DelayedBackend:
    """The tiny model, each call costing known virtual ms on the engines' model threads. Warm-up runs before the
    engine starts, inline on the event loop, which must not wait on a clock nobody moves: no delay there."""

    def __init__(self, inner: TorchBackend, clock: VirtualClock, denoise_ms: float = DENOISE_MS) -> None:
        self.inner, self.clock, self.denoise_ms = inner, clock, denoise_ms
        self.name, self.cfg = "delayed", inner.cfg
        self.model_threads: set[int] = set()
        self.denoise_batches: list[int] = []  # frames in each UNet call on a model thread

    def _spend(self, ms: float) -> None:
        if threading.current_thread().name.startswith("facecast-model"):
            self.model_threads.add(threading.get_ident())
            self.clock.block_for(ms / 1000)

    def a2l(self, *args):
        self._spend(A2L_MS)
        return self.inner.a2l(*args)

    def denoise(self, *args):
        if threading.current_thread().name.startswith("facecast-model"):
            self.denoise_batches.append(len(args[0]))
        self._spend(self.denoise_ms)
        return self.inner.denoise(*args)

    def decode(self, latents):
        self._spend(DECODE_MS)
        return self.inner.decode(latents)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class DelayedEncoder:
    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock

    def encode(self, frame, force_keyframe=False):
        self.clock.block_for(ENCODE_MS / 1000)
        return [b""], frame.pts


class SteppedDriver:
    """Virtual time in 2 ms steps. Before each step every model thread and encoder has either finished its work
    or is waiting for virtual time, so everything happens when it would on a real clock, at any machine speed."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock

    async def run(self, run, seconds, until=None):
        end = self.clock.now() + seconds
        while self.clock.now() < end - 1e-9:
            if until is not None and until():
                return
            self.clock.advance_to(self.clock.now() + STEP_S)
            await self._settle(run)

    async def _settle(self, run):
        for _ in range(20_000):  # bounded: a hang fails the test instead of blocking the run
            await asyncio.sleep(0.0002)
            now = self.clock.now()
            ticked = all(e.counters.ticks + e.counters.jumped > e.frames.frame_at(now) for e in run.engines)
            # one model thread per worker, however many engines share it
            workers = {id(e.worker) for e in run.engines if e.stats()["backlog"] > 0}
            busy = len(workers) + sum(not v.idle.is_set() for v in run.viewers)
            if ticked and self.clock.blocked >= busy:
                return
        raise AssertionError("the engines did not settle")

    def release(self):
        self.clock.release()


@pytest.fixture
def virtual(monkeypatch, backend):
    """A test clock that also times the pipeline's stages (Frame.timings_ms), and a harness on it."""
    clock = VirtualClock()
    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(perf_counter=clock.now))
    monkeypatch.setattr(batching, "time", types.SimpleNamespace(perf_counter=clock.now))  # times the model calls
    harness = Harness(
        clock,
        SteppedDriver(clock),
        timed=True,
        timer=clock.now,
        encoder_factory=lambda: DelayedEncoder(clock),
        speaker_fn=lambda audio: np.zeros(256, np.float32),
    )
    return clock, harness


def options(**kw) -> StreamBenchOptions:
    return StreamBenchOptions(**{"seconds": 3.0, "viewers": 1, **kw})


def measure(backend, portrait, harness, steps=1, sessions=1, worker=WORKER_SHARED, **kw):
    opts = options(**kw)
    audio = speech_like(4.0)
    v = asyncio.run(run_variant(backend, "delayed", portrait, audio, steps, sessions, opts, harness, worker))
    return opts, v


def test_injected_delays_are_reported_back(virtual, backend, portrait):
    clock, harness = virtual
    slow = DelayedBackend(backend, clock)
    opts, v = measure(slow, portrait, harness, steps=2)
    st = {k: s["mean"] for k, s in v["stages_ms"].items()}
    # a frame: A2L 2 + two UNet calls 2 x 12 + decode 8 = 34 virtual ms, the rest takes no virtual time
    assert st["a2l"] == pytest.approx(A2L_MS, abs=0.01)
    assert st["unet"] == pytest.approx(2 * DENOISE_MS, abs=0.01)
    assert st["unet_per_step"] == pytest.approx(DENOISE_MS, abs=0.01)
    assert st["decode"] == pytest.approx(DECODE_MS, abs=0.01)
    assert st["encode"] == pytest.approx(ENCODE_MS, abs=0.01)
    assert st["paste"] == st["conditions"] == st["features"] == 0
    assert st["frame"] == pytest.approx(A2L_MS + 2 * DENOISE_MS + DECODE_MS, abs=0.01)
    assert v["stages_ms"]["unet"]["max"] == pytest.approx(2 * DENOISE_MS, abs=0.01)  # every frame, not a mean
    # 34 ms fits the 40 ms tick: every frame is rendered in time and shown while speaking
    f = v["frames"]
    assert f["skipped"] == f["dropped"] == f["late"] == f["repeated"] == f["model_errors"] == 0
    assert f["rendered"] > 50 and f["fresh"] == f["speaking"] > 50
    assert v["fps"] == pytest.approx(25.0, abs=0.01) and v["generated_fps_while_speaking"] == pytest.approx(25.0)
    # end to end: the audio waits for a tick in the jitter buffer, then processing_frames ticks to the frame
    lat = v["latency_ms"]
    budget = opts.processing_frames * 40
    assert lat["processing_budget"] == budget
    wait = lat["input_wait"]["p50"]
    assert 0 < wait <= 80 and lat["input_wait"]["max"] == pytest.approx(wait, abs=0.01)  # whole ticks, steady
    assert lat["e2e"]["p50"] == pytest.approx(wait + budget, abs=0.01)
    assert lat["e2e"]["max"] == pytest.approx(lat["e2e"]["p50"], abs=0.01)  # a steady clock: no spread
    assert lat["picture_e2e"]["p95"] == pytest.approx(lat["e2e"]["p50"], abs=0.01)  # the shown mouth is its own
    # the model had the frame 34 ms after the tick that fed its last audio block (one block later at most)
    ready_after_tick = lat["model_ready"]["p50"] - wait
    assert ready_after_tick == pytest.approx(34, abs=0.01) or ready_after_tick == pytest.approx(74, abs=0.01)
    assert lat["client_e2e"] is None and lat["transport"] is None
    av = v["av"]
    assert av["offset_ms"]["max"] == 0 and av["offset_ms"]["mean"] == 0
    assert av["drift_ms_per_min"] == pytest.approx(0, abs=1e-6)
    assert av["output_clock_drift_ms_per_min"] == pytest.approx(0, abs=1e-3)
    assert av["picture_lag_ms"]["max"] == 0
    # the first tick start_slack_ms after start() (rounded up to the test clock's step), then the delay in ticks
    first_tick_ms = LiveConfig.start_slack_ms + 1
    assert v["first_frame_ms"] == pytest.approx(first_tick_ms + 40 * (2 + opts.processing_frames), abs=0.01)
    assert v["throughput_fps"] == pytest.approx(f["rendered"] / v["wall_s"], rel=0.02)


@pytest.mark.parametrize("lead, wait", [(34, 34), (10, 50)])
def test_a_block_waits_for_the_first_tick_at_least_jitter_ms_after_it_came(virtual, backend, portrait, lead, wait):
    """The talker's blocks arrive ``lead_ms`` before a tick: one that came 34 ms before goes with that tick (the
    30 ms jitter buffer has passed), one that came 10 ms before waits for the next."""
    clock, harness = virtual
    assert LiveConfig.jitter_ms == 30
    _, v = measure(DelayedBackend(backend, clock), portrait, harness, talker_lead_ms=lead)
    w = v["latency_ms"]["input_wait"]
    assert w["p50"] == pytest.approx(wait, abs=0.01) and w["max"] == pytest.approx(wait, abs=0.01)
    assert v["frames"]["underruns"] == 0


def test_compute_too_slow_for_the_clock_is_reported_with_its_cost(virtual, backend, portrait):
    clock, harness = virtual
    slow = DelayedBackend(backend, clock, denoise_ms=100.0)  # 110 ms a frame against a 40 ms tick
    opts, v = measure(slow, portrait, harness, processing_frames=3)  # inside a 3-tick budget: some pictures fit
    f = v["frames"]
    assert f["skipped"] > 20 and f["rendered"] > 5  # the drop policy engaged, the face still moves
    assert f["fresh"] < f["speaking"] and f["repeated"] > 0
    assert v["generated_fps_while_speaking"] == pytest.approx(25 * f["fresh"] / f["speaking"], abs=0.01)
    assert v["stages_ms"]["unet"]["mean"] == pytest.approx(100.0, abs=0.01)
    assert v["stages_ms"]["frame"]["mean"] == pytest.approx(110.0, abs=0.01)
    # the output clock keeps its pace and its latency; the shown picture gets older instead
    assert v["fps"] == pytest.approx(25.0, abs=0.01)
    assert v["latency_ms"]["e2e"]["max"] == pytest.approx(v["latency_ms"]["e2e"]["p50"], abs=0.01)
    assert v["latency_ms"]["picture_e2e"]["p95"] > v["latency_ms"]["e2e"]["p95"]
    assert v["av"]["picture_lag_ms"]["max"] >= 40
    report = build_report(opts, [v], None, timed=True)
    verdict = report["verdict"]
    fps = verdict["checks"]["generated_fps"]
    assert verdict["met"] is False and fps["ok"] is False
    assert fps["miss_by"] == pytest.approx(25 - v["generated_fps_while_speaking"], abs=0.01)
    assert verdict["costliest_stage"] == "unet" and verdict["costliest_stage_ms"] == pytest.approx(100.0)
    assert "unet" in verdict["summary"] and "new pictures/s" in verdict["summary"]
    assert "fewer --steps" in verdict["summary"]  # and what to try


def test_a_verdict_that_misses_on_the_speech_encoder_points_to_the_model_without_one():
    from facecast.streaming.benchmark.stream_bench import _summary_line

    check = {"target": 25.0, "measured": 10.3, "ok": False, "miss_by": 14.7}
    result = {
        "checks": {"generated_fps": check},
        "frame_ms": 33.0,
        "budget_ms": 40.0,
        "costliest_stage": "features",
        "costliest_stage_ms": 17.6,
        "e2e_parts_p50_ms": None,
    }
    assert "--model logmel" in _summary_line(result, 1)


@pytest.mark.parametrize("worker", [WORKER_OWN, WORKER_SHARED])
def test_two_sessions_run_two_engines_on_one_backend(virtual, backend, portrait, worker):
    clock, harness = virtual
    slow = DelayedBackend(backend, clock)
    _, v = measure(slow, portrait, harness, sessions=2, worker=worker)
    assert v["sessions"] == 2 and len(v["per_session"]) == 2
    if worker == WORKER_OWN:
        assert len(slow.model_threads) == 2  # each engine's own model thread called the one shared backend
    else:
        assert len(slow.model_threads) == 1  # one worker thread served both engines' frames
        # the engines tick together and the worker gathers each tick's work, so nearly every UNet call had both
        # frames (a round that started before the other engine's tick was reported would hold one)
        batches = slow.denoise_batches
        assert max(batches) == 2 and batches.count(2) >= 0.9 * len(batches)
    for session in v["per_session"]:
        assert session["frames"]["rendered"] > 50 and session["frames"]["skipped"] == 0
        assert session["stages_ms"]["unet"]["mean"] == pytest.approx(DENOISE_MS, abs=0.01)
    assert v["frames"]["rendered"] == sum(s["frames"]["rendered"] for s in v["per_session"])
    assert v["latency_ms"]["e2e"]["n"] == sum(s["latency_ms"]["e2e"]["n"] for s in v["per_session"])


def test_cold_start_counts_load_avatar_and_warm_up(virtual, backend, portrait):
    clock, harness = virtual
    audio = speech_like(4.0)
    opts = options()
    cold = asyncio.run(
        cold_start(DelayedBackend(backend, clock), "torch", portrait, audio, opts, harness, 1500.0, 700.0)
    )
    # the first tick (start_slack_ms, rounded up to the test clock's step) + lookahead + budget: frame 0 goes out
    first_tick_ms = LiveConfig.start_slack_ms + 1 + 40 * (2 + opts.processing_frames)
    assert cold["start_to_first_frame_ms"] == pytest.approx(first_tick_ms, abs=0.01)
    assert cold["first_frame_ms"] == pytest.approx(1500.0 + 700.0 + cold["warmup_ms"] + first_tick_ms, abs=0.1)
    assert cold["first_generated_ms"] is not None and cold["first_generated_ms"] >= 160


def test_frame_index_stamp_survives_vp8():
    """The WebRTC client reads each picture's index from a stripe of cells; noise around it must not hide it."""
    rng = np.random.default_rng(0)
    encoder, decoder = Vp8Encoder(), Vp8Decoder()
    for n in (0, 1, 4097, 65535):
        image = stamp_index(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), n)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = n * 3600, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=True)
        data = b"".join(vp8_depayload(p) for p in payloads)
        (decoded,) = decoder.decode(JitterFrame(data=data, timestamp=0))
        assert read_stamp(decoded.to_ndarray(format="gray")) == n
    assert read_stamp(np.full((512, 512), 128, np.uint8)) is None  # no stamp: the check bits disagree


# ------------------------------------------------------------------------------------------ the command


DOC = REPO / "docs" / "benchmarks.md"
LEAVES = ({"n", "mean", "p50", "p95", "p99", "max"}, {"target", "measured", "ok", "miss_by"})  # summary, check


def documented_keys() -> set[str]:
    """Key paths of the JSON report as docs/benchmarks.md lists them (first column of the table in its "JSON
    report" section), with ``{a,b}`` expanded."""
    section = DOC.read_text().split("\n## JSON report\n", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for path in re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE):
        alternatives = [path]
        while any("{" in a for a in alternatives):
            a = next(a for a in alternatives if "{" in a)
            head, rest = a.split("{", 1)
            options, tail = rest.split("}", 1)
            alternatives.remove(a)
            alternatives += [head + o + tail for o in options.split(",")]
        keys.update(alternatives)
    return keys


def report_keys(value, path="", nulls=None) -> set[str]:
    """Key paths in the report: lists of objects as ``[]``, summaries and checks as documented leaves, stage
    names as ``<stage>``. Paths whose value is null go to ``nulls`` too."""
    if nulls is not None and value is None:
        nulls.add(path)
    if isinstance(value, dict) and value and set(value) in LEAVES:
        return {path}
    if isinstance(value, dict):
        keys = {path} if path and not path.endswith("[]") else set()
        for k, v in value.items():
            name = "<stage>" if path.endswith("stages_ms") else k
            keys |= report_keys(v, f"{path}.{name}" if path else name, nulls)
        return keys
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return {path} | report_keys(value[0], f"{path}[]", nulls)
    return {path}


def test_command_writes_json_with_the_documented_keys_and_a_png(tmp_path, tiny_model):
    parser = build_parser()
    wav = write_wav(tmp_path / "talk.wav", speech_like(2.0), 16000)
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    args = parser.parse_args(
        ["bench", "stream", "--model", str(tiny_model), "--audio", str(wav), "--fast", "--seconds", "1.2"]
        + ["--steps", "1,2", "--threads", "1", "--json", str(out), "--plot", str(png)]
    )
    args.func(args)
    report = json.loads(out.read_text())
    assert report["mode"] == "fast" and [v["name"] for v in report["variants"]] == [
        "torch steps=1 sessions=1",
        "torch steps=2 sessions=1",
    ]
    assert report["baseline"] == "torch steps=1 sessions=1"
    assert report["variants"][0]["ratios"]["frame_ms"] == 1.0 and report["variants"][1]["ratios"]["unet_ms"] > 0
    assert report["cold"]["load_ms"] > 0 and report["verdict"]["variant"] == report["baseline"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and report["plot"] == str(png)
    assert report["interrupt"]["interrupt_to_idle_frames"] == 1 and report["interrupt"]["ok"]  # the next frame idles
    nulls: set[str] = set()
    documented, present = documented_keys(), report_keys(report, nulls=nulls)
    assert present - documented == set(), "report keys missing from docs/benchmarks.md"
    # a documented key may be absent only inside an object that is null in this (--fast, no WebRTC) report
    invented = {k for k in documented - present if not any(k.startswith(n + ".") for n in nulls)}
    assert invented == set(), "docs/benchmarks.md documents keys the report does not have"


def test_plot_of_a_realtime_report(tmp_path, virtual, backend, portrait):
    clock, harness = virtual
    opts, v = measure(DelayedBackend(backend, clock), portrait, harness, seconds=1.0)
    report = build_report(opts, [v], None, timed=True)
    path = write_plot(report, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

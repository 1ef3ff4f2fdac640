"""Batching across sessions: dynamic-batch exports, and the shared model worker against sessions run alone."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import speech_like
from test_export import NO_SLIM, assert_backends_agree

from facecast.engine.config import ModelConfig
from facecast.export.backends.onnxruntime_backend import OnnxRuntimeBackend
from facecast.export.backends.torch_backend import TorchBackend
from facecast.export.onnx.export import PARITY_BATCH, export_model
from facecast.export.onnx.manifest import CONFIG, DYNAMIC_DIM, load_manifest
from facecast.streaming.live.clock import VirtualClock


@pytest.fixture(scope="module")
def dynamic_export(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("dynamic_export")
    export_model(tiny_model, out, options=NO_SLIM, log=lambda s: None)  # dynamic batch is the default
    return out


def test_the_default_export_takes_any_batch_in_one_call(tiny_model, dynamic_export):
    m = load_manifest(dynamic_export)
    assert m.dynamic_batch and m.batch == 1
    assert m.graphs["denoise"].inputs[0].shape == (DYNAMIC_DIM, 8, 32, 32)
    width = ModelConfig.load(dynamic_export / CONFIG).a2l.state_width  # the ensemble members' states side by side
    assert m.graphs["a2l_step"].inputs[3].shape == (1, DYNAMIC_DIM, width)  # GRU state (layers, B, width)
    for name, g in m.graphs.items():  # the export itself checked parity at the traced batch and at PARITY_BATCH
        assert any(k.endswith(f"@batch{PARITY_BATCH}") for k in g.checks["parity"]["outputs"]), name
    ort = OnnxRuntimeBackend(dynamic_export, threads=1)
    calls: list[str] = []
    run = ort._run
    ort._run = lambda graph, feeds: calls.append(graph) or run(graph, feeds)  # count calls, results unchanged
    torch_backend = TorchBackend(tiny_model)
    for batch in (1, 3):
        calls.clear()
        assert_backends_agree(torch_backend, ort, batch=batch, tol=1e-4)
        # one call per graph (a2l: one per frame of its 6), whatever the batch: nothing is cut or padded
        assert calls.count("denoise") == calls.count("decode") == calls.count("encode") == 1
        assert calls.count("a2l_step") == 6


def test_a_runtime_batch_limit_cuts_calls(dynamic_export, tiny_model):
    ort = OnnxRuntimeBackend(dynamic_export, threads=1)
    ort.max_batch = 2  # as TensorRT's optimisation profile does
    sizes: list[int] = []
    run = ort._run
    ort._run = lambda graph, feeds: sizes.append(len(feeds["noisy"])) or run(graph, feeds)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8, 32, 32), np.float32)
    args = [x, np.full(5, 999), x, x, x, rng.uniform(0, 1, (5, 3, 32, 32)).astype(np.float32)]
    args += [rng.uniform(64, 192, (5, 37, 2)).astype(np.float32), rng.standard_normal((5, 5, 320), np.float32)]
    out = ort.denoise(*args)
    ref = TorchBackend(tiny_model).denoise(*args)
    assert sizes == [2, 2, 1] and out.shape == ref.shape
    assert float(np.abs(out - ref).max() / np.abs(ref).max()) < 1e-4


def test_tensorrt_profiles_span_one_to_max_on_each_inputs_batch_axis(dynamic_export):
    from facecast.export.backends.tensorrt_backend import BatchProfile, profile_shapes
    from facecast.export.onnx.manifest import BATCH_AXES

    m = load_manifest(dynamic_export)
    shapes = profile_shapes(m.graphs["a2l_step"], BATCH_AXES["a2l_step"][0], BatchProfile(opt=4, max=8))
    assert shapes["mel_frames"] == ((1, 1, 320), (4, 1, 320), (8, 1, 320))
    w = ModelConfig.load(dynamic_export / CONFIG).a2l.state_width
    assert shapes["state"] == ((1, 1, w), (1, 4, w), (1, 8, w))  # the GRU state's batch is axis 1
    assert BatchProfile(4, 8).key() != BatchProfile(4, 16).key()
    with pytest.raises(ValueError):
        BatchProfile(opt=9, max=8)


# ------------------------------------------------------------------------------------------ the shared worker

CHUNK = 640  # one 40 ms block at 16 kHz, as the live engine feeds


def make_session(backend, portrait, i):
    from conftest import speech_like

    from facecast.engine.config import InferenceConfig
    from facecast.engine.pipeline import LipSyncSession

    rng = np.random.default_rng(100 + i)
    speaker = rng.standard_normal(256).astype(np.float32)
    session = LipSyncSession(backend, backend.cfg, portrait, speaker, InferenceConfig(steps=2, seed=i))
    return session, speech_like(0.8, seed=i)


def alone(backend, portrait, i, skip_chunks=()):
    """Session i fed block by block on its own, its frames' crops by index."""
    session, audio = make_session(backend, portrait, i)
    frames = []
    for c, start in enumerate(range(0, len(audio), CHUNK)):
        if c not in skip_chunks:
            frames += session.push_audio(audio[start : start + CHUNK])
    frames += session.finish()
    return {f.index: f.crop for f in frames}


def assert_same_frames(got, want):
    assert sorted(got) == sorted(want) and len(want) >= 15
    diff = np.stack([np.abs(got[n].astype(int) - want[n].astype(int)) for n in want])
    # batched and unbatched matmuls may round differently in the last float bit; that reaches a few pixels
    assert diff.max() <= 2 and diff.mean() < 0.01


@pytest.mark.parametrize("threads", [1, 3], ids=["in turn", "side by side"])
def test_sessions_batched_by_run_calls_give_the_frames_each_gives_alone(backend, portrait, threads):
    """One batched call per request kind; the sessions' own work in turn or on a pool of threads (the worker's
    ``session_threads``): each gets the frames it makes alone."""
    from concurrent.futures import ThreadPoolExecutor

    from facecast.engine.batching import run_calls

    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    sessions = [make_session(backend, portrait, i) for i in range(3)]
    calls: list[int] = []
    denoise = backend.denoise
    backend.denoise = lambda *a: calls.append(len(a[0])) or denoise(*a)
    try:
        got = [{} for _ in sessions]
        for start in range(0, len(sessions[0][1]), CHUNK):
            steps = [s.push_audio_steps(a[start : start + CHUNK]) for s, a in sessions]
            for g, o in zip(got, run_calls(backend, steps, pool=pool), strict=True):
                g.update({f.index: f.crop for f in o.value})
        for g, o in zip(got, run_calls(backend, [s.finish_steps() for s, _ in sessions], pool=pool), strict=True):
            g.update({f.index: f.crop for f in o.value})
    finally:
        backend.denoise = denoise
    assert max(calls) == 3  # the three sessions' frames went through the UNet together
    for i, g in enumerate(got):
        assert_same_frames(g, alone(backend, portrait, i))


def feed_through(lane, session, audio, chunks):
    return [lane.submit(session.push_audio_steps, audio[c * CHUNK : (c + 1) * CHUNK]) for c in chunks]


def collect(futures):
    out = {}
    for f in futures:
        out.update({fr.index: fr.crop for fr in f.result(timeout=60)})
    return out


def test_a_session_joins_and_one_leaves_mid_run_without_changing_the_others(backend, portrait):
    from facecast.streaming.live.model_worker import ModelWorker

    worker = ModelWorker(backend)
    sessions = [make_session(backend, portrait, i) for i in range(3)]
    n_chunks = -(-len(sessions[0][1]) // CHUNK)
    half = n_chunks // 2
    lanes = [worker.join(), worker.join()]  # sessions 0 and 1 start together
    futures = [feed_through(lanes[i], *sessions[i], range(half)) for i in range(2)]
    lanes.append(worker.join())  # session 2 joins halfway through the others
    futures.append(feed_through(lanes[2], *sessions[2], range(n_chunks)))
    futures[0] += feed_through(lanes[0], *sessions[0], range(half, n_chunks))
    futures[0].append(lanes[0].submit(sessions[0][0].finish_steps))
    futures[2].append(lanes[2].submit(sessions[2][0].finish_steps))
    lanes[1].shutdown(wait=True)  # session 1 leaves halfway
    assert_same_frames(collect(futures[0]), alone(backend, portrait, 0))
    assert_same_frames(collect(futures[2]), alone(backend, portrait, 2))
    got1 = collect(futures[1])  # what session 1 made before it left is what it makes alone
    want1 = alone(backend, portrait, 1)
    assert len(got1) >= 5 and set(got1) < set(want1)
    assert max(np.abs(got1[n].astype(int) - want1[n].astype(int)).max() for n in got1) <= 2
    for lane in (lanes[0], lanes[2]):
        lane.shutdown(wait=True)
    assert worker.counters.largest_round == 3 and worker.sessions == 0


def test_one_sessions_corrupt_audio_does_not_disturb_the_others(backend, portrait):
    from facecast.engine.errors import AudioError
    from facecast.streaming.live.model_worker import ModelWorker

    worker = ModelWorker(backend)
    sessions = [make_session(backend, portrait, i) for i in range(3)]
    lanes = [worker.join() for _ in sessions]
    n_chunks = -(-len(sessions[0][1]) // CHUNK)
    bad_chunk = 5
    futures: list[list] = [[] for _ in sessions]
    for c in range(n_chunks):
        for i, ((session, audio), lane) in enumerate(zip(sessions, lanes, strict=True)):
            block = audio[c * CHUNK : (c + 1) * CHUNK]
            if i == 1 and c == bad_chunk:
                block = np.full(CHUNK, np.nan, np.float32)  # a corrupt PCM chunk, decoded to garbage
            futures[i].append(lane.submit(session.push_audio_steps, block))
    for (session, _), lane, f in zip(sessions, lanes, futures, strict=True):
        f.append(lane.submit(session.finish_steps))
    with pytest.raises(AudioError, match="NaN or infinite"):
        futures[1][bad_chunk].result(timeout=60)
    del futures[1][bad_chunk]
    for i in (0, 2):
        assert_same_frames(collect(futures[i]), alone(backend, portrait, i))
    # the session that got it refused that chunk and went on as if it had never been sent
    assert_same_frames(collect(futures[1]), alone(backend, portrait, 1, skip_chunks={bad_chunk}))
    for lane in lanes:
        lane.shutdown()


def test_a_failing_model_call_reaches_only_its_session(backend):
    from facecast.engine.batching import A2LCall, run_calls

    def steps(mel):
        state = np.zeros(backend.a2l_state_shape(), np.float32)
        disp, _ = yield A2LCall(mel, np.zeros((1, 256), np.float32), np.full((1, 68, 2), 128, np.float32), state)
        return disp.shape

    good = np.zeros((1, 2, 320), np.float32)
    bad = np.zeros((1, 2, 321), np.float32)  # a shape the model cannot take
    ok1, broken, ok2 = run_calls(backend, [steps(good), steps(bad), steps(good)])
    assert ok1.value == ok2.value == (1, 2, 37, 2) and ok1.error is None
    assert broken.error is not None and broken.value is None


def test_the_worker_serves_lanes_in_turn_when_it_falls_behind(backend):
    """Fairness: a backlog is worked off one job per lane per round, never one lane's queue before the others."""
    import threading

    from facecast.streaming.live.model_worker import ModelWorker

    worker = ModelWorker(backend)
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def busy() -> None:
        started.set()
        release.wait()

    blocker, *lanes = [worker.join() for _ in range(4)]
    blocker.submit(busy)
    assert started.wait(10)  # the worker is busy: every lane now queues a backlog of 4 jobs
    futures = [lane.submit(order.append, f"{i}:{j}") for i, lane in enumerate(lanes) for j in range(4)]
    release.set()
    for f in futures:
        f.result(timeout=10)
    # round r runs job r of every lane, whatever order the lanes queued in
    assert [sorted(order[3 * r : 3 * r + 3]) for r in range(4)] == [[f"{i}:{r}" for i in range(3)] for r in range(4)]
    firsts = {order[3 * r][0] for r in range(4)}
    assert len(firsts) > 1  # and the lane served first rotates
    for lane in (blocker, *lanes):
        lane.shutdown()
    assert worker.sessions == 0


def test_the_sessions_sweep_finds_the_largest_k_and_the_batched_ratio():
    from facecast.streaming.benchmark.sessions_sweep import sessions_sweep, worker_modes

    def variant(k, worker, throughput, met):
        return {
            "name": f"ort k={k} {worker}",
            "backend": "onnxruntime",
            "steps": 1,
            "sessions": k,
            "worker": worker,
            "fps": 25.0,
            "generated_fps_while_speaking": 25.0 if met else 12.0,
            "throughput_fps": throughput,
            "latency_ms": {"e2e": {"p95": 150.0}, "client_e2e": None},
            "memory": {"rss_per_session_mb": 40.0},
            "frames": {"skipped": 0 if met else 30},
            "verdict": {"met": met},
        }

    variants = [variant(1, "shared", 25, True), variant(2, "shared", 50, True), variant(2, "own", 40, False)]
    variants += [variant(4, "shared", 60, False), variant(4, "own", 30, False)]
    (sweep,) = sessions_sweep(variants)
    assert sweep["largest_k_meeting_targets"] == 2
    assert [r["batched_vs_own_thread_throughput"] for r in sweep["per_k"]] == [None, 1.25, 2.0]
    assert sweep["per_k"][1]["own_thread"]["new_pictures_per_s_per_session"] == 12.0
    assert worker_modes(1, ("shared", "own")) == ("shared",) and worker_modes(4, ("own",)) == ("own",)


class ComputeBoundModel:
    """UNet and decoder that cost ``frame_ms`` per frame in the batch, as on a CPU (batching saves nothing)."""

    def __init__(self, cfg, clock: VirtualClock, frame_ms: float) -> None:
        self.cfg, self.clock, self.frame_ms = cfg, clock, frame_ms

    def denoise(self, x, *rest):
        self.clock.advance_to(self.clock.now() + len(x) * self.frame_ms / 1000)
        return np.zeros_like(x)

    def decode(self, latents):
        return np.zeros((len(latents), 3, 8, 8), np.float32)


def test_an_overloaded_worker_renders_what_fits_and_shares_it_fairly(backend):
    """Three sessions, each due a frame every round with a 50 ms deadline, frames costing 30 ms each: a round of
    three would make every frame late. Each round renders only what still meets its deadline (one frame), the
    others are answered NOT_RENDERED, and the sessions take turns."""
    from facecast.engine.batching import NOT_RENDERED, FrameJob
    from facecast.engine.sampler import DDIMSchedule
    from facecast.streaming.live.model_worker import ModelWorker

    clock = VirtualClock(100.0)
    model = ComputeBoundModel(backend.cfg, clock, frame_ms=30.0)
    worker = ModelWorker(model, clock=clock)
    schedule = DDIMSchedule.from_config(backend.cfg.l2v, 1)
    row, c = 4, 2
    latent = np.zeros((1, c, 8, 8), np.float32)

    def frame_steps(session: int):
        job = FrameJob(
            0, 0, np.zeros((68, 2)), latent, latent, latent, latent, latent, np.zeros((1, 37, 2)),
            np.zeros((1, 5, 320)), schedule, row, deadline=clock.now() + 0.050,
        )  # fmt: skip
        result = yield job
        return session, result is not NOT_RENDERED

    lanes = [worker.join() for _ in range(3)]
    rounds = 12
    outcomes = []
    for _ in range(rounds):  # one round at a time, every session with a frame due in each
        with worker.cond:  # all three before the worker takes a round (it could start on the first on a busy CPU)
            futures = [lane.submit(frame_steps, i) for i, lane in enumerate(lanes)]
        outcomes.append([f.result(timeout=30) for f in futures])
    for lane in lanes:
        lane.shutdown()
    rendered = [[s for s, ok in r if ok] for r in outcomes]
    assert len(rendered[0]) == 3  # nothing measured yet: the first round renders everything and measures
    assert all(len(r) == 1 for r in rendered[1:])  # then only what meets the deadline: 30 ms fits 50, 60 does not
    counts = [sum(s in r for r in rendered[1:]) for s in range(3)]
    assert max(counts) - min(counts) <= 1 and sum(counts) == rounds - 1
    assert sorted({r[0] for r in rendered[1:4]}) == [0, 1, 2]  # every session is served before anyone twice
    assert worker.counters.frames_not_rendered == 2 * (rounds - 1)


class TimedModel:
    """The real (tiny) networks, with each frame of a UNet call costing ``frame_ms`` on the virtual clock."""

    def __init__(self, backend, clock: VirtualClock, frame_ms: float) -> None:
        self.inner, self.clock, self.frame_ms = backend, clock, frame_ms

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def denoise(self, x, *rest):
        self.clock.advance_to(self.clock.now() + len(x) * self.frame_ms / 1000)
        return self.inner.denoise(x, *rest)


@pytest.mark.parametrize("sessions", [2, 4])
def test_overloaded_sessions_on_a_shared_worker_get_even_shares(backend, portrait, sessions):
    """K live sessions (each with the engine's RenderPolicy) on one worker, frames costing 30 virtual ms against
    40 ms ticks: the worker can make 1-2 frames a tick, far fewer than K. Every session must get about the same
    number of pictures, and together about what the worker can make. (With each policy predicting from its own
    render time, which on a shared worker is a whole round's, 120 ms here, every frame was predicted late and
    only probes were rendered: 2/2/2/2 frames in 60 ticks at K=4, the worker idle.)"""
    from facecast.engine.config import InferenceConfig
    from facecast.engine.pipeline import SKIPPED, LipSyncSession
    from facecast.streaming.config import LiveConfig
    from facecast.streaming.live.clock import FrameClock
    from facecast.streaming.live.model_worker import ModelWorker
    from facecast.streaming.live.render_policy import RenderPolicy

    live, fps, ticks = LiveConfig(), backend.cfg.audio.fps, 60
    clock = VirtualClock(100.0)
    model = TimedModel(backend, clock, frame_ms=30.0)
    worker = ModelWorker(model, clock=clock)
    frames = FrameClock(worker.align_start(clock.now(), fps), fps)
    audio = speech_like(ticks / fps + 0.1, seed=7)
    delay = backend.cfg.a2l.lookahead_frames + live.processing_frames
    lanes, engines, speaker = [], [], np.zeros(256, np.float32)
    for _ in range(sessions):
        lane = worker.join()
        policy = RenderPolicy.for_worker(worker, frames, clock, delay, live.max_late_frames, live.probe_every_frames)
        engines.append(
            LipSyncSession(model, backend.cfg, portrait, speaker, InferenceConfig(live.steps), render_policy=policy)
        )
        lane.ticked(frames.time_of(-1))  # every lane is on the grid from the start: the worker gathers them
        lanes.append(lane)
    rendered = [0] * sessions
    for k in range(ticks):  # the engines' ticks in lockstep: tick k's work is all in before the worker runs it
        clock.advance_to(frames.time_of(k))
        futures = []
        for lane, session in zip(lanes, engines, strict=True):
            futures.append(lane.submit(session.push_audio_steps, audio[640 * k : 640 * (k + 1)]))
            lane.ticked(frames.time_of(k))
        for i, f in enumerate(futures):
            rendered[i] += sum(SKIPPED not in fr.timings_ms for fr in f.result(timeout=60))
    for lane in lanes:
        lane.shutdown()
    made = ticks - backend.cfg.a2l.lookahead_frames
    assert sum(rendered) >= made  # at least one frame a tick on average: the worker is kept busy
    assert sum(rendered) < sessions * made * 0.75  # and it really was overloaded
    assert max(rendered) - min(rendered) <= max(2, 0.1 * max(rendered)), rendered

"""The live engine on virtual time: sync, drop policy, equivalence with offline generation, sources.

Nothing here depends on how fast this machine is: the engine runs on VirtualClock, whose time moves only when the
test moves it, and "slow compute" is simulated by a backend that waits for virtual time to pass.
"""

import asyncio
import dataclasses
import threading

import numpy as np
import pytest
from conftest import ASSETS, speech_like, until, write_wav
from scipy.signal import resample_poly

from facecast.engine import media
from facecast.engine.config import InferenceConfig
from facecast.engine.errors import AudioError, InputError
from facecast.engine.generate import run_session
from facecast.engine.pipeline import SKIPPED, LipSyncSession
from facecast.streaming.config import LiveConfig, PushConfig
from facecast.streaming.live.audio_out import AudioOut
from facecast.streaming.live.clock import FrameClock, VirtualClock
from facecast.streaming.live.display import Display
from facecast.streaming.live.engine import EngineObserver, LiveEngine
from facecast.streaming.live.mixer import Mixer, clean_audio
from facecast.streaming.live.render_policy import RenderPolicy
from facecast.streaming.live.sources import FileSource, MicrophoneSource, PushDecoder
from facecast.streaming.live.speech_gate import SpeechGate

ZERO_SPEAKER = np.zeros(256, np.float32)


async def tick_lockstep(engine: LiveEngine, clock: VirtualClock, ticks: int, out: list | None = None, queue=None):
    """Advance virtual time tick by tick; before each tick the model thread finishes all its work (so compute
    takes no virtual time and nothing is ever late). Collects the engine's output frames into ``out``."""
    for _ in range(ticks):
        await engine.flush()
        k = engine.counters.ticks
        clock.advance_to(engine.frames.time_of(k))
        for _ in range(10_000):
            if engine.counters.ticks >= k + 1:
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError("the ticker did not tick")
        for _ in range(3):  # sources woken at the same virtual time run too
            await asyncio.sleep(0)
        while queue is not None and not queue.empty():
            out.append(queue.get_nowait())


async def talking_engine(backend, portrait, speech: np.ndarray):
    """A started engine on virtual time with ``speech`` waiting in one source: (engine, clock, queue, source)."""
    clock = VirtualClock()
    engine = LiveEngine(backend, portrait, live_config(), clock=clock)
    queue = engine.subscribe()
    await engine.start()
    buf = engine.open_source("talker", live=False)
    buf.write(speech)
    return engine, clock, queue, buf


@pytest.fixture(scope="module")
def speech_clip():
    """1.6 s of the bundled speech from its second block on (block 0 is below the speech threshold), with one
    400 ms pause inside: one utterance for the engine when its hangover is longer than the pause."""
    speech = media.load_audio(ASSETS / "speech.wav")
    return speech[640 : 640 * 41]


class Recorder(EngineObserver):
    """Every event of one engine, in order."""

    def __init__(self) -> None:
        self.taken: list[int] = []
        self.blocks: list[np.ndarray] = []
        self.made: list = []
        self.out: list = []
        self.dropped: list[tuple[int, int]] = []

    def audio_taken(self, k, block_16k):
        self.taken.append(k)
        self.blocks.append(block_16k)

    def frames_made(self, frames):
        self.made.extend(frames)

    def frame_out(self, out):
        self.out.append(out)

    def frames_dropped(self, n, count):
        self.dropped.append((n, count))


def live_config(**kw) -> LiveConfig:
    return LiveConfig(**{"speaker_seconds": 0, **kw})


# ------------------------------------------------------------------------------------------ clock and sync (pure)


def test_frame_clock_has_no_drift_over_an_hour():
    fc = FrameClock(start_s=12345.678)
    hour = 25 * 3600
    n = np.arange(hour + 1)
    assert fc.video_pts(hour) == 90_000 * 3600 and fc.audio_pts(hour) == 48_000 * 3600
    assert all(fc.video_pts(int(i)) * 48_000 == fc.audio_pts(int(i)) * 90_000 for i in n[::997])  # same media time
    assert abs(fc.time_of(hour) - fc.start_s - 3600.0) < 1e-6
    assert all(fc.frame_at(fc.time_of(int(i))) == i for i in n)  # every tick maps back to its own counter
    accumulated = fc.start_s
    for _ in range(hour):
        accumulated += fc.frame_s
    assert abs(accumulated - fc.time_of(hour)) > abs(fc.time_of(hour) - fc.start_s - 3600.0)  # why counters


def test_audio_out_blocks_join_into_the_whole_signal_at_48k():
    audio = np.clip(speech_like(1.0, seed=5) * 2, -1, 1)
    out = AudioOut(640, keep_frames=5)
    blocks = []
    for k in range(25):
        out.push(k, audio[640 * k : 640 * (k + 1)])
        if k >= 1:
            blocks.append(out.block_48k(k - 1))  # block n needs n + 1 for its right edge, as in the engine
    joined = np.concatenate(blocks).astype(np.int32)
    whole = np.round(np.clip(resample_poly(audio.astype(np.float64), 3, 1), -1, 1) * 32767).astype(np.int32)
    assert all(len(b) == 1920 for b in blocks)
    assert np.abs(joined[100:] - whole[100 : len(joined)]).max() <= 1  # no seams between blocks


def test_audio_out_filter_and_upsampling_are_resample_polys_own():
    from scipy.signal import firwin

    from facecast.streaming.live.audio_out import upsample

    np.testing.assert_allclose(AudioOut.FILTER, firwin(61, 1 / 3, window=("kaiser", 5.0)), rtol=0, atol=1e-15)
    x = np.random.default_rng(2).uniform(-0.5, 0.5, 672)
    np.testing.assert_allclose(upsample(x, AudioOut.UP, AudioOut.FILTER), resample_poly(x, AudioOut.UP, 1), atol=1e-12)


def test_render_policy_skips_frames_that_would_be_late_and_probes_again():
    clock = VirtualClock(100.0)
    fc = FrameClock(100.0)
    policy = RenderPolicy(fc, clock, delay_frames=4, max_late_frames=1, probe_every_frames=5)
    assert policy.should_render(0)  # unknown cost: optimistic
    policy.rendered(0.150)  # 150 ms a frame against a 120 ms window after the frame's audio (3 ticks)
    clock.advance_to(fc.time_of(2))  # frame 0's lookahead audio has just come in
    decisions = [policy.should_render(0) for _ in range(10)]
    assert decisions == [False] * 4 + [True] + [False] * 4 + [True]  # probing keeps the estimate current
    policy.rendered(0.010)
    policy.rendered(0.010)
    assert policy.render_s < 0.150 and policy.should_render(0)


def test_render_policy_on_a_worker_predicts_with_its_own_time_until_the_worker_has_measured_a_frame():
    """A worker measures only the frames it chooses among (L2V calls); a warp-only session's frames are predicted
    by their own render time, or every frame would look free and be rendered even when it can only come late."""
    clock, fc = VirtualClock(100.0), FrameClock(100.0)
    worker_cost = [0.0]
    policy = RenderPolicy(fc, clock, 4, 1, probe_every_frames=50, frame_cost_s=lambda: worker_cost[0])
    policy.rendered(0.150)
    clock.advance_to(fc.time_of(2))
    assert policy.predicted_s() == 0.150 and not policy.should_render(0)
    worker_cost[0] = 0.010  # the worker's measured share of a round, once it has one, is what counts
    assert policy.predicted_s() == 0.010 and policy.should_render(0)


def test_display_shows_frames_at_most_max_late_ticks_late():
    from facecast.engine.pipeline import Frame

    def frame(i):
        return Frame(i, np.zeros((2, 2, 3), np.uint8), np.zeros((68, 2), np.float32), 0)

    d = Display(max_late_frames=1)
    d.add(frame(10))
    assert d.pick(10).index == 10
    assert d.pick(11) is None  # nothing ready: the engine repeats the last picture
    d.add(frame(11))  # one tick late
    assert d.pick(12).index == 11 and d.counters.late == 1
    d.add(frame(12))
    d.add(frame(13))
    d.add(frame(14))
    assert d.pick(15).index == 14  # the newest usable; 12 is too old, 13 is superseded
    assert d.counters.dropped == 2 and d.ready == {}


def test_speech_gate_feeds_the_hangover_and_fades_both_ends():
    gate = SpeechGate(speech_rms=0.01, hangover_frames=3, fade_frames=3)
    rms = [0, 0, 0.2, 0.2, 0, 0.3, 0, 0, 0, 0, 0]
    steps = [gate.step(k, r) for k, r in enumerate(rms)]
    assert [s.feed for s in steps] == [False, False, True, True, True, True, True, True, True, False, False]
    assert steps[2].begin and steps[8].end and not any(s.end for s in steps[:8])
    assert gate.segment_of(2) == (2, 9) and gate.segment_of(9) is None
    alphas = [gate.alpha(n) for n in range(11)]
    assert alphas[:2] == [0, 0] and alphas[2:6] == [0.25, 0.5, 0.75, 1.0]
    assert alphas[6:] == [0.75, 0.5, 0.25, 0.0, 0.0]


def test_clipped_and_broken_samples_are_cleaned_not_refused():
    x = np.array([0.5, 3.0, -7.0, np.nan, np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(clean_audio(x), [0.5, 1.0, -1.0, 0.0, 1.0, -1.0])


def test_jitter_buffer_plays_a_block_jitter_ms_after_it_arrived():
    clock = VirtualClock(start=0.0)
    mixer = Mixer(live_config(jitter_ms=30), 16_000, 640, clock.now)
    mic = mixer.open("mic", live=True)
    mic.write(np.full(320, 0.1, np.float32))  # the microphone's 20 ms blocks
    clock.t = 0.020
    mic.write(np.full(320, 0.1, np.float32))
    clock.t = 0.049
    assert not mixer.take(640).any()  # the second block, which this take needs, came 29 ms ago
    clock.t = 0.050
    assert mixer.take(640).all()
    tts = mixer.open("tts", live=False)
    tts.write(np.full(16_000, 0.2, np.float32))  # a burst: 30 ms of audio already waits behind the block
    assert np.allclose(mixer.take(640), 0.2) and mixer.last_take.audible


def test_jitter_buffer_protects_by_jitter_ms_at_any_phase_and_block_size():
    """Once a source plays, its next block may come jitter_ms late without a hole in the audio, whatever the size of
    its blocks and their phase against the ticks; and it does not wait a whole tick longer than it must."""
    for block_ms in (10, 20, 40):
        for phase_ms in range(0, 40, 3):
            clock = VirtualClock(start=0.0)
            mixer = Mixer(live_config(jitter_ms=30), 16_000, 640, clock.now)
            buf = mixer.open("sender", live=True)
            arrivals, started = [], None
            for ms in range(0, 400):  # a millisecond grid: the sender writes on its phase, the ticks on theirs
                clock.t = ms / 1000
                if ms >= phase_ms and (ms - phase_ms) % block_ms == 0:
                    buf.write(np.full(16 * block_ms, 0.1, np.float32))
                    arrivals.append(ms)
                if ms % 40 == 0 and started is None and mixer.take(640).any():
                    started = ms
            assert started is not None
            newest = max(a for a in arrivals if a <= started and (a - phase_ms) // block_ms < 640 // (16 * block_ms))
            slack = started - newest  # how long ago the newest block of the first take came
            assert 30 <= slack < 30 + 40, (block_ms, phase_ms, slack)


def test_mixer_trims_a_live_backlog_to_a_block_and_the_jitter_buffer():
    mixer = Mixer(live_config(jitter_ms=60, live_backlog_ms=300), 16_000, 640)
    live = mixer.open("mic", live=True)
    live.write(np.full(16000, 0.1, np.float32))  # a second at once: a drifting device, trimmed
    assert live.buffered_samples == 640 + 960 and mixer.stats()["audio_dropped_ms"] == 900
    assert mixer.take(640).all()  # enough to play at once


# ------------------------------------------------------------------------------------------ the engine, lockstep


def test_streaming_a_file_gives_the_offline_frames(tmp_path, backend, portrait, speech_clip):
    wav = write_wav(tmp_path / "speech.wav", speech_clip, 16000)
    audio = media.load_audio(wav)  # what offline generation reads
    offline = []
    session = LipSyncSession(backend, backend.cfg, portrait, ZERO_SPEAKER, InferenceConfig(steps=1))
    run_session(session, audio, offline.append)

    async def main():
        clock = VirtualClock()
        engine = LiveEngine(backend, portrait, live_config(hangover_frames=12), clock=clock)
        watcher = Recorder()
        engine.observe(watcher)  # records what each tick consumed, every frame made and every frame out
        queue = engine.subscribe()
        await engine.start()
        source = asyncio.create_task(FileSource(engine, wav, loop=False).run())
        # It loads the file in a thread first, which takes longer the busier the machine: its first block is
        # written at virtual time 0 only if the ticks wait for it.
        await until(lambda: engine.mixer.sources, "the file source to open")
        out = []
        await tick_lockstep(engine, clock, 100, out, queue)
        assert source.done() and not engine.mixer.sources  # played out and closed
        await engine.stop()
        return engine, watcher, out

    engine, watcher, out = asyncio.run(main())
    inputs = watcher.blocks
    assert [o.index for o in out] == list(range(100 - engine.delay_frames))
    assert watcher.taken == list(range(100)) and [o.index for o in watcher.out] == [o.index for o in out]
    assert all(a is b for a, b in zip(watcher.out, out, strict=True))  # the very frames subscribers get
    assert engine.delay_frames == backend.cfg.a2l.lookahead_frames + LiveConfig().processing_frames
    live = {o.index: o.generated for o in out if o.generated is not None}
    start = min(live)
    assert engine.gate.segments[0][0] == start  # one utterance, from the file's first block
    assert engine.counters.skipped == 0 and engine.display.counters.dropped == 0
    made = {f.index: f for f in watcher.made}  # on the model thread, global indices, none skipped here
    assert sorted(made) == list(range(start, start + len(made))) and set(live) <= set(made)
    for j, ref in enumerate(offline):
        got = live[start + j]
        np.testing.assert_allclose(got.landmarks, ref.landmarks, atol=1e-3)
        assert np.abs(got.crop.astype(int) - ref.crop.astype(int)).max() <= 2
        assert np.abs(got.image.astype(int) - ref.image.astype(int)).max() <= 2
    # A/V: each output frame carries the picture and the sound of the same 40 ms of input.
    signal = np.concatenate(inputs).astype(np.float64)
    sound = np.round(np.clip(resample_poly(signal, 3, 1), -1, 1) * 32767).astype(np.int32)
    for o in out:
        assert o.video_pts == o.index * 3600 and o.audio_pts == o.index * 1920
        assert np.abs(o.audio_48k.astype(np.int32) - sound[1920 * o.index : 1920 * (o.index + 1)]).max() <= 1
        if o.generated is not None:
            assert o.generated.index == o.index
    speech_frames = [o for o in out if o.alpha == 1.0]
    assert len(speech_frames) > 30 and all(o.image is o.generated.image for o in speech_frames)


def test_silence_shows_the_avatar_and_runs_no_model(backend, portrait):
    async def main():
        clock = VirtualClock()
        engine = LiveEngine(backend, portrait, live_config(), clock=clock)
        queue = engine.subscribe()
        await engine.start()
        buf = engine.open_source("silence", live=False)
        buf.write(np.zeros(16000, np.float32))
        buf.write(np.full(3200, 0.003, np.float32))  # room noise below the speech threshold
        out = []
        await tick_lockstep(engine, clock, 40, out, queue)
        await engine.stop()
        return engine, out

    engine, out = asyncio.run(main())
    assert engine.counters.rendered == 0 and engine.counters.skipped == 0 and not engine.gate.segments
    assert all(np.array_equal(o.image, portrait.frames[0]) and o.generated is None for o in out[:20])
    assert not any(o.audio_48k.any() for o in out[:20])


def test_speaker_embedding_comes_from_the_first_two_seconds_of_speech(backend, portrait):
    calls = []

    def fake_embedding(audio):
        calls.append(len(audio))
        return np.full(256, 0.0625, np.float32)

    async def main():
        clock = VirtualClock()
        config = LiveConfig(speaker_seconds=2.0, hangover_frames=10)
        engine = LiveEngine(backend, portrait, config, clock=clock, speaker_fn=fake_embedding)
        await engine.start()
        buf = engine.open_source("talker", live=False)
        buf.write(speech_like(1.5, seed=1))
        await tick_lockstep(engine, clock, 30)
        before = engine.runner.session.speaker.copy()
        buf.write(speech_like(1.5, seed=2))
        await tick_lockstep(engine, clock, 60)
        after = engine.runner.session.speaker.copy()
        await engine.stop()
        return before, after, engine.stats()

    before, after, stats = asyncio.run(main())
    assert not before.any() and calls == [32000] and np.all(after == 0.0625) and stats["speaker_set"]


class SlowBackend:
    """The tiny backend, but each denoise call takes 100 ms of virtual time: too slow for every frame."""

    def __init__(self, inner, clock: VirtualClock, seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds
        self.name, self.cfg = "slow", inner.cfg

    def denoise(self, *args):
        self.clock.block_for(self.seconds)
        return self.inner.denoise(*args)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def drive_on_virtual_time(engine, clock, queue, out, seconds: float, on_step=None) -> None:
    """Move virtual time in 10 ms steps; the ticker and the (blocked) model thread each run when their time comes,
    exactly as on a real clock, but independent of this machine's speed. ``on_step(t)`` runs before each step."""
    for step in range(round(100 * seconds)):
        if on_step is not None:
            on_step(step / 100)
        clock.advance_to(engine.frames.start_s + step / 100)
        for _ in range(20_000):  # bounded: a hang fails the test instead of blocking the run
            await asyncio.sleep(0.0005)
            due = engine.frames.frame_at(clock.now()) + 1
            worker_quiet = engine.jobs.backlog == 0 or clock.blocked == 1
            if engine.counters.ticks >= due and worker_quiet:
                break
        else:
            raise AssertionError("the engine did not settle")
        while not queue.empty():
            out.append(queue.get_nowait())


class SlowA2L(SlowBackend):
    """The tiny backend, but each A2L call (which no skipped frame saves) takes ``seconds`` of virtual time."""

    def denoise(self, *args):
        return self.inner.denoise(*args)

    def a2l(self, *args, **kwargs):
        self.clock.block_for(self.seconds)
        return self.inner.a2l(*args, **kwargs)


@pytest.mark.parametrize("catch_up", [True, False], ids=["catches up", "never catches up"])
def test_a_model_too_slow_for_its_audio_drops_its_backlog_and_renders_again_once_it_can(backend, portrait, catch_up):
    """Work that no skip saves (A2L, the speech encoder) slower than the audio: without catching up, the blocks
    pile up and every later frame is late; catching up keeps the backlog bounded, and once the model is fast again
    new pictures come back within a few ticks, not after the whole backlog."""

    async def main():
        clock = VirtualClock()
        slow = SlowA2L(backend, clock, seconds=0.060)  # 60 ms per 40 ms block of audio
        config = live_config(hangover_frames=40, catch_up_frames=2 if catch_up else None)
        engine = LiveEngine(slow, portrait, config, clock=clock)
        queue = engine.subscribe()
        await engine.start()
        engine.open_source("talker", live=False).write(speech_like(6.0, seed=5))
        out: list = []
        fast_from_s = 3.0

        def speed_up(t: float) -> None:
            if t >= fast_from_s:
                slow.seconds = 0.020  # faster than the audio again, but a backlog drains only 20 ms a tick

        try:
            await drive_on_virtual_time(engine, clock, queue, out, seconds=5.0, on_step=speed_up)
        finally:
            clock.release()
            await engine.stop()
        fast_from = engine.frames.frame_at(engine.frames.start_s + fast_from_s)
        return engine.stats(), out, fast_from

    stats, out, fast_from = asyncio.run(main())
    back = [o.index for o in out if o.fresh and o.index >= fast_from]
    if catch_up:
        assert stats["catch_ups"] > 0 and stats["max_backlog"] <= LiveConfig(catch_up_frames=2).catch_up_backlog + 2
        # new pictures again within the engine's own delay (plus a few ticks), not after the backlog
        assert back and back[0] - fast_from <= stats["delay_frames"] + 6
    else:
        assert stats["catch_ups"] == 0 and stats["max_backlog"] > 20
        assert not back or back[0] - fast_from > stats["delay_frames"] + 6


def test_drop_policy_keeps_latency_fixed_when_compute_is_slow(backend, portrait):
    async def main():
        clock = VirtualClock()
        slow = SlowBackend(backend, clock, seconds=0.100)
        # A render (100 ms) longer than a tick but inside a 3-tick budget: some pictures make it, some are skipped.
        config = live_config(hangover_frames=20, processing_frames=3)
        engine = LiveEngine(slow, portrait, config, clock=clock)
        engine.observe(watcher)
        queue = engine.subscribe()
        await engine.start()
        buf = engine.open_source("talker", live=False)
        buf.write(speech_like(3.0, seed=4))
        out = []
        try:
            await drive(engine, clock, queue, out)
        finally:
            clock.release()
            await engine.stop()
        return engine, out

    async def drive(engine, clock, queue, out):
        await drive_on_virtual_time(engine, clock, queue, out, seconds=3.6)

    watcher = Recorder()
    engine, out = asyncio.run(main())
    stats = engine.stats()
    assert stats["skipped"] > 10 and stats["rendered"] > 10  # the policy engaged, yet the face still moves
    # The observer saw the same skips and drops the counters did.
    skipped = [f for f in watcher.made if SKIPPED in f.timings_ms]
    assert len(skipped) == stats["skipped"] and len(watcher.made) - len(skipped) == stats["rendered"]
    assert sum(count for _, count in watcher.dropped) == stats["dropped"]
    assert 0.08 < stats["render_ms"] / 1000 < 0.2
    assert [o.index for o in out] == list(range(len(out)))  # one output frame per tick, none added or lost
    fresh = [o for o in out if o.fresh]
    assert len(fresh) == stats["shown"] and stats["repeated"] > 0  # in between, the last picture is repeated
    for o in fresh:  # a new picture is never older than max_late_frames: latency stayed where it was
        assert o.index - LiveConfig().max_late_frames <= o.generated.index <= o.index
    # Jobs queue only while one render runs (100 ms = 2.5 ticks), so never more than 1 + 3 wait: no build-up.
    assert stats["max_backlog"] <= 4


@pytest.mark.parametrize("wait_for_model", [False, True])
def test_an_engine_that_waits_for_its_model_renders_and_shows_every_frame(backend, portrait, wait_for_model):
    """``LiveConfig.wait_for_model`` (what the tests over real sockets run with): on a model far too slow for 25 fps
    (100 ms a frame against a 2-tick budget) nothing is skipped or dropped, and every frame of the utterance is shown
    at its own tick, the stream falling behind real time instead. The default engine, on the same model, skips."""

    async def main():
        clock = VirtualClock()
        engine = LiveEngine(
            SlowBackend(backend, clock, seconds=0.100), portrait,
            live_config(wait_for_model=wait_for_model), clock=clock,
        )  # fmt: skip
        seen = Recorder()  # every frame out (a subscriber's queue would lose some to the burst after the speech)
        engine.observe(seen)
        await engine.start()
        engine.open_source("talker", live=False).write(speech_like(0.6, seed=4))
        try:
            for step in range(500):  # 5 s of virtual time in 10 ms steps
                clock.advance_to(engine.frames.start_s + step / 100)
                for _ in range(20_000):  # bounded: a hang fails the test instead of blocking the run
                    await asyncio.sleep(0.0005)
                    due = engine.frames.frame_at(clock.now()) + 1
                    # settled: the model computes (blocked on virtual time), or it is idle and every due tick ran
                    if clock.blocked == 1 or (engine.jobs.backlog == 0 and engine.counters.ticks >= due):
                        break
                else:
                    raise AssertionError("the engine did not settle")
            behind = engine.frames.frame_at(clock.now()) + 1 - engine.counters.ticks
        finally:
            clock.release()
            await engine.stop()
        return engine.stats(), engine.gate.segments, seen.out, behind

    stats, segments, out, behind = asyncio.run(main())
    assert [o.index for o in out] == list(range(len(out)))  # one output frame per tick, none added or lost
    ((start, end),) = segments
    spoken = [o for o in out if start <= o.index < end]
    assert len(spoken) == end - start > 15  # the whole utterance went out
    if not wait_for_model:  # real time: the drop policy engaged, the face stood still for most of it
        assert stats["skipped"] > 10 and behind <= 1
        return
    assert stats["skipped"] == stats["dropped"] == stats["late"] == 0 and stats["rendered"] == end - start
    assert all(o.fresh and o.generated.index == o.index for o in spoken)  # each tick shows its own new picture
    assert behind == 0 and stats["jumped"] == 0  # it caught up once the utterance was over, jumping nothing


def test_changing_the_avatar_mid_speech(backend, portrait):
    flipped = dataclasses.replace(portrait, frames=portrait.frames[:, :, ::-1].copy())

    async def main():
        engine, clock, queue, _ = await talking_engine(backend, portrait, speech_like(2.0, seed=3))
        out = []
        await tick_lockstep(engine, clock, 20, out, queue)
        await engine.set_avatar(flipped)
        switched_at = engine.counters.ticks
        await tick_lockstep(engine, clock, 30, out, queue)
        await engine.stop()
        return engine, out, switched_at

    engine, out, switched_at = asyncio.run(main())
    after = [o for o in out if o.index >= switched_at]
    assert after and all(o.generated is None or o.generated.index >= switched_at for o in after)
    assert any(o.generated is not None for o in after)  # speech carried on with the new avatar
    idle_after = [o for o in after if o.generated is None]
    assert all(np.array_equal(o.image, flipped.frames[0]) for o in idle_after)
    assert engine.counters.model_errors == 0


def test_microphone_silent_then_clipped(backend, portrait):
    delivered = threading.Event()

    class FakeInputStream:
        """sounddevice.InputStream's shape: calls back from its own thread, 20 ms at a time."""

        def __init__(self, samplerate, channels, dtype, blocksize, device, callback):
            assert (samplerate, channels, dtype) == (16000, 1, "float32")
            self.callback, self.blocksize = callback, blocksize

        def __enter__(self):
            def play():
                silent = np.zeros(2400, np.float32)  # a muted microphone
                loud = np.sign(speech_like(0.25, seed=6)) * 1.5  # clipped hard, beyond full scale
                loud[::50] = np.nan
                for chunk in (silent, loud.astype(np.float32)):
                    for i in range(0, len(chunk), self.blocksize):
                        self.callback(chunk[i : i + self.blocksize, None], self.blocksize, None, None)
                delivered.set()

            threading.Thread(target=play).start()
            return self

        def __exit__(self, *exc):
            return False

    async def main():
        clock = VirtualClock()
        engine = LiveEngine(backend, portrait, live_config(live_backlog_ms=1000), clock=clock)
        queue = engine.subscribe()
        await engine.start()
        mic = asyncio.create_task(MicrophoneSource(engine, stream_factory=FakeInputStream).run())
        await asyncio.to_thread(delivered.wait)
        for _ in range(5):
            await asyncio.sleep(0)  # the callbacks' writes, handed over with call_soon_threadsafe
        out = []
        await tick_lockstep(engine, clock, 40, out, queue)
        mic.cancel()
        await asyncio.gather(mic, return_exceptions=True)
        await engine.stop()
        return engine, out

    engine, out = asyncio.run(main())
    assert not engine.mixer.sources  # the microphone's buffer went away with it
    silent = [o for o in out if o.index < 3]
    assert silent and all(o.generated is None for o in silent)
    assert engine.counters.rendered > 0 and engine.counters.model_errors == 0
    assert all(np.isfinite(o.generated.landmarks).all() for o in out if o.generated is not None)


def test_microphone_without_a_device_says_what_to_do(backend, portrait):
    def no_device(**kw):
        raise ValueError("No input device matching 'usb'")

    async def main():
        engine = LiveEngine(backend, portrait, live_config())
        with pytest.raises(InputError, match="--audio-file"):
            await MicrophoneSource(engine, "usb", stream_factory=no_device).run()
        return engine

    assert not asyncio.run(main()).mixer.sources


def test_file_source_paces_on_frame_counters(tmp_path, backend, portrait):
    wav = write_wav(tmp_path / "s.wav", speech_like(0.5), 16000)

    class RecordingClock(VirtualClock):
        def __init__(self, engine_ref):
            super().__init__()
            self.targets, self.engine_ref = [], engine_ref

        async def sleep_until(self, t):
            self.targets.append(t)
            self.t = max(self.t, t)
            self.engine_ref[0].mixer.take(640)  # stands in for the engine's ticks consuming the audio
            await asyncio.sleep(0)

    ref = []
    clock = RecordingClock(ref)
    engine = LiveEngine(backend, portrait, live_config(), clock=clock)
    ref.append(engine)
    start = clock.now()
    asyncio.run(FileSource(engine, wav, loop=False).run())
    assert clock.targets[:13] == [start + k / 25 for k in range(13)]  # 12.5 blocks written on the 25 fps grid
    assert not engine.mixer.sources


# ------------------------------------------------------------------------------------------ pushed PCM protocol


def push_decoder(max_ahead_s=1.0):
    return PushDecoder(Mixer(live_config()).open("push", live=False, max_s=max_ahead_s), PushConfig(max_ahead_s))


def test_push_accepts_16k_pcm_and_other_rates_by_header():
    d = push_decoder()
    pcm = (speech_like(0.2) * 32767).astype("<i2")
    d.pcm(pcm.tobytes())
    assert d.buf.buffered_samples == 3200
    np.testing.assert_allclose(np.concatenate(list(d.buf._chunks)), pcm / 32768.0, atol=1e-6)
    d24 = push_decoder()
    d24.header('{"sample_rate": 24000}')
    d24.pcm((speech_like(0.5, rate=24000) * 32767).astype("<i2").tobytes())
    assert abs(d24.buf.buffered_samples - 8000) < 200  # resampled to 16 kHz


@pytest.mark.parametrize(
    "messages, error, match",
    [
        ([b"\x01\x02\x03"], AudioError, "not int16 PCM"),
        (["hello"], InputError, "JSON header"),
        (['{"sample_rate": 1}'], AudioError, "out of range"),
        ([b"\x00\x00", '{"sample_rate": 24000}'], InputError, "before the first audio"),
        ([np.zeros(16000 * 2, "<i2").tobytes()], AudioError, "faster than real time"),
    ],
)
def test_push_refuses_garbage_and_too_fast_input(messages, error, match):
    d = push_decoder()
    with pytest.raises(error, match=match):
        for m in messages:
            d.pcm(m) if isinstance(m, bytes) else d.header(m)


# ------------------------------------------------------------------------------------------ barge-in and segment ends


def test_end_mark_plays_a_short_segment_out_and_is_reported_with_its_last_sample():
    mixer = Mixer(LiveConfig(jitter_ms=60), 16_000)
    buf = mixer.open("tts", live=False)
    buf.write(np.full(800, 0.5, np.float32))  # 50 ms: less than the 60 ms jitter buffer
    assert mixer.take(640).max() == 0 and not mixer.last_take.audible  # waits for the jitter buffer...
    buf.mark_end("seg-1")  # ... until the segment is known to be whole
    first = mixer.take(640)
    assert first.min() == 0.5 and mixer.last_take == type(mixer.last_take)(True, ())
    second = mixer.take(640)
    assert np.count_nonzero(second) == 160 and mixer.last_take.marks == ("seg-1",)
    assert mixer.stats()["underruns"] == 0  # a segment that ended is not an underrun
    buf.mark_end("empty")  # nothing written since: reached on the next take
    mixer.take(640)
    assert mixer.last_take.marks == ("empty",) and not mixer.last_take.audible


def test_interrupt_drops_queued_and_in_flight_frames_and_idles_at_once(backend, portrait):
    """Barge-in mid-utterance: the very next output frame is the idle avatar with silence, no frame of the cut
    speech follows, the marks not reached are returned, and the next speech starts a fresh utterance."""

    async def main():
        engine, clock, queue, buf = await talking_engine(backend, portrait, speech_like(1.0, seed=5))
        buf.mark_end("cut")
        out: list = []
        await tick_lockstep(engine, clock, 16, out, queue)
        speaking_before = [o for o in out if o.generated is not None]
        queue.put_nowait(out[-1])  # a frame a slow reader has not taken yet is dropped too
        dropped = engine.interrupt()
        assert queue.empty()
        cut_at = engine.counters.ticks  # the first output frame after the interrupt goes out on this tick
        buf.write(speech_like(0.6, seed=6))
        buf.mark_end("next")
        after: list = []
        await tick_lockstep(engine, clock, 30, after, queue)
        await engine.stop()
        return engine, speaking_before, dropped, cut_at, after

    engine, speaking_before, dropped, cut_at, after = asyncio.run(main())
    assert speaking_before and dropped == ["cut"]
    first_unsent = cut_at - engine.delay_frames
    assert after[0].index == first_unsent
    idle = portrait.frames[portrait.index_for(first_unsent)]
    assert after[0].generated is None and np.array_equal(after[0].image, idle)
    # the cut speech is gone: silence until the next speech is heard (jitter buffer + delay later)
    resumed = next(i for i, o in enumerate(after) if o.audible)
    assert resumed >= engine.delay_frames
    assert all(o.generated is None for o in after[:resumed])
    # silent but for the resampler's filter reaching 16 samples across a block edge (the cut, the next speech)
    assert all(not np.abs(o.audio_48k).any() for o in after[1 : resumed - 1])
    assert all(np.count_nonzero(o.audio_48k) <= 3 * AudioOut.CONTEXT for o in (after[0], after[resumed - 1]))
    later = [o for o in after[resumed:] if o.generated is not None]
    assert later and all(o.generated.index >= after[resumed].index for o in later)  # a fresh utterance
    assert [m for o in after for m in o.marks] == ["next"]
    assert engine.counters.interrupts == 1 and engine.counters.model_errors == 0


def test_a_live_engine_runs_numpys_blas_on_one_thread(backend, portrait):
    """OpenBLAS's own threads spin beside the model's and halved a busy machine's frame rate: an engine sets them
    to ``LiveConfig.blas_threads`` (process-wide), and None leaves them as they are."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):  # restored on the way out, for the rest of the suite
        before = blas_threads()
        LiveEngine(backend, portrait, live_config(blas_threads=None))
        assert blas_threads() == before
        LiveEngine(backend, portrait, live_config())
        assert blas_threads() == {1}

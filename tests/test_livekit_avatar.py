"""facecast as a LiveKit Agents avatar, offline: livekit's own AvatarRunner, QueueAudioOutput and
DataStreamAudioReceiver drive the generator; the room is a stand-in (no LiveKit server, no network).

Pacing is checked by what was pushed to the A/V synchronizer (each picture with exactly 40 ms of sound), never
by the wall clock; the engines wait for their model (``wall_clock_engine``), and every wait has a generous bound
so a broken adapter fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
import types

import numpy as np
import pytest
from conftest import speech_like, until, wall_clock_engine

pytest.importorskip("livekit.agents", reason="the livekit extra is not installed: pip install 'facecast[livekit]'")

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AudioSegmentEnd  # noqa: E402

from facecast.streaming.integrations.livekit_avatar import FacecastAvatarSession, FacecastVideoGenerator, run_worker  # noqa: E402

FRAME_S = 0.04
AGENT = "agent-1"


class StandInPublication:
    async def wait_for_subscription(self) -> None:
        return None


class StandInLocalParticipant:
    identity = "facecast-avatar"
    kind = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT

    def __init__(self) -> None:
        self.published: list[str] = []
        self._rpc_handlers: dict[str, object] = {}
        self.rpc_calls: list[tuple[str, str]] = []  # (method, payload) performed towards the agent

    async def publish_track(self, track, options) -> StandInPublication:
        self.published.append(track.kind)
        return StandInPublication()

    def register_rpc_method(self, method: str, handler) -> None:
        self._rpc_handlers[method] = handler

    async def perform_rpc(self, *, destination_identity: str, method: str, payload: str) -> str:
        assert destination_identity == AGENT
        self.rpc_calls.append((method, payload))
        return "ok"


class StandInRoom(rtc.EventEmitter):
    """What AvatarRunner and DataStreamAudioReceiver use of rtc.Room: connected, one agent, tracks published
    nowhere, byte-stream and RPC handlers kept for the test to call."""

    name = "test-room"

    def __init__(self) -> None:
        super().__init__()
        self.local_participant = StandInLocalParticipant()
        agent = types.SimpleNamespace(
            identity=AGENT,
            kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
            state=rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE,
        )
        self.remote_participants = {AGENT: agent}
        self.stream_handlers: dict[str, object] = {}

    def isconnected(self) -> bool:
        return True

    def register_byte_stream_handler(self, topic: str, handler) -> None:
        self.stream_handlers[topic] = handler


def tap_av_sync(runner) -> list:
    """Everything the runner pushes to its A/V synchronizer, in order (the synchronizer still gets it)."""
    pushed: list = []
    push = runner.av_sync.push

    async def recording_push(frame, timestamp=None):
        pushed.append(frame)
        await push(frame, timestamp)

    runner.av_sync.push = recording_push
    return pushed


def pcm_frames(audio_16k: np.ndarray, chunk: int = 1600) -> list[rtc.AudioFrame]:
    pcm = (audio_16k * 32767).astype(np.int16)
    return [
        rtc.AudioFrame(pcm[i : i + chunk].tobytes(), 16000, 1, len(pcm[i : i + chunk]))
        for i in range(0, len(pcm), chunk)
    ]


def idle(frame: rtc.VideoFrame, portrait) -> bool:
    rgb = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 4)[:, :, :3]
    return any(np.array_equal(rgb, f) for f in portrait.frames)


def test_generator_yields_picture_then_40ms_of_sound_and_a_segment_end(backend, portrait):
    async def main():
        engine = wall_clock_engine(backend, portrait)
        gen = FacecastVideoGenerator(engine)
        for f in pcm_frames(speech_like(0.5, seed=1)):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())
        items = []
        async for item in gen:
            items.append(item)
            if isinstance(item, AudioSegmentEnd) or len(items) > 200:
                break
        await gen.aclose()
        await engine.stop()
        return items

    items = asyncio.run(main())
    assert isinstance(items[-1], AudioSegmentEnd)
    audio = [i for i in items if isinstance(i, rtc.AudioFrame)]
    assert all(a.sample_rate == 48000 and a.samples_per_channel == 1920 for a in audio)  # 40 ms each
    # 0.5 s of speech: its 13 blocks of sound (the last one partly), each after its own picture
    assert len(audio) == 13 and items[-2] is audio[-1] and isinstance(items[-3], rtc.VideoFrame)
    for i, item in enumerate(items):
        if isinstance(item, rtc.AudioFrame):
            assert isinstance(items[i - 1], rtc.VideoFrame)


def test_avatar_runner_paces_25fps_reports_playback_and_interrupts_within_two_frames(backend, portrait):
    """In-process session (QueueAudioOutput + AvatarRunner, the bithuman local-mode wiring) on a stand-in room."""

    async def main():
        engine = wall_clock_engine(backend, portrait)
        room = StandInRoom()
        agent_session = types.SimpleNamespace(output=types.SimpleNamespace(audio=None))
        avatar = FacecastAvatarSession(engine)
        await avatar.start(agent_session, room)
        audio_out = agent_session.output.audio
        assert audio_out is avatar.audio
        pushed = tap_av_sync(avatar.runner)
        finished = []
        audio_out.on("playback_finished", finished.append)

        # a whole segment: played out, then playback_finished(interrupted=False) with its length
        for f in pcm_frames(speech_like(0.6, seed=2)):
            await audio_out.capture_frame(f)
        audio_out.flush()
        await until(lambda: finished, "playback_finished of the first segment")

        # a long segment cut off once the avatar speaks: clear_buffer -> interrupted=True
        for f in pcm_frames(speech_like(3.0, seed=3)):
            await audio_out.capture_frame(f)
        audio_out.flush()
        start = len(pushed)
        await until(lambda: sum(isinstance(p, rtc.AudioFrame) for p in pushed[start:]) >= 10, "speech out")
        pushed.append("clear")
        audio_out.clear_buffer()
        await until(lambda: len(finished) == 2, "playback_finished of the cut segment")
        await until(lambda: sum(isinstance(p, rtc.VideoFrame) for p in pushed[pushed.index("clear") :]) > 5, "")
        await avatar.aclose()
        return pushed, finished, room, engine

    pushed, finished, room, engine = asyncio.run(main())
    assert set(room.local_participant.published) == {rtc.TrackKind.KIND_AUDIO, rtc.TrackKind.KIND_VIDEO}
    first, cut = finished
    assert not first.interrupted and first.playback_position == pytest.approx(15 * FRAME_S)  # 0.6 s = 15 blocks
    assert cut.interrupted

    # 25 fps by the pushed media: every picture is followed by at most one 40 ms sound frame
    frames = [p for p in pushed if p != "clear"]
    audio = [p for p in frames if isinstance(p, rtc.AudioFrame)]
    assert all(a.sample_rate == 48000 and a.samples_per_channel == 1920 for a in audio)
    assert all(isinstance(frames[i - 1], rtc.VideoFrame) for i, p in enumerate(frames) if isinstance(p, rtc.AudioFrame))

    at = pushed.index("clear")
    before, after = pushed[:at], pushed[at + 1 :]
    spoken_before_cut = sum(isinstance(p, rtc.AudioFrame) for p in before) - 15
    # the position where it stopped: the sound pushed before the clear, give or take the one frame the runner may
    # have been pushing while its clear task ran
    assert spoken_before_cut >= 10
    assert spoken_before_cut - 1 <= round(cut.playback_position / FRAME_S) <= spoken_before_cut + 1
    video_after = [p for p in after if isinstance(p, rtc.VideoFrame)]
    first_idle = next(i for i, v in enumerate(video_after) if idle(v, portrait))
    assert first_idle <= 2  # barge-in: idle mouth within two frames
    assert sum(isinstance(p, rtc.AudioFrame) for p in after) <= 2  # and the cut speech stops as fast
    assert engine.counters.interrupts == 1


class StandInReader:
    """A DataStream byte-stream reader: the agent's PCM in chunks, then the stream's end (its trailer)."""

    def __init__(self, pcm: bytes, sample_rate: int = 16000, chunk: int = 3200, hold: asyncio.Event | None = None):
        self.info = types.SimpleNamespace(
            attributes={"sample_rate": str(sample_rate), "num_channels": "1"}, stream_id=f"s{id(self)}"
        )
        self._chunks = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
        self._hold = hold  # the stream stays open (the agent is still speaking) until this is set

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self._chunks:
            return self._chunks.pop(0)
        if self._hold is not None:
            await self._hold.wait()
        raise StopAsyncIteration


def test_datastream_worker_plays_segments_and_answers_the_rpcs(backend, portrait):
    """`facecast livekit-worker`'s loop (run_worker) with livekit's DataStreamAudioReceiver on a stand-in room:
    lk.audio_stream in, lk.playback_started / lk.playback_finished out, lk.clear_buffer -> interrupted."""

    async def main():
        engine = wall_clock_engine(backend, portrait)
        room = StandInRoom()
        worker = asyncio.create_task(run_worker(engine, room, AGENT))
        await until(lambda: "lk.audio_stream" in room.stream_handlers, "the worker to listen for audio")
        calls = room.local_participant.rpc_calls
        finished = lambda: [json.loads(p) for m, p in calls if m == "lk.playback_finished"]  # noqa: E731

        pcm = (speech_like(0.4, rate=24000, seed=4) * 32767).astype("<i2").tobytes()  # the agent's TTS rate
        room.stream_handlers["lk.audio_stream"](StandInReader(pcm, sample_rate=24000), AGENT)
        await until(lambda: len(finished()) == 1, "lk.playback_finished of the first segment")

        hold = asyncio.Event()
        long = (speech_like(3.0, seed=5) * 32767).astype("<i2").tobytes()
        room.stream_handlers["lk.audio_stream"](StandInReader(long, hold=hold), AGENT)
        started = lambda: [m for m, _ in calls].count("lk.playback_started")  # noqa: E731
        await until(lambda: started() == 2, "the second segment to start playing")
        ticks = engine.counters.ticks
        await until(lambda: engine.counters.ticks > ticks + 10, "ten frames of the second segment")
        clear = room.local_participant._rpc_handlers["lk.clear_buffer"]
        answer = clear(types.SimpleNamespace(caller_identity=AGENT, payload="", request_id="r1"))
        await until(lambda: len(finished()) == 2, "lk.playback_finished of the cut segment")
        hold.set()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        return answer, calls, finished(), engine

    answer, calls, finished, engine = asyncio.run(main())
    assert answer == "ok"
    # AvatarRunner itself may report one more "started" when the clear lands while it is inside av_sync.push with
    # the last audio frame of the cut segment (its position was reset under it): only the order up to the cut counts
    assert [m for m, _ in calls][:4] == ["lk.playback_started", "lk.playback_finished"] * 2
    first, cut = finished
    assert first == {"playback_position": pytest.approx(10 * FRAME_S), "interrupted": False, **_transcript(first)}
    assert cut["interrupted"] and 10 * FRAME_S <= cut["playback_position"] < 3.0
    assert engine.counters.interrupts == 1 and not engine.running


def _transcript(event: dict) -> dict:
    """PlaybackFinishedEvent's optional field, whatever livekit-agents puts there."""
    return {k: v for k, v in event.items() if k not in ("playback_position", "interrupted")}

"""facecast as a LiveKit Agents avatar (``pip install 'facecast[livekit]'``; livekit-agents 1.8).

- ``FacecastVideoGenerator``: livekit's ``VideoGenerator`` over one LiveEngine. The agent's speech goes into an
  engine source; every engine tick yields the picture, then (inside a segment) the same 40 ms of sound at 48 kHz,
  and after the segment's last sound an ``AudioSegmentEnd``. Between segments the engine keeps ticking, so the
  avatar's idle frames go out: one continuous stream, silence drives the idle face. Idle frames carry no sound:
  AvatarRunner counts every audio frame into the playback position it reports. ``clear_buffer`` is
  ``LiveEngine.interrupt``.
- ``FacecastAvatarSession``: in the agent's own process (a GPU agent host), wired like the bithuman plugin's local
  mode: ``QueueAudioOutput(sample_rate=16000)`` feeds an ``AvatarRunner`` that publishes to the room, and the
  agent session's audio output becomes that queue.
- ``RemoteFacecastAvatar`` + ``facecast livekit-worker``: the avatar in a separate process (another GPU host). The
  worker joins the room as its own participant publishing on behalf of the agent (``lk.publish_on_behalf``) and
  takes the agent's speech over LiveKit's DataStream protocol (topic ``lk.audio_stream``; RPCs
  ``lk.clear_buffer``, ``lk.playback_started``, ``lk.playback_finished``) through ``DataStreamAudioReceiver``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import cv2
from livekit import api, rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    DataStreamAudioOutput,
    DataStreamAudioReceiver,
    QueueAudioOutput,
    VideoGenerator,
)

from facecast.engine.errors import InputError

from ..config import AVATAR_IDENTITY
from ..live.clock import AUDIO_OUT_HZ
from ..live.engine import LiveEngine, OutputFrame
from ..live.sources import SAMPLE_RATE
from .voice_agent import AgentSpeech, SoundGate

log = logging.getLogger("facecast.livekit")


@dataclass(frozen=True)
class LiveKitAvatarConfig:
    avatar_identity: str = AVATAR_IDENTITY  # the worker's participant identity in the room
    avatar_name: str = "facecast"
    agent_audio_rate: int = SAMPLE_RATE  # the agent sends its TTS audio at this rate (the engine's own)
    sync_queue_ms: int = 100  # AvatarRunner's A/V synchronizer queue


class FacecastVideoGenerator(VideoGenerator):
    """LiveKit's video generator on a LiveEngine (one per room; engines may share one backend)."""

    def __init__(self, engine: LiveEngine, source_name: str = "livekit agent") -> None:
        self.engine = engine
        self.speech = AgentSpeech(engine, source_name)
        self.sound = SoundGate()
        self._segments = 0  # segment labels for AgentSpeech.end_segment
        self._clears = 0
        self._queue = engine.subscribe()

    @property
    def options(self) -> AvatarOptions:
        """What the runner publishes: the avatar's picture size, the engine's 25 fps and 48 kHz mono sound."""
        height, width = self.engine.avatar.frames.shape[1:3]
        return AvatarOptions(
            video_width=width,
            video_height=height,
            video_fps=self.engine.cfg.audio.fps,
            audio_sample_rate=AUDIO_OUT_HZ,
            audio_channels=1,
        )

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self._segments += 1
            self.speech.end_segment(self._segments)
        else:
            self.speech.write(bytes(frame.data), frame.sample_rate, frame.num_channels)

    def clear_buffer(self) -> None:
        """Barge-in: the engine drops every queued and in-flight frame; the next frame out is idle."""
        self.speech.interrupt()
        self.sound.cut()
        self._clears += 1

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        if not self.engine.running:
            await self.engine.start()
        while (out := await self._queue.get()) is not None:
            clears = self._clears
            yield video_frame(out)
            if clears != self._clears:
                continue  # cleared while the runner had the picture: its sound is part of what was dropped
            if self.sound.step(out):
                yield audio_frame(out)
            for _ in out.marks:  # this frame held the segment's last sound
                yield AudioSegmentEnd()

    async def aclose(self) -> None:
        self.engine.unsubscribe(self._queue)
        self.speech.close()


def video_frame(out: OutputFrame) -> rtc.VideoFrame:
    rgba = cv2.cvtColor(out.image, cv2.COLOR_RGB2RGBA)  # uint8 (H, W, 4)
    return rtc.VideoFrame(rgba.shape[1], rgba.shape[0], rtc.VideoBufferType.RGBA, rgba.tobytes())


def audio_frame(out: OutputFrame) -> rtc.AudioFrame:
    return rtc.AudioFrame(out.audio_48k.tobytes(), AUDIO_OUT_HZ, 1, out.audio_48k.size)


class FacecastAvatarSession:
    """The avatar inside the agent's process, as the bithuman plugin's local mode wires it::

    avatar = FacecastAvatarSession(engine)
    await avatar.start(session, room=ctx.room)  # before session.start(...)
    """

    def __init__(self, engine: LiveEngine, config: LiveKitAvatarConfig | None = None) -> None:
        self.engine = engine
        self.config = config or LiveKitAvatarConfig()
        self.generator: FacecastVideoGenerator | None = None
        self.runner: AvatarRunner | None = None
        self.audio: QueueAudioOutput | None = None

    async def start(self, agent_session: Any, room: rtc.Room) -> None:
        self.audio = QueueAudioOutput(sample_rate=self.config.agent_audio_rate)
        self.generator = FacecastVideoGenerator(self.engine)
        self.runner = AvatarRunner(
            room,
            audio_recv=self.audio,
            video_gen=self.generator,
            options=self.generator.options,
            _queue_size_ms=self.config.sync_queue_ms,
        )
        await self.engine.start()
        await self.runner.start()
        agent_session.output.audio = self.audio

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.aclose()
        if self.generator is not None:
            await self.generator.aclose()
        await self.engine.stop()


class RemoteFacecastAvatar:
    """Agent side of the worker process: the agent's speech goes to ``facecast livekit-worker`` over DataStream.

    Start the worker (any host that reaches the LiveKit server) with this room's name and the agent's identity,
    e.g. ``worker_token`` + ``facecast livekit-worker --url URL --token TOKEN``; the agent's audio output waits
    until the worker's video track is up.
    """

    def __init__(self, config: LiveKitAvatarConfig | None = None) -> None:
        self.config = config or LiveKitAvatarConfig()

    async def start(self, agent_session: Any, room: rtc.Room) -> None:
        agent_session.output.audio = DataStreamAudioOutput(
            room,
            destination_identity=self.config.avatar_identity,
            sample_rate=self.config.agent_audio_rate,
            wait_remote_track=rtc.TrackKind.KIND_VIDEO,
        )


def worker_token(
    room_name: str,
    agent_identity: str,
    config: LiveKitAvatarConfig | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
) -> str:
    """A join token for the worker: an agent-kind participant that publishes on behalf of ``agent_identity``, so
    the room shows the avatar's video and voice as the agent's."""
    config = config or LiveKitAvatarConfig()
    api_key = api_key or os.environ.get("LIVEKIT_API_KEY")
    api_secret = api_secret or os.environ.get("LIVEKIT_API_SECRET")
    if not api_key or not api_secret:
        raise InputError("no LiveKit API key: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET, or pass --token.")
    return (
        api.AccessToken(api_key, api_secret)
        .with_kind("agent")
        .with_identity(config.avatar_identity)
        .with_name(config.avatar_name)
        .with_grants(api.VideoGrants(room_join=True, room=room_name))
        .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity})
        .to_jwt()
    )


async def run_worker(
    engine: LiveEngine, room: rtc.Room, agent_identity: str | None, config: LiveKitAvatarConfig | None = None
) -> None:
    """The worker on a connected room: DataStream audio from the agent in, the avatar's tracks out, until the
    agent leaves (the receiver's stream ends) or the task is cancelled."""
    config = config or LiveKitAvatarConfig()
    generator = FacecastVideoGenerator(engine, "livekit datastream")
    receiver = DataStreamAudioReceiver(room, sender_identity=agent_identity)
    runner = AvatarRunner(
        room, audio_recv=receiver, video_gen=generator, options=generator.options, _queue_size_ms=config.sync_queue_ms
    )
    await engine.warm_up()
    await engine.start()
    try:
        await runner.start()
        await runner.wait_for_complete()
    finally:
        await runner.aclose()
        await generator.aclose()
        await engine.stop()

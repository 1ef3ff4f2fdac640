"""facecast as a Pipecat video service (``pip install 'facecast[pipecat]'``; pipecat-ai 1.14), in the style of
``SimliVideoService`` but on a local LiveEngine instead of a cloud avatar.

- ``TTSAudioRawFrame`` at any rate goes into an engine source (resampled to 16 kHz) and is not passed on: its sound
  comes back out of the engine with the matching picture, as one ``OutputImageRawFrame`` followed by one
  ``TTSAudioRawFrame`` of the same 40 ms (48 kHz), 25 times a second. Between utterances only pictures go out
  (the avatar's idle frames), so downstream "bot speaking" detection sees sound only while the avatar speaks.
- ``TTSStartedFrame`` passes at once; ``TTSStoppedFrame`` is held until the turn's last sound has gone out, so the
  two bracket the speech as it is heard.
- ``InterruptionFrame`` / ``UserStartedSpeakingFrame``: ``LiveEngine.interrupt`` drops every queued and in-flight
  frame, so the next picture is idle (within one frame: a picture already being pushed still arrives, its sound
  does not); the held ``TTSStoppedFrame`` is dropped too. Both pass on.
- Every other frame passes through.
"""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

from ..live.clock import AUDIO_OUT_HZ
from ..live.engine import LiveEngine, OutputFrame
from .voice_agent import AgentSpeech, SoundGate


class FacecastVideoService(AIService):
    """The avatar as a pipeline stage: put it after the TTS and before the transport's output."""

    def __init__(self, engine: LiveEngine, **kwargs: object) -> None:
        super().__init__(settings=ServiceSettings(model=None), **kwargs)
        self.engine = engine
        self.speech = AgentSpeech(engine, "pipecat tts")
        self.sound = SoundGate()
        self._queue: asyncio.Queue[OutputFrame | None] | None = None
        self._emitter: asyncio.Task[None] | None = None
        self._turns = 0  # segment labels, one per TTS turn
        self._stops: dict[int, TTSStoppedFrame] = {}  # held until their turn's last sound is out
        self._cuts = 0  # interruptions so far

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._queue = self.engine.subscribe()
        await self.engine.start()
        self._emitter = self.create_task(self._emit(), name="facecast-video-out")

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._close()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._close()

    async def _close(self) -> None:
        if self._emitter is not None:
            await self.cancel_task(self._emitter)
            self._emitter = None
        if self._queue is not None:
            self.engine.unsubscribe(self._queue)
            self._queue = None
        self.speech.close()
        await self.engine.stop()

    # ------------------------------------------------------------------------------------------ frames in

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self.speech.write(frame.audio, frame.sample_rate, frame.num_channels)
            return  # comes out again with its picture
        if isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM:
            self._turns += 1
            self._stops[self._turns] = frame
            self.speech.end_segment(self._turns)
            return  # pushed when the turn's last sound is out
        if isinstance(frame, (InterruptionFrame, UserStartedSpeakingFrame)):
            self.interrupt()
        await self.push_frame(frame, direction)

    def interrupt(self) -> None:
        """Barge-in: drop every queued and in-flight frame; the next picture out is the idle avatar."""
        self.speech.interrupt()
        self.sound.cut()
        self._stops.clear()
        self._cuts += 1

    # ------------------------------------------------------------------------------------------ frames out

    async def _emit(self) -> None:
        assert self._queue is not None
        while (out := await self._queue.get()) is not None:
            cuts = self._cuts
            await self.push_frame(image_frame(out))
            if cuts != self._cuts:
                continue  # interrupted while its picture went out: its sound is part of what was dropped
            if self.sound.step(out):
                await self.push_frame(audio_frame(out))
            for label in out.marks:
                stop = self._stops.pop(label, None)
                if stop is not None:
                    await self.push_frame(stop)


def image_frame(out: OutputFrame) -> OutputImageRawFrame:
    h, w = out.image.shape[:2]
    return OutputImageRawFrame(image=out.image.tobytes(), size=(w, h), format="RGB")


def audio_frame(out: OutputFrame) -> TTSAudioRawFrame:
    return TTSAudioRawFrame(audio=out.audio_48k.tobytes(), sample_rate=AUDIO_OUT_HZ, num_channels=1)

"""facecast as a Pipecat video service, offline, in pipecat's own test pipeline (source, service, sink, as
``run_test`` builds it): frame order, each picture paired with its 40 ms of TTS sound, pass-through,
TTSStarted/TTSStopped bracketing the speech as heard, and the interruption flush.

The engine runs on its real 25 fps clock and waits for its model (``wall_clock_engine``). The test script waits for
what it needs downstream (``Until``) rather than sleeping for a fixed time, so a busy machine makes it slower, never
wrong; nothing is asserted about how long anything took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import WAIT_S, speech_like, until, wall_clock_engine

pytest.importorskip("pipecat", reason="the pipecat extra is not installed: pip install 'facecast[pipecat]'")

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection  # noqa: E402
from pipecat.tests.utils import QueuedFrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from facecast.streaming.integrations.pipecat_video import FacecastVideoService  # noqa: E402

SAMPLES_48K_PER_FRAME = 1920  # 40 ms


def tts_frames(seconds: float, rate: int, seed: int, chunk_s: float = 0.1) -> list[TTSAudioRawFrame]:
    pcm = (speech_like(seconds, rate=rate, seed=seed) * 32767).astype("<i2")
    step = int(chunk_s * rate)
    return [TTSAudioRawFrame(pcm[i : i + step].tobytes(), rate, 1) for i in range(0, len(pcm), step)]


def is_idle(frame: OutputImageRawFrame, portrait) -> bool:
    w, h = frame.size
    image = np.frombuffer(frame.image, np.uint8).reshape(h, w, 3)
    return any(np.array_equal(image, f) for f in portrait.frames)


@dataclass(frozen=True)
class Until:
    """A step of a test script: wait until ``done(the frames that came out downstream so far)``."""

    done: Callable[[list[Frame]], bool]
    what: str


def images(frames: list[Frame]) -> list[OutputImageRawFrame]:
    return [f for f in frames if isinstance(f, OutputImageRawFrame)]


def sounds(frames: list[Frame]) -> list[TTSAudioRawFrame]:
    return [f for f in frames if isinstance(f, TTSAudioRawFrame)]


def after(frames: list[Frame], kind: type[Frame]) -> list[Frame]:
    """The frames after the first one of ``kind`` (none while there is none)."""
    at = next((i for i, f in enumerate(frames) if isinstance(f, kind)), len(frames))
    return frames[at + 1 :]


def run(service, script: Sequence[Frame | Until]) -> list[Frame]:
    """``run_test``'s pipeline (its sink records what comes out downstream), driven by ``script``: frames are queued
    in order, ``Until`` steps wait for the output; an EndFrame ends it. The frames that came out, EndFrame left out."""

    async def main() -> list[Frame]:
        received: asyncio.Queue[Frame] = asyncio.Queue()
        down: list[Frame] = []

        def drain() -> list[Frame]:
            while not received.empty():
                down.append(received.get_nowait())
            return down

        source = QueuedFrameProcessor(queue=asyncio.Queue(), queue_direction=FrameDirection.UPSTREAM)
        sink = QueuedFrameProcessor(queue=received, queue_direction=FrameDirection.DOWNSTREAM)
        worker = PipelineWorker(Pipeline([source, service, sink]), cancel_on_idle_timeout=False)
        started = asyncio.Event()

        @worker.event_handler("on_pipeline_started")
        async def _on_pipeline_started(worker, frame):
            started.set()

        async def push() -> None:
            await until(started.is_set, "the pipeline to start")
            for step in script:
                if isinstance(step, Until):
                    await until(lambda step=step: step.done(drain()), step.what)
                else:
                    await worker.queue_frame(step)
            await worker.queue_frame(EndFrame())

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await asyncio.wait_for(asyncio.gather(runner.run(), push()), 3 * WAIT_S)  # only a hang gets near it
        return [f for f in drain() if not isinstance(f, EndFrame)]

    return asyncio.run(main())


def test_speech_comes_out_paired_with_pictures_between_tts_started_and_stopped(backend, portrait):
    engine = wall_clock_engine(backend, portrait)
    service = FacecastVideoService(engine)
    frames = [TTSStartedFrame(), TextFrame("hello"), *tts_frames(0.6, 24000, seed=1), TTSStoppedFrame()]
    before = Until(lambda down: len(images(down)) >= 5, "idle pictures before the speech")
    stopped = Until(lambda down: len(images(after(down, TTSStoppedFrame))) >= 3, "TTSStopped, pictures after it")
    down = run(service, [before, *frames, stopped])

    kinds = [type(f) for f in down]
    assert kinds.index(TTSStartedFrame) < kinds.index(TextFrame)  # other frames pass through, in order
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    # 0.6 s at 24 kHz -> 15 blocks of 40 ms, each right after its own picture, at 48 kHz
    assert len(audio) == 15
    assert all(a.sample_rate == 48000 and a.num_frames == SAMPLES_48K_PER_FRAME for a in audio)
    for i, f in enumerate(down):
        if isinstance(f, TTSAudioRawFrame):
            assert isinstance(down[i - 1], OutputImageRawFrame)
    # TTSStopped follows the turn's last sound (it was held while the speech played), pictures go on after it
    stop = kinds.index(TTSStoppedFrame)
    assert down[stop - 1] is audio[-1] and kinds.index(TTSAudioRawFrame) > kinds.index(TTSStartedFrame)
    pictures = images(down)
    assert len(pictures) > len(audio) and all(f.size == (512, 512) and f.format == "RGB" for f in pictures)
    assert is_idle(pictures[0], portrait)  # before the speech: the avatar's idle frames, without sound
    assert any(not is_idle(f, portrait) for f in pictures)  # while speaking: generated mouths
    assert not engine.running  # the EndFrame stopped the engine


def test_interruption_flushes_within_one_frame(backend, portrait):
    engine = wall_clock_engine(backend, portrait)
    service = FacecastVideoService(engine)
    frames = [TTSStartedFrame(), *tts_frames(3.0, 16000, seed=2, chunk_s=0.5), TTSStoppedFrame()]
    speaking = Until(lambda down: len(sounds(down)) >= 10, "the avatar to speak")
    cut = Until(lambda down: len(images(after(down, InterruptionFrame))) > 6, "pictures after the cut")
    down = run(service, [*frames, speaking, InterruptionFrame(), cut])

    kinds = [type(f) for f in down]
    at = kinds.index(InterruptionFrame)
    before, later = down[:at], down[at + 1 :]
    assert sum(isinstance(f, TTSAudioRawFrame) for f in before) >= 10  # it was speaking
    images_after = images(later)
    assert len(images_after) > 5
    # within one frame: a picture already on its way may still arrive after the InterruptionFrame, then idle
    assert next(i for i, f in enumerate(images_after) if is_idle(f, portrait)) <= 1
    assert all(is_idle(f, portrait) for f in images_after[1:])
    assert not any(isinstance(f, TTSAudioRawFrame) for f in later)  # 1.8 s of queued speech dropped
    assert TTSStoppedFrame not in kinds  # the cut turn's stop was held, then dropped with it
    assert engine.counters.interrupts == 1


@pytest.mark.usefixtures("loopback_ice")
def test_smallwebrtc_loopback_delivers_the_avatars_video_and_voice(backend, portrait):
    """The service in a real Pipecat transport: SmallWebRTCTransport answering an aiortc client on 127.0.0.1, which
    receives the avatar's pictures (512x512) and the TTS speech as sound."""
    pytest.importorskip("pipecat.transports.smallwebrtc.transport")
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

    async def main():
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        client.addTransceiver("audio", direction="sendrecv")
        client.addTransceiver("video", direction="sendrecv")
        received: dict[str, list] = {"audio": [], "video": []}

        async def read(track):
            while True:
                try:
                    received[track.kind].append(await track.recv())
                except Exception:
                    return

        readers = []
        client.on("track", lambda track: readers.append(asyncio.ensure_future(read(track))))
        await client.setLocalDescription(await client.createOffer())
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=client.localDescription.sdp, type=client.localDescription.type)
        answer = connection.get_answer()
        await client.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

        height, width = portrait.frames.shape[1:3]
        params = TransportParams(
            audio_out_enabled=True,
            video_out_enabled=True,
            video_out_is_live=True,
            video_out_width=width,
            video_out_height=height,
            video_out_framerate=25,
        )
        transport = SmallWebRTCTransport(connection, params)
        engine = wall_clock_engine(backend, portrait)
        task = PipelineWorker(Pipeline([transport.input(), FacecastVideoService(engine), transport.output()]))
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(task)
        run = asyncio.ensure_future(runner.run())
        await until(lambda: len(received["video"]) >= 5, "the avatar's pictures at the client")
        await task.queue_frames([TTSStartedFrame(), *tts_frames(1.0, 16000, seed=3), TTSStoppedFrame()])

        def loud() -> int:
            return sum(int(np.abs(f.to_ndarray()).max() > 1000) for f in received["audio"])

        await until(lambda: loud() >= 10, "the avatar's voice at the client")
        await task.queue_frame(EndFrame())
        await asyncio.wait_for(run, WAIT_S)
        await client.close()
        for r in readers:
            r.cancel()
        return received

    received = asyncio.run(main())
    assert {(f.width, f.height) for f in received["video"]} == {(512, 512)}
    assert len(received["audio"]) >= 10

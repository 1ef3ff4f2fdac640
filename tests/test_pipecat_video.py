"""facecast as a Pipecat video service, offline, with pipecat's own ``run_test`` pipeline: frame order, each
picture paired with its 40 ms of TTS sound, pass-through, TTSStarted/TTSStopped bracketing the speech as heard,
and the interruption flush. The engine runs on its real 25 fps clock; SleepFrames let it tick, and nothing is
asserted about how long anything took.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import LOADED_MACHINE_BUDGET_FRAMES, speech_like

pytest.importorskip("pipecat", reason="the pipecat extra is not installed: pip install 'facecast[pipecat]'")

from pipecat.frames.frames import (  # noqa: E402
    InterruptionFrame,
    OutputImageRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.tests.utils import SleepFrame, run_test  # noqa: E402

from facecast.streaming.config import LiveConfig  # noqa: E402
from facecast.streaming.live import LiveEngine  # noqa: E402
from facecast.streaming.pipecat_video import FacecastVideoService  # noqa: E402

SAMPLES_48K_PER_FRAME = 1920  # 40 ms


def tts_frames(seconds: float, rate: int, seed: int, chunk_s: float = 0.1) -> list[TTSAudioRawFrame]:
    pcm = (speech_like(seconds, rate=rate, seed=seed) * 32767).astype("<i2")
    step = int(chunk_s * rate)
    return [TTSAudioRawFrame(pcm[i : i + step].tobytes(), rate, 1) for i in range(0, len(pcm), step)]


def is_idle(frame: OutputImageRawFrame, portrait) -> bool:
    w, h = frame.size
    image = np.frombuffer(frame.image, np.uint8).reshape(h, w, 3)
    return any(np.array_equal(image, f) for f in portrait.frames)


def run(service, frames):
    down, _ = asyncio.run(run_test(service, frames_to_send=frames, expected_down_frames=None))
    return down


def test_speech_comes_out_paired_with_pictures_between_tts_started_and_stopped(backend, portrait):
    # About pairing, not speed: a generous render budget for its 0.6 s of speech.
    config = LiveConfig(speaker_seconds=0, processing_frames=LOADED_MACHINE_BUDGET_FRAMES)
    engine = LiveEngine(backend, backend.cfg, portrait, config)
    service = FacecastVideoService(engine)
    frames = [TTSStartedFrame(), TextFrame("hello"), *tts_frames(0.6, 24000, seed=1), TTSStoppedFrame()]
    down = run(service, [SleepFrame(0.3), *frames, SleepFrame(2.5)])

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
    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    assert len(images) > len(audio) and all(f.size == (512, 512) and f.format == "RGB" for f in images)
    assert is_idle(images[0], portrait)  # before the speech: the avatar's idle frames, without sound
    assert any(not is_idle(f, portrait) for f in images)  # while speaking: generated mouths
    assert not engine.running  # the EndFrame stopped the engine


def test_interruption_flushes_within_one_frame(backend, portrait):
    engine = LiveEngine(backend, backend.cfg, portrait, LiveConfig(speaker_seconds=0))
    service = FacecastVideoService(engine)
    frames = [TTSStartedFrame(), *tts_frames(3.0, 16000, seed=2, chunk_s=0.5), TTSStoppedFrame()]
    down = run(service, [*frames, SleepFrame(1.2), InterruptionFrame(), SleepFrame(1.0)])

    kinds = [type(f) for f in down]
    cut = kinds.index(InterruptionFrame)
    before, after = down[:cut], down[cut + 1 :]
    assert sum(isinstance(f, TTSAudioRawFrame) for f in before) >= 10  # it was speaking
    images_after = [f for f in after if isinstance(f, OutputImageRawFrame)]
    assert len(images_after) > 5
    # within one frame: a picture already on its way may still arrive after the InterruptionFrame, then idle
    assert next(i for i, f in enumerate(images_after) if is_idle(f, portrait)) <= 1
    assert all(is_idle(f, portrait) for f in images_after[1:])
    assert not any(isinstance(f, TTSAudioRawFrame) for f in after)  # 1.8 s of queued speech dropped
    assert TTSStoppedFrame not in kinds  # the cut turn's stop was held, then dropped with it
    assert engine.counters.interrupts == 1


def test_smallwebrtc_loopback_delivers_the_avatars_video_and_voice(backend, portrait, monkeypatch):
    """The service in a real Pipecat transport: SmallWebRTCTransport answering an aiortc client on 127.0.0.1, which
    receives the avatar's pictures (512x512) and the TTS speech as sound."""
    pytest.importorskip("pipecat.transports.smallwebrtc.transport")
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from conftest import until
    from pipecat.frames.frames import EndFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from pipecat.workers.runner import WorkerRunner

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])

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
        engine = LiveEngine(backend, backend.cfg, portrait, LiveConfig(speaker_seconds=0))
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
        await asyncio.wait_for(run, 20)
        await client.close()
        for r in readers:
            r.cancel()
        return received

    received = asyncio.run(main())
    assert {(f.width, f.height) for f in received["video"]} == {(512, 512)}
    assert len(received["audio"]) >= 10

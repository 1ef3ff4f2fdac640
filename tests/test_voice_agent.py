"""The framework-free parts of the voice-agent adapters: one model per process, the agent's speech in, sound out."""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
import pytest
from conftest import ASSETS, speech_like

from facecast.cli import add_livekit_worker
from facecast.engine.errors import InputError
from facecast.streaming.integrations.voice_agent import AgentSpeech, AvatarEngines, SoundGate
from facecast.streaming.live.engine import OutputFrame


def test_sessions_share_one_model_and_keep_their_own_state(tiny_model):
    engines = AvatarEngines(ASSETS / "astronaut.jpg", tiny_model, max_sessions=2)
    a, b = engines.new_engine(), engines.new_engine()
    assert a.backend is b.backend and a.avatar is b.avatar  # one loaded model, one prepared avatar
    assert a.mixer is not b.mixer and a.gate is not b.gate  # each session's own state

    async def main():
        await a.start()
        during = engines.load()
        await a.stop()
        return during

    assert asyncio.run(main()) == 0.5 and engines.load() == 0.0
    engines.release(a)
    assert engines.active == 0


def test_agent_speech_takes_any_rate_and_channels_and_marks_the_segment_end(backend, portrait):
    from facecast.streaming.live.engine import LiveEngine

    engine = LiveEngine(backend, portrait)
    speech = AgentSpeech(engine, "agent")
    mono = (speech_like(0.5, rate=24000) * 32767).astype("<i2")
    stereo = np.stack([mono, mono], axis=1).reshape(-1)  # interleaved L R
    speech.write(stereo.tobytes(), 24000, 2)
    speech.end_segment("turn-1")
    assert speech.buffer.buffered_samples == 8000  # 0.5 s at 16 kHz, the resampler's tail flushed in
    assert speech.interrupt() == ["turn-1"] and speech.buffer.buffered_samples == 0
    speech.close()
    assert engine.mixer.sources == {}


def test_sound_goes_out_from_a_segments_first_audible_frame_to_its_end():
    def frame(audible: bool, marks: tuple = ()) -> OutputFrame:
        return OutputFrame(
            0, np.zeros((1, 1, 3), np.uint8), np.zeros(1920, np.int16), 0, 0, None, 0.0, False, audible, marks
        )

    gate = SoundGate()
    seq = [frame(False), frame(True), frame(False), frame(True, ("end",)), frame(False)]
    assert [gate.step(f) for f in seq] == [False, True, True, True, False]  # a gap inside the segment keeps sound
    gate.step(frame(True))
    gate.cut()
    assert gate.step(frame(False)) is False


def test_livekit_worker_says_what_is_missing():
    parser = argparse.ArgumentParser()
    add_livekit_worker(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["livekit-worker", "--url", ""])
    try:
        import livekit.agents  # noqa: F401
    except ModuleNotFoundError:  # the core install: the command says which extra to install
        with pytest.raises(InputError, match=r"pip install 'facecast\[livekit\]'"):
            args.func(args)
        return
    with pytest.raises(InputError, match="LIVEKIT_URL"):
        args.func(args)
    args = parser.parse_args(["livekit-worker", "--url", "ws://127.0.0.1:7880"])
    with pytest.raises(InputError, match="--room and --agent-identity"):
        args.func(args)

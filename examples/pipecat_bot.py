"""A Pipecat voice bot with a facecast avatar: speak to it in the browser, it answers with a lip-synced face.

    pip install 'facecast[pipecat]' 'pipecat-ai[deepgram,openai,cartesia,silero,runner]'
    export DEEPGRAM_API_KEY=... OPENAI_API_KEY=... CARTESIA_API_KEY=...
    python examples/pipecat_bot.py          # then open http://localhost:7860/client

STT, LLM and TTS are yours to choose: change the three lines marked CHOOSE (any Pipecat service works; the avatar
only needs the TTS's audio). facecast runs locally: FACECAST_AVATAR / FACECAST_MODEL / FACECAST_BACKEND /
FACECAST_DEVICE pick the portrait, the model and where it runs (e.g. onnxruntime, or torch on cuda).
"""

from __future__ import annotations

import os

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from facecast.engine.bundled import ASSETS
from facecast.streaming.integrations.pipecat_video import FacecastVideoService
from facecast.streaming.integrations.voice_agent import AvatarEngines

# Loaded once per process; every bot session gets its own engine on it.
ENGINES = AvatarEngines(
    avatar=os.environ.get("FACECAST_AVATAR", str(ASSETS / "astronaut.jpg")),
    **({"model": os.environ["FACECAST_MODEL"]} if "FACECAST_MODEL" in os.environ else {}),
    backend=os.environ.get("FACECAST_BACKEND", "torch"),
    device=os.environ.get("FACECAST_DEVICE", "cpu"),
)
HEIGHT, WIDTH = ENGINES.avatar.frames.shape[1:3]

transport_params = {
    "webrtc": lambda: TransportParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        video_out_enabled=True,
        video_out_is_live=True,  # the avatar's pictures go out as they come, 25 a second
        video_out_width=WIDTH,
        video_out_height=HEIGHT,
        video_out_framerate=25,
    ),
}


async def bot(runner_args: RunnerArguments) -> None:
    transport = await create_transport(runner_args, transport_params)
    stt = DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"])  # CHOOSE your STT
    llm = OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"])  # CHOOSE your LLM
    tts = CartesiaTTSService(
        api_key=os.environ["CARTESIA_API_KEY"], voice_id=os.environ.get("CARTESIA_VOICE_ID", "")
    )  # CHOOSE your TTS

    engine = ENGINES.new_engine()
    avatar = FacecastVideoService(engine)
    context = LLMContext(
        [{"role": "system", "content": "You are a friendly assistant. Answer in one or two short sentences."}]
    )
    # the VAD starts user turns: its UserStartedSpeakingFrame / InterruptionFrame cut the avatar off (barge-in)
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )

    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            llm,
            tts,
            avatar,  # after the TTS: its audio in, pictures + the same audio out
            transport.output(),
            aggregators.assistant(),
        ]
    )
    task = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True))

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        context.add_message({"role": "user", "content": "Say hello."})
        await task.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await task.cancel()

    try:
        runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
        await runner.add_workers(task)
        await runner.run()
    finally:
        ENGINES.release(engine)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()

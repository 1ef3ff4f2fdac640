"""A LiveKit voice agent with a facecast avatar, in the agent's own process (a GPU agent host).

    pip install 'facecast[livekit]' 'livekit-agents[silero]~=1.8'
    export LIVEKIT_URL=wss://... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    python examples/livekit_agent.py dev     # then join the room from the Agents Playground or your app

STT, LLM and TTS are yours to choose: change the three lines marked CHOOSE (LiveKit Inference model strings as
here, or any plugin object, e.g. openai.TTS()). facecast runs locally: FACECAST_AVATAR / FACECAST_MODEL /
FACECAST_BACKEND / FACECAST_DEVICE pick the portrait, the model and where it runs; FACECAST_SESSIONS is how many
rooms one process serves (its load function reports them to LiveKit's dispatcher, see docs/scaling.md).

The avatar in a separate process instead (another GPU host): replace FacecastAvatarSession(...) by
RemoteFacecastAvatar() and run `facecast livekit-worker --room ROOM --agent-identity AGENT` there.
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobExecutorType, cli, room_io
from livekit.plugins import silero

from facecast.engine.bundled import ASSETS
from facecast.streaming.integrations.livekit_avatar import FacecastAvatarSession
from facecast.streaming.integrations.voice_agent import AvatarEngines

# One model for every room this process serves: jobs run as threads of this process, not as processes of their own.
ENGINES = AvatarEngines(
    avatar=os.environ.get("FACECAST_AVATAR", str(ASSETS / "astronaut.jpg")),
    **({"model": os.environ["FACECAST_MODEL"]} if "FACECAST_MODEL" in os.environ else {}),
    backend=os.environ.get("FACECAST_BACKEND", "torch"),
    device=os.environ.get("FACECAST_DEVICE", "cpu"),
    max_sessions=int(os.environ.get("FACECAST_SESSIONS", "1")),
)

server = AgentServer(
    job_executor_type=JobExecutorType.THREAD,
    load_fnc=ENGINES.load,  # a full host (load 1.0 >= the threshold) gets no more rooms
    load_threshold=0.99,
)


@server.rtc_session(agent_name="facecast-agent")  # explicit dispatch: rooms ask for this agent by name
async def entrypoint(ctx: JobContext) -> None:
    session = AgentSession(
        stt="deepgram/nova-3",  # CHOOSE your STT
        llm="openai/gpt-4.1-mini",  # CHOOSE your LLM
        tts="cartesia/sonic-2",  # CHOOSE your TTS
        vad=silero.VAD.load(),
    )
    engine = ENGINES.new_engine()
    avatar = FacecastAvatarSession(engine)
    await avatar.start(session, room=ctx.room)  # before session.start: the agent's audio now goes to the avatar

    async def close_avatar() -> None:
        await avatar.aclose()
        ENGINES.release(engine)

    ctx.add_shutdown_callback(close_avatar)
    await session.start(
        agent=Agent(instructions="You are a friendly assistant. Answer in one or two short sentences."),
        room=ctx.room,
        room_options=room_io.RoomOptions(audio_output=False),  # the avatar publishes the voice with its video
    )
    session.generate_reply(instructions="Greet the user.")


if __name__ == "__main__":
    cli.run_app(server)

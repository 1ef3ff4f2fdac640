"""``facecast livekit-worker``: the avatar as its own LiveKit participant (see livekit_avatar.py beside it).

livekit is imported when the worker runs, so the core install (without the ``livekit`` extra) still has a working
CLI.
"""

from __future__ import annotations

from pathlib import Path

from facecast.engine.errors import InputError

from ..config import AVATAR_IDENTITY, LiveConfig


def run_livekit_worker(
    url: str | None,
    avatar: Path,
    model: Path,
    backend: str = "torch",
    device: str = "cpu",
    live: LiveConfig = LiveConfig(),
    token: str | None = None,
    room_name: str | None = None,
    agent_identity: str | None = None,
    identity: str = AVATAR_IDENTITY,
) -> None:
    """Join ``url`` and show ``agent_identity``'s speech (DataStream audio in, video out) until Ctrl+C.

    Without ``token``, one is made for ``room_name`` from $LIVEKIT_API_KEY/SECRET."""
    try:
        from livekit import rtc

        from . import livekit_avatar as lk
    except ImportError as e:
        raise InputError(f"livekit-agents is not installed ({e}): pip install 'facecast[livekit]'.") from e
    from ..web.serve import event_loop
    from .voice_agent import AvatarEngines

    if not url:
        raise InputError("no LiveKit server: pass --url or set LIVEKIT_URL.")
    config = lk.LiveKitAvatarConfig(avatar_identity=identity)
    if token is None:
        if not room_name or not agent_identity:
            raise InputError("without --token, give --room and --agent-identity (the token is made for them).")
        token = lk.worker_token(room_name, agent_identity, config)
    engine = AvatarEngines(avatar, model, backend, device, live).new_engine()

    async def main() -> None:
        room = rtc.Room()
        await room.connect(url, token)
        print(f"facecast livekit-worker in room {room.name} as {room.local_participant.identity} (Ctrl+C stops)")
        try:
            await lk.run_worker(engine, room, agent_identity, config)
        finally:
            await room.disconnect()

    loop = event_loop()
    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()

"""``facecast livekit-worker``: the avatar as its own LiveKit participant (see streaming/livekit_avatar.py).

Self-contained so the CLI only calls ``add_livekit_worker(subparsers)``; livekit is imported when the command
runs, so the core install (without the ``livekit`` extra) still has a working CLI.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.errors import InputError
from facecast.export.backends import BACKENDS

from .commands import ASSETS
from .config import LiveConfig

AVATAR_IDENTITY = "facecast-avatar"  # the worker's participant identity (LiveKitAvatarConfig's default too)


def add_livekit_worker(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser(
        "livekit-worker", help="join a LiveKit room as the agent's avatar (DataStream audio in, video out)"
    )
    sp.add_argument("--url", default=os.environ.get("LIVEKIT_URL"), help="LiveKit server (default: $LIVEKIT_URL)")
    sp.add_argument("--token", default=None, help="join token (default: made from $LIVEKIT_API_KEY/SECRET)")
    sp.add_argument("--room", default=None, help="room to join (with --agent-identity, when no --token)")
    sp.add_argument("--agent-identity", default=None, help="the agent whose speech to show (default: the first)")
    sp.add_argument("--identity", default=AVATAR_IDENTITY, help="this worker's participant identity")
    sp.add_argument("--avatar", type=Path, default=ASSETS / "astronaut.jpg", help="portrait, idle video or bundle")
    sp.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model (or export) folder")
    sp.add_argument("--backend", default="torch", choices=BACKENDS)
    sp.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    sp.add_argument("--steps", type=int, default=LiveConfig.steps, help="DDIM steps per frame")
    sp.add_argument("--processing-frames", type=int, default=LiveConfig.processing_frames)
    sp.set_defaults(func=cmd_livekit_worker)


def cmd_livekit_worker(args: argparse.Namespace) -> None:
    try:
        from livekit import rtc

        from . import livekit_avatar as lk
    except ImportError as e:
        raise InputError(f"livekit-agents is not installed ({e}): pip install 'facecast[livekit]'.") from e
    from .commands import _event_loop
    from .voice_agent import AvatarEngines

    if not args.url:
        raise InputError("no LiveKit server: pass --url or set LIVEKIT_URL.")
    config = lk.LiveKitAvatarConfig(avatar_identity=args.identity)
    token = args.token
    if token is None:
        if not args.room or not args.agent_identity:
            raise InputError("without --token, give --room and --agent-identity (the token is made for them).")
        token = lk.worker_token(args.room, args.agent_identity, config)
    live = LiveConfig(steps=args.steps, processing_frames=args.processing_frames)
    engine = AvatarEngines(args.avatar, args.model, args.backend, args.device, live).new_engine()

    async def main() -> None:
        room = rtc.Room()
        await room.connect(args.url, token)
        print(f"facecast livekit-worker in room {room.name} as {room.local_participant.identity} (Ctrl+C stops)")
        try:
            await lk.run_worker(engine, room, args.agent_identity, config)
        finally:
            await room.disconnect()

    loop = _event_loop()
    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()

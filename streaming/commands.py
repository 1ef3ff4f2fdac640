"""``facecast serve``: the live engine behind a web page. The CLI calls ``add_serve(subparsers)`` to register it."""

from __future__ import annotations

import argparse
import asyncio
import logging
from functools import partial
from pathlib import Path

from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.errors import InputError
from facecast.export.backends import BACKENDS

from .config import LiveConfig, ServerConfig

ASSETS = Path(__file__).resolve().parent.parent / "engine" / "assets"
log = logging.getLogger("facecast.serve")


def add_serve(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser("serve", help="live: speech in, the avatar's WebRTC video and audio out, page at /")
    sp.add_argument(
        "--avatar", type=Path, default=ASSETS / "astronaut.jpg", help="portrait, idle video or prepared bundle"
    )
    sp.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="model folder for torch, export folder for onnxruntime/tensorrt (default: the bundled model)",
    )
    sp.add_argument("--backend", default="torch", choices=BACKENDS)
    sp.add_argument("--device", default="cpu", help="torch device for the torch backend (cpu, cuda)")
    sp.add_argument("--host", default=ServerConfig.host, help="address to bind (default: loopback only)")
    sp.add_argument("--port", type=int, default=ServerConfig.port)
    sp.add_argument("--steps", type=int, default=LiveConfig.steps, help="DDIM steps per frame (1-4)")
    sp.add_argument("--audio-file", type=Path, default=None, help="loop this file as the talker")
    sp.add_argument("--mic", action="store_true", help="use this machine's microphone as the talker (PortAudio)")
    sp.add_argument("--mic-device", default=None, help="sounddevice input device name or index")
    sp.add_argument(
        "--processing-frames",
        type=int,
        default=LiveConfig.processing_frames,
        help="40 ms ticks each frame may take to render; more = smoother on slow machines, but later",
    )
    sp.set_defaults(func=cmd_serve)


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (lower per-packet overhead for aiortc), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def cmd_serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from facecast.engine.avatar import load_avatar
    from facecast.engine.system import require_portaudio
    from facecast.export.backends import load_backend

    from .live import LiveEngine
    from .server import SESSIONS, create_app
    from .sources import FileSource, MicrophoneSource

    if args.mic:
        require_portaudio()
    if args.audio_file is not None and not Path(args.audio_file).is_file():
        raise InputError(f"audio file not found: {args.audio_file}. Check the path.")
    backend = load_backend(args.backend, Path(args.model), device=args.device)
    cfg = backend.cfg
    avatar = load_avatar(args.avatar, backend)
    live = LiveConfig(steps=args.steps, processing_frames=args.processing_frames)
    engine = LiveEngine(backend, cfg, avatar, live)
    sources = []
    if args.audio_file is not None:
        sources.append(FileSource(engine, args.audio_file, loop=True).run)
    if args.mic:
        sources.append(MicrophoneSource(engine, args.mic_device).run)
    config = ServerConfig(host=args.host, port=args.port)
    app = create_app(
        engine,
        config,
        avatar_loader=partial(load_avatar, backend=backend),
        sources=tuple(sources),
    )
    if not config.loopback:
        # Beyond loopback every request needs a token: these two are the only way in, so they go to the console.
        sessions = app[SESSIONS]
        print(f"server token (POST /sessions, Authorization: Bearer ...): {sessions.server_token}")
        print(f"its own session: http://{args.host}:{args.port}/?session=default&token={sessions.default.token}")
    loop = _event_loop()
    loop.run_until_complete(engine.warm_up())  # first torch calls and Resemblyzer's load, before anyone waits
    print(f"facecast serving http://{args.host}:{args.port}/  (latency {engine.latency_ms:.0f} ms; Ctrl+C stops)")
    web.run_app(app, host=args.host, port=args.port, loop=loop, print=None)

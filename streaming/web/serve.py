"""``facecast serve`` as a function: the live engine behind a web page, speech in, WebRTC video and audio out.

from facecast.streaming.web.serve import serve
serve("portrait.jpg", backend="onnxruntime", model="export/", audio_file="speech.wav")  # blocks until Ctrl+C
"""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import partial
from pathlib import Path

from facecast.engine.bundled import DEFAULT_AVATAR
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.errors import InputError

from ..config import LiveConfig, ServerConfig

log = logging.getLogger("facecast.serve")


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (lower per-packet overhead for aiortc), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def load_face_models_for(avatar: Path) -> threading.Thread | None:
    """dlib's face models, loading in the background from launch where the server's own avatar is a portrait or a
    video (its preparation needs them): beside the backend's load, and ``load_avatar`` waits for this load rather than
    starting another. None for a prepared bundle."""
    if Path(avatar).is_dir():
        return None
    from facecast.engine.avatar.face import preload_dlib_in_background

    return preload_dlib_in_background()


def load_face_models_for_sessions(server: ServerConfig) -> threading.Thread | None:
    """Once the server is ready: dlib's face models, loading in the background for the portraits sessions may bring
    (``ServerConfig.preload_face_landmarks``), while the server waits for its first viewer, so a bundle server is ready
    no later for it. A session that brings a portrait meanwhile waits for this load. None where it is off."""
    if not server.preload_face_landmarks:
        return None
    from facecast.engine.avatar.face import preload_dlib_in_background

    return preload_dlib_in_background()


def serve(
    avatar: Path = DEFAULT_AVATAR,
    model: Path = DEFAULT_MODEL_DIR,
    backend: str = "torch",
    device: str = "cpu",
    server: ServerConfig = ServerConfig(),
    live: LiveConfig = LiveConfig(),
    audio_file: Path | None = None,
    mic: bool = False,
    mic_device: str | int | None = None,
) -> None:
    """Serve ``avatar`` (portrait, idle video or bundle) on ``server.host:server.port`` until interrupted.

    ``model`` is a model folder for torch, an export folder for onnxruntime/tensorrt; ``audio_file`` loops a file
    as the talker, ``mic`` uses this machine's microphone; viewers can also talk from the page.
    """
    from aiohttp import web

    from facecast.engine.avatar.prepare import load_avatar
    from facecast.engine.system import require_portaudio
    from facecast.export.backends import load_backend

    from ..live.engine import LiveEngine
    from ..live.sources import FileSource, MicrophoneSource
    from .server import SESSIONS, create_app

    if mic:
        require_portaudio()
    if audio_file is not None and not Path(audio_file).is_file():
        raise InputError(f"audio file not found: {audio_file}. Check the path.")
    load_face_models_for(avatar)
    loaded = load_backend(backend, Path(model), device=device)
    engine = LiveEngine(loaded, load_avatar(avatar, loaded), live)
    sources = []
    if audio_file is not None:
        sources.append(FileSource(engine, audio_file, loop=True).run)
    if mic:
        sources.append(MicrophoneSource(engine, mic_device).run)
    app = create_app(engine, server, avatar_loader=partial(load_avatar, backend=loaded), sources=tuple(sources))
    if not server.loopback:
        # Beyond loopback every request needs a token: these two are the only way in, so they go to the console.
        sessions = app[SESSIONS]
        print(f"server token (POST /sessions, Authorization: Bearer ...): {sessions.server_token}")
        print(f"its own session: http://{server.host}:{server.port}/?session=default&token={sessions.default.token}")
    loop = event_loop()
    loop.run_until_complete(engine.warm_up())  # first torch calls and Resemblyzer's load, before anyone waits
    load_face_models_for_sessions(server)
    print(f"facecast serving http://{server.host}:{server.port}/  (latency {engine.latency_ms:.0f} ms; Ctrl+C stops)")
    web.run_app(app, host=server.host, port=server.port, loop=loop, print=None)

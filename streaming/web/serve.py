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
from typing import TYPE_CHECKING

from facecast.engine.bundled import DEFAULT_AVATAR
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.errors import InputError

from ..config import LiveConfig, ServerConfig

if TYPE_CHECKING:
    from ..live.engine import LiveEngine

log = logging.getLogger("facecast.serve")


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (lower per-packet overhead for aiortc), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def start_face_models(avatar: Path, server: ServerConfig) -> threading.Thread | None:
    """dlib's face models, loading in the background from now (``preload_dlib_in_background``) where the server
    needs them: to prepare its portrait or video avatar, or for the portraits sessions may bring
    (``ServerConfig.preload_face_landmarks``); None where it needs none."""
    if not server.preload_face_landmarks and Path(avatar).is_dir():
        return None
    from facecast.engine.avatar.face import preload_dlib_in_background

    return preload_dlib_in_background()


async def warm_up(engine: LiveEngine, face_models: threading.Thread | None = None) -> None:
    """Before anyone waits: the models' first calls and Resemblyzer's load (``LiveEngine.warm_up``), and the end of
    ``face_models``' load (``start_face_models``)."""
    jobs = [engine.warm_up()]
    if face_models is not None:
        jobs.append(asyncio.get_running_loop().run_in_executor(None, face_models.join))
    await asyncio.gather(*jobs)


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
    face_models = start_face_models(avatar, server)  # loads while the backend does
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
    loop.run_until_complete(warm_up(engine, face_models))
    print(f"facecast serving http://{server.host}:{server.port}/  (latency {engine.latency_ms:.0f} ms; Ctrl+C stops)")
    web.run_app(app, host=server.host, port=server.port, loop=loop, print=None)

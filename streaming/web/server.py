"""The aiohttp app: the page, sessions, WebRTC signalling, pushed PCM, stats and avatar changes.

GET    /               the bundled page (static/index.html; ``?session=ID&token=T`` makes it use that session)
POST   /sessions       optional image (or idle video) body -> {"id", "token"}: a new session, its own avatar and talker
DELETE /sessions/ID    end that session
POST   /offer          {sdp, type} -> answer; the viewer receives the session's video and audio, and may send a mic
GET    /push           WebSocket: binary int16 LE mono PCM (16 kHz, or a JSON header {"sample_rate": N} first);
                       {"interrupt": true} drops every queued and in-flight frame (barge-in), answered
                       {"interrupted": N}
GET    /stats          JSON: fps, latency, skipped/dropped frames, the session's peers
POST   /avatar         an image (or idle video) body: prepare it and switch the session's engine to it

Every request but ``/`` and ``POST /sessions`` names its session with ``?session=ID`` (none: the server's own) and
carries its token (``Authorization: Bearer T`` or ``?token=T``); see sessions.py for who needs which token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from facecast.engine.avatar.prepare import Avatar
from facecast.engine.errors import FacecastError, InputError

from ..config import ServerConfig
from ..live.engine import LiveEngine
from ..live.sources import PushDecoder
from .sessions import ServedSession, SessionError, SessionRegistry, request_token
from .webrtc import Peers, parse_offer

log = logging.getLogger("facecast.server")
STATIC = Path(__file__).resolve().parent / "static"

ENGINE = web.AppKey("engine", LiveEngine)  # the server's own session's engine
PEERS = web.AppKey("peers", Peers)  # ... and its viewers
SESSIONS = web.AppKey("sessions", SessionRegistry)
CONFIG = web.AppKey("config", ServerConfig)
BACKGROUND = web.AppKey("background", list)
AVATAR_LOADER = web.AppKey("avatar_loader", object)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def session_of(request: web.Request) -> ServedSession:
    """The session a request names and may use (SessionError otherwise, turned into its status by a middleware)."""
    return request.app[SESSIONS].authorize(request.query.get("session"), request_token(request))


@web.middleware
async def session_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except SessionError as e:
        return error(e.status, str(e))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def create_session(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    sessions.authorize_create(request_token(request))
    data = await request.read()
    avatar = None
    if data:
        if request.app[AVATAR_LOADER] is None:
            return error(400, "this server cannot prepare avatars: POST /sessions without a body uses its own")
        try:
            avatar = await _load_avatar(request, sessions.default.engine, data)
        except FacecastError as e:
            return error(400, str(e))
    session = await sessions.create(avatar)
    return web.json_response({"id": session.id, "token": session.token}, status=201)


async def end_session(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    session = sessions.authorize(request.match_info["id"], request_token(request))
    if session is sessions.default:
        return error(400, "the server's own session ends with the server")
    await sessions.end(session)
    return web.json_response({"ended": session.id})


async def offer(request: web.Request) -> web.Response:
    session = session_of(request)
    try:
        params = await request.json()
    except json.JSONDecodeError:
        return error(400, 'POST /offer wants a JSON body {"sdp": "...", "type": "offer"}.')
    try:
        answer = await session.peers.answer(parse_offer(params))
    except InputError as e:
        return error(400, str(e))
    except ValueError as e:  # aiortc refuses an SDP it parsed but cannot negotiate
        return error(400, f"cannot answer this offer ({e}): send the browser's offer unchanged.")
    return web.json_response({"sdp": answer.sdp, "type": answer.type})


async def push(request: web.Request) -> web.WebSocketResponse:
    session = session_of(request)  # before the upgrade: a refused client gets a plain HTTP error
    config = request.app[CONFIG].push
    ws = web.WebSocketResponse(max_msg_size=config.max_message_bytes)
    await ws.prepare(request)
    engine = session.engine
    buf = engine.open_source("push", live=False, max_s=config.max_ahead_s)
    decoder = PushDecoder(buf, config)
    clients = session.push_clients
    clients.add(ws)
    try:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.BINARY:
                    decoder.pcm(msg.data)
                elif msg.type == WSMsgType.TEXT and decoder.is_interrupt(msg.data):
                    engine.interrupt()
                    await ws.send_json({"interrupted": engine.counters.interrupts})
                elif msg.type == WSMsgType.TEXT:
                    decoder.header(msg.data)
            except FacecastError as e:
                # Only this client is told and closed; the engine and everyone else carry on.
                await ws.send_json({"error": str(e)})
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=str(e)[:120].encode())
                break
    finally:
        clients.discard(ws)
        engine.close_source(buf)
        request.app[SESSIONS].peer_left(session)
    return ws


async def stats(request: web.Request) -> web.Response:
    return web.json_response(session_of(request).stats())


async def _load_avatar(request: web.Request, engine: LiveEngine, data: bytes) -> Avatar:
    loader: Callable[[Path], Avatar] = request.app[AVATAR_LOADER]
    suffix = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4"}.get(
        request.content_type, Path(request.query.get("name", "avatar.jpg")).suffix or ".jpg"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"avatar{suffix}"
        path.write_bytes(data)
        # Face detection and encoding are model work: on the model thread, between two frames.
        return await engine.call_in_worker(loader, path)


async def change_avatar(request: web.Request) -> web.Response:
    session = session_of(request)
    data = await request.read()
    if not data:
        return error(400, "POST /avatar wants the image (or idle video) file as the request body.")
    try:
        avatar = await _load_avatar(request, session.engine, data)
    except FacecastError as e:
        return error(400, str(e))
    await session.engine.set_avatar(avatar)
    return web.json_response({"avatar": avatar.source, "frames": avatar.num_frames})


async def on_startup(app: web.Application) -> None:
    await app[SESSIONS].start()


async def on_shutdown(app: web.Application) -> None:
    await app[SESSIONS].close()


async def on_cleanup(app: web.Application) -> None:
    for task in app[BACKGROUND]:
        task.cancel()
    for task in app[BACKGROUND]:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[ENGINE].stop()


def create_app(
    engine: LiveEngine,
    config: ServerConfig | None = None,
    avatar_loader: Callable[[Path], Avatar] | None = None,
    sources: tuple[Callable[[], Awaitable[None]], ...] = (),
) -> web.Application:
    """The app around ``engine``, the server's own session (more are created by POST /sessions, on its model
    worker); ``sources`` are coroutine factories (file, microphone) that talk into it while the server runs."""
    config = config or ServerConfig()
    app = web.Application(client_max_size=config.max_upload_bytes, middlewares=[session_errors])
    sessions = SessionRegistry(engine, config.sessions, config, require_tokens=not config.loopback)
    app[ENGINE] = engine
    app[CONFIG] = config
    app[SESSIONS] = sessions
    app[PEERS] = sessions.default.peers
    app[BACKGROUND] = []
    app[AVATAR_LOADER] = avatar_loader

    async def start_sources(app: web.Application) -> None:
        for make in sources:
            app[BACKGROUND].append(asyncio.create_task(_supervise(make), name="facecast-source"))

    app.on_startup.append(on_startup)
    app.on_startup.append(start_sources)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/", index)
    app.router.add_post("/sessions", create_session)
    app.router.add_delete("/sessions/{id}", end_session)
    app.router.add_post("/offer", offer)
    app.router.add_get("/push", push)
    app.router.add_get("/stats", stats)
    if avatar_loader is not None:
        app.router.add_post("/avatar", change_avatar)
    app.router.add_static("/static", STATIC)
    return app


async def _supervise(make: Callable[[], Awaitable[None]]) -> None:
    """A source that fails (no microphone, unreadable file) is logged with its message; the server keeps serving."""
    try:
        await make()
    except FacecastError as e:
        log.error("audio source stopped: %s", e)

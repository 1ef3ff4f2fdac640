"""The aiohttp app: the page, WebRTC signalling, pushed PCM, stats and avatar changes around one live engine.

GET  /        the bundled page (static/index.html)
POST /offer   {sdp, type} -> answer; the viewer receives the avatar's video and audio, and may send a mic
GET  /push    WebSocket: binary int16 LE mono PCM (16 kHz, or a JSON header {"sample_rate": N} first);
              {"interrupt": true} drops every queued and in-flight frame (barge-in), answered {"interrupted": N}
GET  /stats   JSON: fps, latency, skipped/dropped frames, sessions
POST /avatar  an image (or idle video) body: prepare it and switch the engine to it
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

from facecast.engine.avatar import Avatar
from facecast.engine.errors import FacecastError, InputError

from .config import ServerConfig
from .live import LiveEngine
from .sources import PushDecoder
from .webrtc import Peers, parse_offer

log = logging.getLogger("facecast.server")
STATIC = Path(__file__).resolve().parent / "static"

ENGINE = web.AppKey("engine", LiveEngine)
PEERS = web.AppKey("peers", Peers)
CONFIG = web.AppKey("config", ServerConfig)
PUSH_CLIENTS = web.AppKey("push_clients", set)
BACKGROUND = web.AppKey("background", list)
AVATAR_LOADER = web.AppKey("avatar_loader", object)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def offer(request: web.Request) -> web.Response:
    try:
        params = await request.json()
    except json.JSONDecodeError:
        return error(400, 'POST /offer wants a JSON body {"sdp": "...", "type": "offer"}.')
    try:
        answer = await request.app[PEERS].answer(parse_offer(params))
    except InputError as e:
        return error(400, str(e))
    except ValueError as e:  # aiortc refuses an SDP it parsed but cannot negotiate
        return error(400, f"cannot answer this offer ({e}): send the browser's offer unchanged.")
    return web.json_response({"sdp": answer.sdp, "type": answer.type})


async def push(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CONFIG].push
    ws = web.WebSocketResponse(max_msg_size=config.max_message_bytes)
    await ws.prepare(request)
    engine = request.app[ENGINE]
    buf = engine.open_source("push", live=False, max_s=config.max_ahead_s)
    decoder = PushDecoder(buf, config)
    clients = request.app[PUSH_CLIENTS]
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
    return ws


async def stats(request: web.Request) -> web.Response:
    peers = request.app[PEERS]
    body = request.app[ENGINE].stats()
    body["sessions"] = {
        "viewers": len(peers.pcs),
        "browser_talkers": peers.talkers,
        "push_clients": len(request.app[PUSH_CLIENTS]),
    }
    return web.json_response(body)


async def change_avatar(request: web.Request) -> web.Response:
    loader: Callable[[Path], Avatar] = request.app[AVATAR_LOADER]
    engine = request.app[ENGINE]
    data = await request.read()
    if not data:
        return error(400, "POST /avatar wants the image (or idle video) file as the request body.")
    suffix = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4"}.get(
        request.content_type, Path(request.query.get("name", "avatar.jpg")).suffix or ".jpg"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"avatar{suffix}"
        path.write_bytes(data)
        try:
            # Face detection and encoding are model work: on the model thread, between two frames.
            avatar = await engine.call_in_worker(loader, path)
        except FacecastError as e:
            return error(400, str(e))
    await engine.set_avatar(avatar)
    return web.json_response({"avatar": avatar.source, "frames": avatar.num_frames})


async def on_startup(app: web.Application) -> None:
    await app[ENGINE].start()


async def on_shutdown(app: web.Application) -> None:
    for ws in list(app[PUSH_CLIENTS]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
    await app[PEERS].close_all()


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
    """The app around ``engine``; ``sources`` are coroutine factories (file, microphone) run while it serves."""
    config = config or ServerConfig()
    app = web.Application(client_max_size=config.max_upload_bytes)
    app[ENGINE] = engine
    app[CONFIG] = config
    app[PEERS] = Peers(engine, config)
    app[PUSH_CLIENTS] = set()
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

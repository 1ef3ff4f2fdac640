"""The independent sessions one ``facecast serve`` hosts: each its own avatar, talker and viewers, all on one model.

    POST /sessions ──▶ SessionRegistry.create ──▶ ServedSession(id, token, LiveEngine, Peers, push clients)
                                                        │ every engine on the default engine's ModelWorker
                                                        ▼ (frames of all sessions batched, model_worker.py)
    /offer, /push, /avatar, /stats, DELETE /sessions/ID ──▶ SessionRegistry.authorize(id, token)

- The server's own session (``DEFAULT_SESSION``, the engine ``facecast serve`` builds, with its file or microphone
  talker) lives as long as the server. On loopback it needs no token, so the README's commands and the page work
  as they always did; bound beyond loopback it needs its token, printed at start-up.
- A created session needs its token on every request; creating one needs the server's token when bound beyond
  loopback (nothing works there without a token).
- A created session ends when its last peer (viewer or push client) leaves, or after ``idle_timeout_s`` without
  one; ending stops its engine, closes its peers, leaves the model worker and drops every reference to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from facecast.engine.avatar.prepare import Avatar
from facecast.engine.errors import FacecastError

from ..config import ServerConfig, SessionConfig
from ..live.engine import LiveEngine
from .webrtc import Peers

log = logging.getLogger("facecast.sessions")
DEFAULT_SESSION = "default"


class SessionError(FacecastError):
    """A request that names no usable session or carries a wrong token; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ServedSession:
    id: str
    token: str
    engine: LiveEngine
    peers: Peers
    push_clients: set[web.WebSocketResponse] = field(default_factory=set)
    last_active: float = 0.0  # loop time of the last request or peer leaving
    ends_when_alone: bool = True  # False for the server's own session

    @property
    def peer_count(self) -> int:
        return len(self.peers.pcs) + len(self.push_clients)

    def stats(self) -> dict[str, Any]:
        body = self.engine.stats()
        body["sessions"] = {
            "id": self.id,
            "viewers": len(self.peers.pcs),
            "browser_talkers": self.peers.talkers,
            "push_clients": len(self.push_clients),
        }
        return body


class SessionRegistry:
    """Every live session of the server, and the rules for reaching them (see the module docstring)."""

    def __init__(
        self,
        default_engine: LiveEngine,
        config: SessionConfig,
        server_config: ServerConfig,
        require_tokens: bool,
    ) -> None:
        """``default_engine``: the server's own session; created sessions copy its backend, config, clock and
        model worker. ``require_tokens``: bound beyond loopback, so the default session and creation need tokens."""
        self.config, self.server_config, self.require_tokens = config, server_config, require_tokens
        self.server_token = secrets.token_urlsafe(config.token_bytes)  # creates sessions beyond loopback
        self.sessions: dict[str, ServedSession] = {}
        self._ending: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self.default = self._add(DEFAULT_SESSION, default_engine, ends_when_alone=False)

    def _add(self, session_id: str, engine: LiveEngine, ends_when_alone: bool = True) -> ServedSession:
        session = ServedSession(
            session_id,
            secrets.token_urlsafe(self.config.token_bytes),
            engine,
            Peers(engine, self.server_config),
            ends_when_alone=ends_when_alone,
        )
        session.peers.on_empty = lambda: self.peer_left(session)
        self.sessions[session_id] = session
        return session

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.default.engine.start()
        self._reaper = asyncio.create_task(self._reap(), name="facecast-session-reaper")

    async def close(self) -> None:
        """Server shutdown: end every session, the server's own last."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for session in [s for s in self.sessions.values() if s is not self.default]:
            await self.end(session)
        await self._close_peers(self.default)
        await asyncio.gather(*self._ending, return_exceptions=True)

    async def create(self, avatar: Avatar | None) -> ServedSession:
        """A new session on ``avatar`` (None: the server's), running, on the default engine's model worker."""
        if len(self.sessions) - 1 >= self.config.max_sessions:
            raise SessionError(503, f"this server already hosts {self.config.max_sessions} sessions: try later")
        base = self.default.engine
        engine = LiveEngine(base.backend, avatar or base.avatar, base.config, base.clock, base.speaker_fn, base.worker)
        session = self._add(secrets.token_urlsafe(self.config.id_bytes), engine)
        session.last_active = asyncio.get_running_loop().time()
        await engine.start()
        log.info("session %s created (%d live)", session.id, len(self.sessions))
        return session

    async def end(self, session: ServedSession) -> None:
        """Stop the session's engine and peers and forget it; its memory goes with the last reference."""
        if self.sessions.get(session.id) is not session or not session.ends_when_alone:
            return
        del self.sessions[session.id]
        await self._close_peers(session)
        await session.engine.stop()
        log.info("session %s ended (%d live)", session.id, len(self.sessions))

    async def _close_peers(self, session: ServedSession) -> None:
        session.peers.on_empty = None
        for ws in list(session.push_clients):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"session ended")
        await session.peers.close_all()

    def peer_left(self, session: ServedSession) -> None:
        """A viewer or push client of ``session`` left: the last one ends a created session."""
        session.last_active = asyncio.get_running_loop().time()
        if session.ends_when_alone and session.peer_count == 0 and session.id in self.sessions:
            task = asyncio.create_task(self.end(session), name=f"facecast-end-{session.id[:8]}")
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_every_s)
            await self._end_idle()

    async def _end_idle(self) -> None:
        """End created sessions nobody has used for ``idle_timeout_s`` (created and never joined, or abandoned).
        A method of its own, so that no session stays referenced by a local while the reaper sleeps."""
        now = asyncio.get_running_loop().time()
        for session in list(self.sessions.values()):
            idle = now - session.last_active
            if session.ends_when_alone and session.peer_count == 0 and idle > self.config.idle_timeout_s:
                log.info("session %s idle for %.0f s: ending it", session.id, idle)
                await self.end(session)

    # ------------------------------------------------------------------------------------------ access

    def authorize(self, session_id: str | None, token: str | None) -> ServedSession:
        """The session a request names (none: the server's own), if its token is right; else SessionError."""
        session = self.sessions.get(session_id or DEFAULT_SESSION)
        if session is None:
            raise SessionError(404, f"no session {session_id!r}: it ended or never existed; POST /sessions for one")
        if session is self.default and not self.require_tokens:
            return session
        if token is None:
            raise SessionError(401, f"session {session.id!r} needs its token: ?token=... or Authorization: Bearer")
        if not secrets.compare_digest(token.encode(), session.token.encode()):
            raise SessionError(403, f"that token is not session {session.id!r}'s")
        session.last_active = asyncio.get_running_loop().time()
        return session

    def authorize_create(self, token: str | None) -> None:
        """Creating a session is open on loopback; beyond it, it needs the server's token."""
        if not self.require_tokens:
            return
        if token is None or not secrets.compare_digest(token.encode(), self.server_token.encode()):
            raise SessionError(401, "creating a session on this server needs the server's token (printed at start)")


def request_token(request: web.Request) -> str | None:
    """The token a request carries: ``Authorization: Bearer T``, or ``?token=T`` (browsers' WebSockets cannot set
    headers)."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ").strip()
    return request.query.get("token")

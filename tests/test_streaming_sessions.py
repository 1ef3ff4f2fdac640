"""``facecast serve`` hosts independent sessions: created with an id and a token, reachable only with that token
(and, beyond loopback, nothing without one), ended when their last peer leaves or when idle, and then gone from
memory. Real sockets on 127.0.0.1; the engines wait for their model (``wall_clock_engine``), every wait is bounded
and no assertion is about how long anything took.
"""

import asyncio
import contextlib
import gc
import weakref

import cv2
import numpy as np
from aiohttp import ClientSession, WSServerHandshakeError
from conftest import ASSETS, served, speech_like, until, wall_clock_engine

from facecast.streaming.config import ServerConfig, SessionConfig
from facecast.streaming.web.server import SESSIONS, create_app


@contextlib.asynccontextmanager
async def serving(engine, config=None, **kw):
    app = create_app(engine, config or ServerConfig(port=0), **kw)
    async with served(app) as base, ClientSession(base) as http:
        yield app, http


async def create(http, token=None, content_type=None, **kw) -> tuple[int, dict]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    headers |= {} if content_type is None else {"Content-Type": content_type}
    async with http.post("/sessions", headers=headers, **kw) as r:
        return r.status, await r.json()


async def status_of(http, method: str, path: str, **kw) -> tuple[int, dict]:
    async with http.request(method, path, **kw) as r:
        return r.status, await r.json()


def is_freed(ref: weakref.ref) -> bool:
    """Whether nothing references ``ref``'s object any more. Polled: a session leaves the table before its engine
    has stopped, and on a busy machine the stop (and the reaper's frame that holds it) can take a while."""
    gc.collect()
    return ref() is None


def pcm(seconds: float) -> bytes:
    return (speech_like(seconds) * 20000).astype("<i2").tobytes()


def test_session_requests_need_that_sessions_token(backend, portrait, tiny_model):
    from functools import partial

    from facecast.engine.avatar.prepare import load_avatar

    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine, avatar_loader=partial(load_avatar, backend=backend)) as (app, http):
            (s1, a), (s2, b) = await create(http), await create(http)
            got = {"created": (s1, s2)}
            for name, token in (("none", None), ("other", b["token"]), ("own", a["token"])):
                query = {"session": a["id"]} | ({} if token is None else {"token": token})
                got[name] = {
                    "stats": (await status_of(http, "GET", "/stats", params=query))[0],
                    "offer": (await status_of(http, "POST", "/offer", params=query, json={}))[0],
                    "avatar": (await status_of(http, "POST", "/avatar", params=query, data=b""))[0],
                }
                try:
                    ws = await http.ws_connect("/push", params=query)
                    got[name]["push"] = 101
                    await ws.close()
                except WSServerHandshakeError as e:
                    got[name]["push"] = e.status
            got["unknown"] = (await status_of(http, "GET", "/stats", params={"session": "nope", "token": "x"}))[0]
            got["default"] = (await status_of(http, "GET", "/stats"))[0]  # loopback: the server's own, no token
            got["engines"] = {id(s.engine.worker) for s in app[SESSIONS].sessions.values()}
            return a, b, got

    a, b, got = asyncio.run(main())
    assert got["created"] == (201, 201) and a["id"] != b["id"] and a["token"] != b["token"] and len(a["token"]) >= 32
    assert got["none"] == {"stats": 401, "offer": 401, "avatar": 401, "push": 401}
    assert got["other"] == {"stats": 403, "offer": 403, "avatar": 403, "push": 403}
    # with its own token every request reaches the session (the empty offer and avatar are then refused as such)
    assert got["own"] == {"stats": 200, "offer": 400, "avatar": 400, "push": 101}
    assert got["unknown"] == 404 and got["default"] == 200
    assert len(got["engines"]) == 1  # every session's engine on the server's one model worker


def test_beyond_loopback_nothing_works_without_a_token(backend, portrait):
    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine, ServerConfig(host="0.0.0.0", port=0)) as (app, http):
            sessions = app[SESSIONS]
            got = {
                "stats": (await status_of(http, "GET", "/stats"))[0],
                "offer": (await status_of(http, "POST", "/offer", json={}))[0],
                "create": (await create(http))[0],
                "create_wrong": (await create(http, token=sessions.default.token))[0],
            }
            try:
                await http.ws_connect("/push")
            except WSServerHandshakeError as e:
                got["push"] = e.status
            status, made = await create(http, token=sessions.server_token)
            got["create_with_server_token"] = status
            query = {"session": made["id"], "token": made["token"]}
            got["own"] = (await status_of(http, "GET", "/stats", params=query))[0]
            default = {"token": sessions.default.token}
            got["default_with_token"] = (await status_of(http, "GET", "/stats", params=default))[0]
            return got

    got = asyncio.run(main())
    assert got["stats"] == got["offer"] == got["push"] == got["create"] == got["create_wrong"] == 401
    assert got["create_with_server_token"] == 201 and got["own"] == 200 and got["default_with_token"] == 200


def test_a_session_ends_when_its_last_peer_leaves_and_its_memory_is_returned(backend, portrait):
    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine) as (app, http):
            sessions = app[SESSIONS]
            _, made = await create(http)
            talker = weakref.ref(sessions.sessions[made["id"]].engine)
            lanes_running = engine.worker.sessions
            query = {"session": made["id"], "token": made["token"]}
            ws = await http.ws_connect("/push", params=query)
            await ws.send_bytes(pcm(1.0))
            await until(lambda: talker().counters.rendered > 0, "the pushed speech to drive the session")
            rendered_by_default = engine.counters.rendered
            await ws.close()
            await until(lambda: made["id"] not in sessions.sessions, "the session to end")
            await until(lambda: is_freed(talker), "the ended session's engine to be freed")
            after = (await status_of(http, "GET", "/stats", params=query))[0]
            return talker() is None, lanes_running, engine.worker.sessions, rendered_by_default, after

    freed, lanes_running, lanes_after, rendered_by_default, after = asyncio.run(main())
    assert freed  # no reference to the ended session's engine (its avatar, frames, model state) is left
    assert lanes_running == 2 and lanes_after == 1  # it left the shared model worker; the server's own stayed
    assert rendered_by_default == 0  # speech pushed into one session does not reach another
    assert after == 404


def test_an_idle_session_ends_by_itself(backend, portrait):
    config = ServerConfig(port=0, sessions=SessionConfig(idle_timeout_s=0.3, reap_every_s=0.05))

    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine, config) as (app, http):
            sessions = app[SESSIONS]
            _, made = await create(http)  # and nobody ever connects to it
            talker = weakref.ref(sessions.sessions[made["id"]].engine)
            await until(lambda: made["id"] not in sessions.sessions, "the idle session to end")
            await until(lambda: is_freed(talker), "the ended session's engine to be freed")
            created_again = (await create(http))[0]
            return talker() is None, created_again, engine.running

    freed, created_again, default_running = asyncio.run(main())
    assert freed and created_again == 201 and default_running


def test_sessions_get_their_own_avatar_and_a_cap(backend, portrait, tiny_model):
    from functools import partial

    from facecast.engine.avatar.prepare import load_avatar

    config = ServerConfig(port=0, sessions=SessionConfig(max_sessions=1))

    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine, config, avatar_loader=partial(load_avatar, backend=backend)) as (app, http):
            mirrored = cv2.flip(cv2.imread(str(ASSETS / "astronaut.jpg")), 1)  # another face than the server's
            body = cv2.imencode(".png", mirrored)[1].tobytes()
            status, made = await create(http, data=body, content_type="image/png")
            full = await create(http)
            own = app[SESSIONS].sessions[made["id"]].engine.avatar
            query = {"session": made["id"], "token": made["token"]}
            ended = await status_of(http, "DELETE", f"/sessions/{made['id']}", params={"token": made["token"]})
            gone = (await status_of(http, "GET", "/stats", params=query))[0]
            return status, full, own, engine.avatar, ended, gone

    status, full, own, default_avatar, ended, gone = asyncio.run(main())
    assert status == 201 and own is not default_avatar and default_avatar is not None
    assert not np.array_equal(own.frames[0], default_avatar.frames[0])
    assert full[0] == 503 and "1 sessions" in full[1]["error"]
    assert ended[0] == 200 and gone == 404

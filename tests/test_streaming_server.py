"""The server over real sockets on 127.0.0.1: aiortc clients in the test, pushed PCM, lifecycle, the CLI.

The engines wait for their model (``wall_clock_engine``), so nothing here needs this machine to keep up with 25 fps;
every wait has a generous bound so a broken server fails the test instead of hanging it, and no assertion is about
how long anything took.
"""

import asyncio
import contextlib
import fractions
import gc
import os
import threading
import time
import tracemalloc
from functools import partial

import av
import numpy as np
import pytest
from aiohttp import ClientSession, WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from conftest import ASSETS, WAIT_S, served, speech_like, until, wall_clock_engine, write_wav

from facecast.cli import build_parser
from facecast.engine.avatar.prepare import load_avatar
from facecast.engine.errors import InputError
from facecast.streaming.config import LiveConfig, ServerConfig
from facecast.streaming.live.engine import LiveEngine
from facecast.streaming.live.sources import FileSource
from facecast.streaming.web.server import PEERS, create_app

pytestmark = pytest.mark.usefixtures("loopback_ice")


@contextlib.asynccontextmanager
async def serving(engine, **kw):
    app = create_app(engine, ServerConfig(port=0), **kw)
    async with served(app) as base, ClientSession(base) as http:
        yield app, http


class Viewer:
    """A WebRTC client like the page: video received, audio received (and sent when given a track)."""

    def __init__(self, audio: MediaStreamTrack | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        if audio is None:
            self.pc.addTransceiver("audio", direction="recvonly")
        else:
            self.pc.addTrack(audio)
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.pc.on("track", lambda t: self.tracks.__setitem__(t.kind, t))

    async def connect(self, http: ClientSession) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with http.post("/offer", json=offer) as r:
            assert r.status == 200, await r.text()
            await self.pc.setRemoteDescription(RTCSessionDescription(**await r.json()))

    async def frames(self, kind: str, n: int) -> list:
        return [await asyncio.wait_for(self.tracks[kind].recv(), WAIT_S) for _ in range(n)]

    async def close(self) -> None:
        await self.pc.close()


class SpeechTrack(MediaStreamTrack):
    """A browser microphone: 48 kHz speech in 20 ms frames at real-time pace."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.pcm = (speech_like(4.0, rate=48000) * 20000).astype(np.int16)
        self.sent = 0
        self.start = None

    async def recv(self):
        loop = asyncio.get_running_loop()
        self.start = self.start or loop.time()
        await asyncio.sleep(max(0.0, self.start + self.sent / 48000 - loop.time()))
        chunk = np.take(self.pcm, range(self.sent, self.sent + 960), mode="wrap")
        frame = av.AudioFrame.from_ndarray(chunk[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.sent, fractions.Fraction(1, 48000)
        self.sent += 960
        return frame


async def stats(http: ClientSession) -> dict:
    async with http.get("/stats") as r:
        assert r.status == 200
        return await r.json()


# ------------------------------------------------------------------------------------------ WebRTC


def run_on(loop_kind: str, main):
    """asyncio's loop, or uvloop as `facecast serve` uses when installed."""
    if loop_kind == "asyncio":
        return asyncio.run(main())
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (pip install 'facecast[fast]')")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_two_viewers_get_video_and_audio_with_exact_pts_spacing(tmp_path, backend, portrait, loop_kind):
    wav = write_wav(tmp_path / "talk.wav", speech_like(2.0), 16000)

    async def main():
        engine = wall_clock_engine(backend, portrait)
        talker = FileSource(engine, wav, loop=True)
        async with serving(engine, sources=(talker.run,)) as (app, http):
            a, b = Viewer(), Viewer()
            await a.connect(http)
            await b.connect(http)
            got = [await v.frames("video", 12) for v in (a, b)], [await v.frames("audio", 12) for v in (a, b)]
            s = await stats(http)
            await a.close()
            await b.close()
        return got, s

    (videos, audios), s = run_on(loop_kind, main)
    for video, audio in zip(videos, audios, strict=True):
        assert (video[0].width, video[0].height) == (512, 512)
        steps = np.diff([f.pts for f in video])
        assert np.all(steps > 0) and np.all(steps % 3600 == 0)  # 90 kHz clock, 25 fps: 3600 a frame
        assert np.all(np.diff([f.pts for f in audio]) == 960)  # 20 ms Opus packets at 48 kHz, no gaps
        assert audio[0].sample_rate == 48000
    assert s["sessions"]["viewers"] == 2 and s["fps"] > 0 and s["sources"] == 1


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "JSON body"),
        (b"{}", '"type": "offer"'),
        (b'{"sdp": "v=0", "type": "answer"}', '"type": "offer"'),
        (b'{"sdp": "garbage", "type": "offer"}', "no video"),
        (b'{"sdp": "m=video abc", "type": "offer"}', "cannot be parsed"),
        (b'{"sdp": "v=0\\r\\nm=video 9 UDP/TLS/RTP/SAVPF 96\\r\\n", "type": "offer"}', "cannot answer"),
    ],
)
def test_malformed_offers_get_400_with_a_message(backend, portrait, body, message):
    async def main():
        async with serving(wall_clock_engine(backend, portrait)) as (app, http):
            async with http.post("/offer", data=body, headers={"Content-Type": "application/json"}) as r:
                result = r.status, await r.json()
            return result, (await stats(http))["sessions"]["viewers"]

    (status, answer), viewers = asyncio.run(main())
    assert status == 400 and message in answer["error"] and viewers == 0


def test_a_viewer_leaving_mid_stream_leaves_the_others_watching(backend, portrait):
    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine) as (app, http):
            leaving, staying = Viewer(), Viewer()
            await leaving.connect(http)
            await staying.connect(http)
            await leaving.frames("video", 3)
            await staying.frames("video", 3)
            await leaving.close()
            await until(lambda: len(app[PEERS].pcs) == 1, "the server to drop the closed viewer")
            later = await staying.frames("video", 10)
            viewers = (await stats(http))["sessions"]["viewers"]
            await staying.close()
            return later, viewers

    later, viewers = asyncio.run(main())
    assert len(later) == 10 and viewers == 1


def test_the_browser_microphone_is_the_talker(backend, portrait):
    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine) as (app, http):
            viewer = Viewer(audio=SpeechTrack())
            await viewer.connect(http)
            await until(lambda: engine.counters.rendered > 5, "frames driven by the browser microphone")
            during = await stats(http)
            await viewer.close()
            await until(lambda: not engine.mixer.sources, "the talker's source to close")
            return during

    during = asyncio.run(main())
    assert during["sessions"]["browser_talkers"] == 1 and during["model_errors"] == 0


# ------------------------------------------------------------------------------------------ pushed PCM


def test_push_garbage_or_too_fast_gets_an_error_and_only_that_client_closes(backend, portrait):
    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine) as (app, http):
            good = await http.ws_connect("/push")
            await good.send_str('{"sample_rate": 24000}')
            await good.send_bytes((speech_like(0.2, rate=24000) * 20000).astype("<i2").tobytes())
            replies = []
            for payload in (b"\x01\x02\x03", np.zeros(16000 * 3, "<i2").tobytes()):  # odd bytes; 3 s at once
                bad = await http.ws_connect("/push")
                await bad.send_bytes(payload)
                replies.append(await bad.receive_json(timeout=WAIT_S))
                closing = await bad.receive(timeout=WAIT_S)
                replies.append(closing.type)
                await bad.close()
            await good.send_bytes((speech_like(0.2, rate=24000) * 20000).astype("<i2").tobytes())
            await until(lambda: engine.counters.rendered > 0, "the good client's speech to drive the model")
            s = await stats(http)
            assert not good.closed
            await good.close()
            return replies, s

    replies, s = asyncio.run(main())
    assert "not int16 PCM" in replies[0]["error"] and replies[1] in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert "faster than real time" in replies[2]["error"] and replies[3] in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert s["sessions"]["push_clients"] == 1 and s["sources"] == 1


def test_push_interrupt_drops_the_queued_speech_and_idles_at_once(backend, portrait):
    """A TTS cut off mid-sentence: {"interrupt": true} is acknowledged, and every frame after it is the idle
    avatar with silence although a second of speech was still queued (no frames keep playing)."""

    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine) as (app, http):
            ws = await http.ws_connect("/push")
            await ws.send_bytes((speech_like(0.9, seed=2) * 20000).astype("<i2").tobytes())
            await until(lambda: engine.counters.rendered > 0, "the pushed speech to drive the model")
            queue = engine.subscribe()
            await ws.send_str('{"interrupt": true}')
            ack = await ws.receive_json(timeout=WAIT_S)
            after = [await asyncio.wait_for(queue.get(), WAIT_S) for _ in range(10)]
            await ws.close()
            return ack, after, engine.stats()

    ack, after, s = asyncio.run(main())
    assert ack == {"interrupted": 1}
    assert all(o.generated is None and not o.audible for o in after)
    assert all(np.count_nonzero(o.audio_48k) <= 48 for o in after)  # at most the resampler's edge at the cut
    assert s["model_errors"] == 0


# ------------------------------------------------------------------------------------------ lifecycle


def test_page_stats_and_avatar_change(backend, portrait, tiny_model):
    loader = partial(load_avatar, backend=backend)

    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine, avatar_loader=loader) as (app, http):
            async with http.get("/") as r:
                page = r.status, await r.text()
            s = await stats(http)
            body = (ASSETS / "astronaut.jpg").read_bytes()
            async with http.post("/avatar", data=body, headers={"Content-Type": "image/jpeg"}) as r:
                changed = r.status, await r.json()
            async with http.post("/avatar", data=b"not an image", headers={"Content-Type": "image/png"}) as r:
                refused = r.status, await r.json()
            return page, s, changed, refused, engine.avatar

    page, s, changed, refused, avatar = asyncio.run(main())
    assert page[0] == 200 and "RTCPeerConnection" in page[1] and "/stats" in page[1]
    for key in ("fps", "latency_ms", "dropped", "skipped", "render_ms", "sessions"):
        assert key in s
    assert changed[0] == 200 and avatar is not portrait and avatar.frames.shape == portrait.frames.shape
    assert refused[0] == 400 and "cannot read image" in refused[1]["error"]


POOL_MAX = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor, where aiortc runs its codecs


def thread_census() -> tuple[int, int]:
    """(threads outside asyncio's default executor, threads in it). That pool starts threads lazily up to its
    fixed size whenever codec jobs overlap, so it is bounded rather than constant."""
    names = [t.name for t in threading.enumerate()]
    pool = sum(n.startswith("asyncio_") for n in names)
    return len(names) - pool, pool


def test_fifty_connect_disconnect_cycles_do_not_grow_threads_tasks_or_memory(backend, portrait):
    async def cycle(app, http):
        viewer = Viewer()
        await viewer.connect(http)
        await viewer.frames("video", 1)
        await viewer.close()
        await until(lambda: not app[PEERS].pcs, "the server to clean up the viewer")

    async def settle(done=lambda: True):
        """Let the closed peers' tasks and threads end, which takes longer the busier the machine: until ``done()``
        (bounded; what is left is asserted below), then a few loop turns more and a garbage collection."""
        deadline = time.monotonic() + WAIT_S
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for _ in range(5):
            await asyncio.sleep(0.05)
        gc.collect()

    async def main():
        engine = wall_clock_engine(backend, portrait)
        async with serving(engine) as (app, http):
            for _ in range(3):  # warm up: executors' threads, codecs, caches
                await cycle(app, http)
            await settle()
            threads, tasks = thread_census(), len(asyncio.all_tasks())
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            for _ in range(50):
                await cycle(app, http)
            await settle(lambda: thread_census()[0] <= threads[0] and len(asyncio.all_tasks()) <= tasks)
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
            return threads, thread_census(), tasks, len(asyncio.all_tasks()), grown

    (own_before, _), (own_after, pool_after), tasks_before, tasks_after, grown = asyncio.run(main())
    assert own_after <= own_before and pool_after <= POOL_MAX
    assert tasks_after <= tasks_before
    assert grown < 2 * 1024 * 1024  # bytes: less than 40 kB per cycle would still pass, a leaked frame would not


# ------------------------------------------------------------------------------------------ the command


def test_serve_command_wires_engine_app_and_loop(monkeypatch, tmp_path, tiny_model):
    parser = build_parser()
    wav = write_wav(tmp_path / "talk.wav", speech_like(0.5), 16000)
    args = parser.parse_args(["serve", "--model", str(tiny_model), "--port", "0", "--audio-file", str(wav)])
    assert (args.host, args.steps, args.backend) == ("127.0.0.1", LiveConfig.steps, "torch")
    ran = {}

    def fake_run_app(app, host, port, loop, print):  # noqa: A002 - aiohttp's argument name
        ran.update(app=app, host=host, port=port, loop=loop)
        loop.close()

    monkeypatch.setattr(web, "run_app", fake_run_app)
    monkeypatch.setattr(LiveEngine, "warm_up", lambda self: asyncio.sleep(0))  # Resemblyzer's load is not the point
    args.func(args)
    assert ran["host"] == "127.0.0.1" and ran["port"] == 0
    assert {r.resource.canonical for r in ran["app"].router.routes()} >= {"/", "/offer", "/push", "/stats", "/avatar"}
    missing = parser.parse_args(["serve", "--model", str(tiny_model), "--audio-file", str(tmp_path / "nope.wav")])
    with pytest.raises(InputError, match="not found"):
        missing.func(missing)


@pytest.mark.parametrize("size", [(64, 96), (63, 95)])
def test_a_video_frame_is_yuv420p_at_its_pts_and_keeps_the_picture(size):
    from facecast.streaming.web.webrtc import VIDEO_TIME_BASE, video_frame

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], axis=2).astype(np.uint8)
    frame = video_frame(image, pts=3600)
    assert (frame.format.name, frame.width, frame.height) == ("yuv420p", w, h)
    assert (frame.pts, frame.time_base) == (3600, VIDEO_TIME_BASE)
    back = frame.to_ndarray(format="rgb24").astype(int)
    assert np.abs(back - image).mean() < 2.0  # limited-range YUV and 4:2:0 chroma lose a little, nothing more

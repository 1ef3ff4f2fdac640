"""WebRTC with aiortc: the engine's output as one video and one audio track, relayed to every viewer.

The engine's ticker sets the pace: the tracks only wait for its next OutputFrame, so the picture and the sound of
the same 40 ms leave together. A MediaRelay fans the two tracks out, so N viewers cost N encoders but one engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from collections.abc import Callable

import av
import cv2
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from facecast.engine.errors import InputError

from ..config import ServerConfig
from ..live.clock import AUDIO_OUT_HZ, VIDEO_CLOCK_HZ
from ..live.engine import LiveEngine, OutputFrame
from ..live.sources import consume_track

log = logging.getLogger("facecast.webrtc")
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_HZ)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_OUT_HZ)


def video_frame(image: np.ndarray, pts: int) -> av.VideoFrame:
    """A yuv420p frame (what the VP8 and H.264 encoders take) of the uint8 RGB ``image`` (H, W, 3) at ``pts``.

    OpenCV converts a 512x512 frame in about 0.15 ms against 1.3-5 ms for ``VideoFrame.reformat`` (swscale, whose
    context PyAV sets up again for every frame), and this runs once per output frame of every session, on the event
    loop. Same BT.601 limited-range coefficients; the chroma is a 2x2 mean instead of swscale's filter (mean
    difference 0.1 grey level). Odd sizes, which I420 cannot halve, go through swscale."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    else:
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
    return frame


class _EngineTrack(MediaStreamTrack):
    def __init__(self, engine: LiveEngine) -> None:
        super().__init__()
        self.engine = engine
        self._queue = engine.subscribe()

    async def next_output(self) -> OutputFrame:
        """The engine's next OutputFrame; MediaStreamError once the engine stopped or the track ended."""
        if self.readyState != "live":
            raise MediaStreamError
        out = await self._queue.get()
        if out is None:  # the engine stopped
            self.stop()
            raise MediaStreamError
        return out

    def stop(self) -> None:
        self.engine.unsubscribe(self._queue)
        super().stop()


class EngineVideoTrack(_EngineTrack):
    kind = "video"

    async def recv(self) -> av.VideoFrame:
        out = await self.next_output()
        # Converted here, once: the relay hands this same frame to every viewer's encoder thread, and aiortc's
        # encoders would otherwise each call frame.reformat() on it at once, sharing one swscale context (hangs).
        return video_frame(out.image, out.video_pts)


class EngineAudioTrack(_EngineTrack):
    """Each tick's 40 ms as two 20 ms frames: aiortc gives every RTP packet of one encoded frame the same
    timestamp, so frames longer than one 20 ms Opus packet would reach the browser with duplicate timestamps."""

    kind = "audio"
    PACKET_SAMPLES = AUDIO_OUT_HZ // 50

    def __init__(self, engine: LiveEngine) -> None:
        super().__init__(engine)
        self._pending: list[av.AudioFrame] = []

    async def recv(self) -> av.AudioFrame:
        if not self._pending:
            out = await self.next_output()
            for start in range(0, len(out.audio_48k), self.PACKET_SAMPLES):
                pcm = out.audio_48k[start : start + self.PACKET_SAMPLES]
                frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
                frame.sample_rate = AUDIO_OUT_HZ
                frame.pts, frame.time_base = out.audio_pts + start, AUDIO_TIME_BASE
                self._pending.append(frame)
        return self._pending.pop(0)


def parse_offer(params: object) -> RTCSessionDescription:
    """The browser's offer as JSON {sdp, type}; InputError saying what is wrong otherwise."""
    if not isinstance(params, dict) or not isinstance(params.get("sdp"), str) or params.get("type") != "offer":
        raise InputError('POST /offer wants JSON {"sdp": "...", "type": "offer"} from RTCPeerConnection.createOffer().')
    try:
        parsed = SessionDescription.parse(params["sdp"])
    except (AssertionError, ValueError, KeyError, IndexError, TypeError) as e:  # aiortc's parser asserts, too
        raise InputError(f"the offer's SDP cannot be parsed ({e}): send pc.localDescription.sdp unchanged.") from e
    if not any(m.kind == "video" for m in parsed.media):
        raise InputError("the offer has no video: call pc.addTransceiver('video', {direction: 'recvonly'}) first.")
    return RTCSessionDescription(sdp=params["sdp"], type="offer")


class Peers:
    """Every viewer's peer connection: created from an offer, closed when it fails, ends or the server stops."""

    def __init__(self, engine: LiveEngine, config: ServerConfig, video: MediaStreamTrack | None = None) -> None:
        """``video``: the picture track relayed to every viewer (default: the engine's own, EngineVideoTrack)."""
        self.engine, self.config = engine, config
        self.relay = MediaRelay()
        self.video = video if video is not None else EngineVideoTrack(engine)
        self.audio = EngineAudioTrack(engine)
        self.pcs: set[RTCPeerConnection] = set()
        self._talkers: dict[RTCPeerConnection, asyncio.Task[None]] = {}
        self.on_empty: Callable[[], None] | None = None  # called when the last viewer has left (sessions.py)

    @property
    def talkers(self) -> int:
        return len(self._talkers)

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        ice = [RTCIceServer(urls=u) for u in self.config.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        self.pcs.add(pc)

        @pc.on("connectionstatechange")
        async def on_connectionstatechange() -> None:
            log.info("viewer %s: %s", id(pc), pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.close(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":  # the browser's microphone: this viewer is also a talker
                self._talkers[pc] = asyncio.create_task(consume_track(self.engine, track), name="facecast-talker")

        try:
            await pc.setRemoteDescription(offer)
            for t in pc.getTransceivers():
                if t.kind == "video":
                    # Unbuffered: a viewer whose encoder falls behind skips to the newest picture.
                    pc.addTrack(self.relay.subscribe(self.video, buffered=False))
                elif t.kind == "audio":
                    pc.addTrack(self.relay.subscribe(self.audio))  # buffered: every 40 ms of sound is kept
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await self.close(pc)
            raise
        return pc.localDescription

    async def close(self, pc: RTCPeerConnection) -> None:
        if pc not in self.pcs:
            return
        self.pcs.discard(pc)
        talker = self._talkers.pop(pc, None)
        await pc.close()  # ends the remote track, so the talker task closes its source and returns
        if talker is not None:
            talker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await talker
        if not self.pcs and self.on_empty is not None:
            self.on_empty()

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(pc) for pc in list(self.pcs)))

"""What leaves the live engine and who gets it: ``OutputFrame``, the observer events (``EngineObserver``) and the
fan-out of every output frame to the subscribers' queues and the observers."""

from __future__ import annotations

import contextlib
from asyncio import Queue
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from facecast.engine.pipeline import Frame


@dataclass
class OutputFrame:
    index: int  # n on the 25 fps output clock; sent at tick n + delay_frames
    image: np.ndarray  # uint8 (H, W, 3) RGB: what viewers see
    audio_48k: np.ndarray  # int16 (1920,): input block n, i.e. the sound of this same 40 ms
    video_pts: int  # 90 kHz
    audio_pts: int  # samples at 48 kHz
    generated: Frame | None = None  # the model's frame inside the picture (None: the avatar's own frame)
    alpha: float = 0.0  # how much of the generated picture is blended over the avatar frame
    fresh: bool = False  # ``generated`` is new this tick (False: the previous picture again, nothing was ready)
    audible: bool = False  # a source played real audio into this 40 ms (not only jitter-buffer silence)
    marks: tuple[Hashable, ...] = ()  # SourceBuffer.mark_end labels whose segment's last sample is in this frame


class EngineObserver:
    """Events of a LiveEngine, for ``engine.observe(observer)``: override the ones you need (each does nothing here).

    Every callback runs on the event loop except ``frames_made``, which runs on the model thread as soon as the
    frames exist. Callbacks must be quick and must not raise: they run inside the engine's clock.
    """

    def audio_taken(self, k: int, block_16k: np.ndarray) -> None:
        """Tick k took this 40 ms of audio (float32, 16 kHz) from the sources: the sound of output frame k."""

    def frames_made(self, frames: list[Frame]) -> None:
        """Model thread: the frames one block of audio completed (a skipped one has ``timings_ms[SKIPPED]``)."""

    def frame_out(self, out: OutputFrame) -> None:
        """Output frame ``out.index`` leaves the engine for every subscriber."""

    def frames_dropped(self, n: int, count: int) -> None:
        """While output frame n was picked, ``count`` rendered frames were thrown away: ready too late to show."""


class Outputs:
    """Event loop side: the subscribers' queues and the observers of one engine."""

    def __init__(self, queue_frames: int) -> None:
        self.queue_frames = queue_frames  # each subscriber's queue holds this many frames
        self.subscribers: list[Queue[OutputFrame | None]] = []
        self.observers: list[EngineObserver] = []

    def subscribe(self) -> Queue[OutputFrame | None]:
        q: Queue[OutputFrame | None] = Queue(maxsize=self.queue_frames)
        self.subscribers.append(q)
        return q

    def unsubscribe(self, q: Queue[OutputFrame | None]) -> None:
        with contextlib.suppress(ValueError):
            self.subscribers.remove(q)

    def observe(self, observer: EngineObserver) -> None:
        self.observers.append(observer)

    def unobserve(self, observer: EngineObserver) -> None:
        with contextlib.suppress(ValueError):
            self.observers.remove(observer)

    def send(self, out: OutputFrame) -> None:
        """Output frame ``out`` to every observer, then into every subscriber's queue."""
        for o in self.observers:
            o.frame_out(out)
        for q in self.subscribers:
            self._offer(q, out)

    def end(self) -> None:
        """The end of every subscriber's stream (None)."""
        for q in self.subscribers:
            self._offer(q, None)

    def drop_queued(self) -> None:
        """Empty every subscriber's queue (a barge-in); an end-of-stream marker stays."""
        for q in self.subscribers:
            kept = [f for f in self._drain(q) if f is None]
            for f in kept:
                q.put_nowait(f)

    @staticmethod
    def _drain(q: Queue[OutputFrame | None]) -> list[OutputFrame | None]:
        items = []
        while not q.empty():
            items.append(q.get_nowait())
        return items

    @staticmethod
    def _offer(q: Queue[OutputFrame | None], item: OutputFrame | None) -> None:
        if q.full():  # a reader that fell behind loses its oldest frames, never the engine's pace
            q.get_nowait()
        q.put_nowait(item)

"""Audio in: one jitter buffer per source, mixed into one 40 ms block per output tick.

Sources write whenever their audio arrives (microphone callbacks, network packets, a paced file); the engine's
ticker takes exactly one block per tick. A buffer starts playing only once its sender may be ``jitter_ms`` late
without cutting a hole into the speech: when the block a tick would take arrived ``jitter_ms`` ago, or when the
buffer holds ``jitter_ms`` of audio beyond that block. The protection is then the same whatever the sender's block
size and whatever the phase of its blocks against the ticks. (Counting only the audio held, as this buffer once
did, protected a 40 ms sender by 40-80 ms and a 20 ms one by 20-60 ms, by the phase, and made every 40 ms sender
of the worst phase wait 80 ms for a 60 ms buffer.)
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from facecast.engine.config import FPS, SAMPLE_RATE

from ..config import LiveConfig


def clean_audio(samples: np.ndarray) -> np.ndarray:
    """float32 mono in [-1, 1]: NaN becomes silence and clipped or overdriven input is clamped, never refused."""
    x = np.nan_to_num(np.asarray(samples, np.float32).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0)


class SourceBuffer:
    """One source's audio waiting to be played, 16 kHz mono float32. Used from the event loop thread only."""

    def __init__(
        self,
        source_id: int,
        name: str,
        jitter_s: float,
        max_samples: int | None,
        trim_to_samples: int | None,
        now: Callable[[], float],
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        self.id, self.name = source_id, name
        self.jitter_s = jitter_s  # how late the sender may be once playing (see the module's docstring)
        self.jitter_samples = round(jitter_s * sample_rate)
        self.max_samples = max_samples  # beyond this the oldest audio is dropped (or trimmed to trim_to_samples)
        self.trim_to_samples = trim_to_samples
        self._now = now  # the engine's clock: when each write arrived, when a read happens
        self._chunks: deque[np.ndarray] = deque()
        self._size = 0
        self._written = 0  # samples ever written (kept or not): where an end mark sits
        self._consumed = 0  # samples ever read or dropped
        self._arrivals: deque[tuple[int, float]] = deque()  # (sample position a write ended at, when it came)
        self._marks: deque[tuple[int, Hashable]] = deque()  # (sample position, label) not reached yet
        self._reached: list[Hashable] = []  # marks the last read() passed, for the mixer to collect
        self.playing = False
        self.underruns = 0
        self.dropped_samples = 0
        self.last_read_samples = 0  # real samples (not jitter-buffer zeros) in the last read()

    @property
    def buffered_samples(self) -> int:
        return self._size

    def write(self, samples_16k: np.ndarray) -> None:
        x = clean_audio(samples_16k)
        if not x.size:
            return
        self._chunks.append(x)
        self._size += x.size
        self._written += x.size
        self._arrivals.append((self._written, self._now()))
        if self.max_samples is not None and self._size > self.max_samples:
            # A live device whose clock runs slightly fast fills its buffer over minutes; dropping the oldest audio
            # keeps the latency bounded instead of letting it grow.
            self._drop(self._size - (self.trim_to_samples if self.trim_to_samples is not None else self.max_samples))

    def mark_end(self, label: Hashable) -> None:
        """The audio written so far is a whole segment: play it out without waiting for the jitter buffer, and
        report ``label`` (Mixer.last_take.marks, then OutputFrame.marks) with the block holding its last sample."""
        self._marks.append((self._written, label))

    def pop_reached(self) -> list[Hashable]:
        """The marks whose last sample the reads so far have passed."""
        reached, self._reached = self._reached, []
        return reached

    def clear(self) -> list[Hashable]:
        """Barge-in: forget every sample waiting to play; returns the marks that will now never be reached."""
        self._consumed += self._size
        self._chunks.clear()
        self._size = 0
        self._arrivals.clear()
        self.playing = False
        dropped = [label for _, label in self._marks] + self.pop_reached()
        self._marks.clear()
        return dropped

    def read(self, n: int) -> np.ndarray:
        """Exactly n samples: the next audio when playing, zeros while (re)filling the jitter buffer."""
        out = np.zeros(n, np.float32)
        self.last_read_samples = 0
        if not self.playing:
            ended = bool(self._marks) and self._marks[-1][0] > self._consumed  # a whole segment waits: play it
            if not ended and not self._may_start(n):
                self._reach()  # a mark on an empty buffer (an empty segment) is reached at once
                return out
            self.playing = True
        got = 0
        while got < n and self._chunks:
            c = self._chunks[0]
            take = min(n - got, c.size)
            out[got : got + take] = c[:take]
            got += take
            if take == c.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = c[take:]
        self._size -= got
        self._consumed += got
        self._forget_arrivals()
        self.last_read_samples = got
        reached_end = self._reach()
        if got < n:
            self.playing = False  # ran dry: refill the jitter buffer before playing again
            self.underruns += not reached_end  # a segment that ended is not an underrun
        return out

    def _may_start(self, n: int) -> bool:
        """Whether a read of n samples may start playing: the sender has ``jitter_s`` to deliver what follows."""
        if self._size < n:
            return False
        if self._size >= n + self.jitter_samples:
            return True  # a burst (a TTS segment, a backlog): jitter_s of audio already waits behind this block
        newest = self._consumed + n  # the position this read would end at
        arrived = next(t for end, t in self._arrivals if end >= newest)
        return self._now() - arrived >= self.jitter_s

    def _forget_arrivals(self) -> None:
        while self._arrivals and self._arrivals[0][0] <= self._consumed:
            self._arrivals.popleft()

    def _reach(self) -> bool:
        reached = False
        while self._marks and self._marks[0][0] <= self._consumed:
            self._reached.append(self._marks.popleft()[1])
            reached = True
        return reached

    def _drop(self, n: int) -> None:
        self.dropped_samples += n
        self._consumed += min(n, self._size)
        while n > 0 and self._chunks:
            c = self._chunks[0]
            if c.size <= n:
                self._chunks.popleft()
                self._size -= c.size
                n -= c.size
            else:
                self._chunks[0] = c[n:]
                self._size -= n
                n = 0
        self._forget_arrivals()


@dataclass(frozen=True)
class Take:
    """What one block held besides its samples."""

    audible: bool = False  # some source played real audio into it (not only jitter-buffer silence)
    marks: tuple[Hashable, ...] = ()  # end marks whose last sample is in it


class Mixer:
    """All sources summed: several talkers at once simply mix, as in a room."""

    def __init__(
        self,
        config: LiveConfig,
        sample_rate: int = SAMPLE_RATE,
        block_samples: int | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """``block_samples``: what each take() reads (one tick's audio); ``now``: the engine's clock."""
        self.config = config
        self.sample_rate = sample_rate
        self.block_samples = block_samples or sample_rate // FPS
        self._now = now
        self.sources: dict[int, SourceBuffer] = {}
        self._ids = itertools.count()
        self.underruns = 0
        self.dropped_samples = 0  # from sources already closed; open ones keep their own counts
        self.last_take = Take()  # of the latest take()

    def open(self, name: str, live: bool, max_s: float | None = None) -> SourceBuffer:
        """A new source. ``live``: a device or network stream whose backlog is trimmed; else a paced sender."""
        sr, jitter_s = self.sample_rate, self.config.jitter_ms / 1000
        if live:
            # trimmed to what starts it playing: a tick's block and the jitter buffer behind it
            keep = self.block_samples + round(jitter_s * sr)
            limit, trim_to = self.config.live_backlog_ms * sr // 1000, keep
        else:
            limit, trim_to = (None if max_s is None else int(max_s * sr)), None
        buf = SourceBuffer(next(self._ids), name, jitter_s, limit, trim_to, self._now, sr)
        self.sources[buf.id] = buf
        return buf

    def close(self, buf: SourceBuffer) -> None:
        if self.sources.pop(buf.id, None) is not None:
            self.underruns += buf.underruns
            self.dropped_samples += buf.dropped_samples

    def take(self, n: int) -> np.ndarray:
        block = np.zeros(n, np.float32)
        audible, marks = False, []
        for buf in self.sources.values():
            block += buf.read(n)
            audible |= buf.last_read_samples > 0
            marks += buf.pop_reached()
        self.last_take = Take(audible, tuple(marks))
        return np.clip(block, -1.0, 1.0) if len(self.sources) > 1 else block

    def clear(self) -> list[Hashable]:
        """Barge-in: every source's waiting audio is dropped; returns the marks that will never be reached."""
        return [label for buf in self.sources.values() for label in buf.clear()]

    def stats(self) -> dict[str, int]:
        open_ = list(self.sources.values())
        dropped = self.dropped_samples + sum(b.dropped_samples for b in open_)
        return {
            "sources": len(open_),
            "underruns": self.underruns + sum(b.underruns for b in open_),
            "audio_dropped_ms": dropped * 1000 // self.sample_rate,
        }

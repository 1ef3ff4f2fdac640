"""What goes out at each tick of the output clock, and what the model may skip: the live engine's sync rules.

Tick k (due at start + k / fps) sends output frame n = k - delay_frames:
- its audio is exactly input block n (16 kHz, upsampled to 48 kHz), so sound is delayed by the pipeline latency;
- its picture is generated frame n when ready, else one at most ``max_late_frames`` older that has not been shown,
  else the last picture again. A frame is never shown later than that, so slow compute costs smoothness, not
  latency; the worker does not even render frames that it predicts would miss that window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from facecast.engine.pipeline import Frame

from .clock import Clock, FrameClock

SKIPPED = "skipped"  # key in Frame.timings_ms of a frame the worker did not render (its image is the avatar's)


class AudioOut:
    """The input blocks, delayed and upsampled 16 kHz -> 48 kHz block by block without seams.

    Each block is resampled with ``CONTEXT`` samples of its neighbours on both sides and only its own span kept,
    so the concatenated output equals resampling the whole signal at once (the filter spans 10 input samples).
    """

    CONTEXT = 16
    UP = 3  # 16 kHz -> 48 kHz

    def __init__(self, samples_per_frame: int, keep_frames: int) -> None:
        self.samples_per_frame = samples_per_frame
        self.keep_frames = keep_frames
        self._blocks: dict[int, np.ndarray] = {}
        self._silence = np.zeros(samples_per_frame, np.float32)

    def push(self, k: int, block_16k: np.ndarray) -> None:
        self._blocks[k] = block_16k
        self._blocks.pop(k - self.keep_frames, None)

    def silence_from(self, n: int) -> None:
        """Barge-in: blocks n and later, already taken but not sent yet, go out silent."""
        for k in [k for k in self._blocks if k >= n]:
            del self._blocks[k]

    def block_48k(self, n: int) -> np.ndarray:
        """int16 samples of input block n at 48 kHz (zeros for blocks never pushed)."""
        c = self.CONTEXT
        prev = self._blocks.get(n - 1, self._silence)
        cur = self._blocks.get(n, self._silence)
        nxt = self._blocks.get(n + 1, self._silence)
        x = np.concatenate([prev[-c:], cur, nxt[:c]]).astype(np.float64)
        y = resample_poly(x, self.UP, 1)[self.UP * c : self.UP * (c + len(cur))]
        return np.round(np.clip(y, -1.0, 1.0) * 32767).astype(np.int16)


class RenderPolicy:
    """Worker side: render frame n only if it can still be shown; a skipped frame costs no compute.

    Frame n is last showable at tick n + delay_frames + max_late_frames. With the measured render time (a moving
    average on the engine's clock), a frame predicted to miss that tick is skipped. While every frame is predicted
    late, one in ``probe_every_frames`` is rendered anyway so the estimate can recover when compute gets faster.
    """

    def __init__(
        self,
        frames: FrameClock,
        clock: Clock,
        delay_frames: int,
        max_late_frames: int,
        probe_every_frames: int,
        smoothing: float = 0.2,
    ) -> None:
        self.frames, self.clock = frames, clock
        self.last_tick_offset = delay_frames + max_late_frames
        self.probe_every_frames = probe_every_frames
        self.smoothing = smoothing
        self.render_s = 0.0  # optimistic start: the first frames are rendered and measured
        self._skips_in_a_row = 0

    def should_render(self, n: int) -> bool:
        deadline = self.frames.time_of(n + self.last_tick_offset)
        if self.clock.now() + self.render_s <= deadline:
            self._skips_in_a_row = 0
            return True
        self._skips_in_a_row += 1
        if self._skips_in_a_row >= self.probe_every_frames:
            self._skips_in_a_row = 0
            return True
        return False

    def rendered(self, seconds: float) -> None:
        self.render_s += self.smoothing * (seconds - self.render_s) if self.render_s else seconds


@dataclass
class DisplayCounters:
    shown: int = 0  # generated frames sent
    late: int = 0  # ... of which sent 1..max_late_frames ticks after their audio
    repeated: int = 0  # ticks inside speech that re-sent the previous picture (nothing new was ready)
    dropped: int = 0  # frames rendered but ready too late to be shown


class Display:
    """Loop side: the generated frames that came back from the worker, and which one goes out at each tick."""

    def __init__(self, max_late_frames: int) -> None:
        self.max_late_frames = max_late_frames
        self.ready: dict[int, Frame] = {}
        self.counters = DisplayCounters()
        self._last_shown = -1

    def add(self, frame: Frame) -> None:
        self.ready[frame.index] = frame

    def clear(self) -> None:
        self.ready.clear()
        self._last_shown = -1

    def pick(self, n: int) -> Frame | None:
        """The newest ready frame in [n - max_late_frames, n] not shown yet; None when there is none."""
        oldest = n - self.max_late_frames
        usable = [i for i in self.ready if oldest <= i <= n and i > self._last_shown]
        chosen = max(usable) if usable else None
        frame = self.ready.get(chosen) if chosen is not None else None
        for i in list(self.ready):
            if i < oldest or (chosen is not None and i <= chosen):
                if i != chosen:
                    self.counters.dropped += 1  # rendered, but its window has passed
                del self.ready[i]
        if frame is None:
            return None
        self._last_shown = chosen
        self.counters.shown += 1
        self.counters.late += chosen < n
        return frame


@dataclass(frozen=True)
class GateStep:
    feed: bool = False  # give this block to the model
    begin: bool = False  # ... as the first block of an utterance: the model starts afresh
    end: bool = False  # ... as its last block: flush the model's lookahead after it


class SpeechGate:
    """When the model runs: from a block louder than ``speech_rms`` until ``hangover_frames`` quiet blocks in a row.

    Between utterances the avatar's own frames play and the model does nothing. The quiet blocks that end an
    utterance are still fed, so the model itself closes the mouth; a cross-fade over ``fade_frames`` at both ends
    hides the switch between decoded and original pixels.
    """

    def __init__(self, speech_rms: float, hangover_frames: int, fade_frames: int) -> None:
        if hangover_frames < 1:
            raise ValueError("hangover_frames must be at least 1")
        self.speech_rms, self.hangover_frames, self.fade_frames = speech_rms, hangover_frames, fade_frames
        # [start, end) in frame indices, end None while speech goes on; only recent ones matter for the output
        self.segments: deque[list[int | None]] = deque(maxlen=8)
        self._quiet = 0

    @property
    def active(self) -> bool:
        return bool(self.segments) and self.segments[-1][1] is None

    @property
    def last_end(self) -> int | None:
        return self.segments[-1][1] if self.segments else None

    def step(self, k: int, rms: float) -> GateStep:
        loud = rms >= self.speech_rms
        if not self.active:
            if not loud:
                return GateStep()
            self.segments.append([k, None])
            self._quiet = 0
            return GateStep(feed=True, begin=True)
        self._quiet = 0 if loud else self._quiet + 1
        if self._quiet >= self.hangover_frames:
            self.segments[-1][1] = k + 1
            return GateStep(feed=True, end=True)
        return GateStep(feed=True)

    def cut(self, k: int) -> None:
        """End the current utterance before frame k without flushing the model (the avatar changed)."""
        if self.active:
            self.segments[-1][1] = k

    def interrupt(self, n: int) -> None:
        """Barge-in: no utterance reaches frame n or later, whether it is still open or already closed after it."""
        while self.segments and self.segments[-1][0] >= n:
            self.segments.pop()
        for seg in self.segments:
            if seg[1] is None or seg[1] > n:
                seg[1] = n
        self._quiet = 0

    def segment_of(self, n: int) -> tuple[int, int | None] | None:
        for start, end in reversed(self.segments):
            if start <= n and (end is None or n < end):
                return start, end
        return None

    def alpha(self, n: int) -> float:
        """How much of the generated picture frame n shows (0: the avatar's own frame, 1: fully generated)."""
        seg = self.segment_of(n)
        if seg is None:
            return 0.0
        start, end = seg
        steps = self.fade_frames + 1
        a = min(1.0, (n - start + 1) / steps)
        if end is not None:
            a = min(a, (end - n) / steps)
        return a

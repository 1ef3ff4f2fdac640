"""When the model runs: the utterances found in the input, with a hangover and cross-fades at both ends."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


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

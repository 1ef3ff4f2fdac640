"""Which picture goes out at each tick of the output clock, and what the model may skip: the live engine's sync rules.

Tick k (due at start + k / fps) sends output frame n = k - delay_frames:
- its audio is exactly input block n (16 kHz, upsampled to 48 kHz), so sound is delayed by the pipeline latency;
- its picture is generated frame n when ready, else one at most ``max_late_frames`` older that has not been shown,
  else the last picture again. A frame is never shown later than that, so slow compute costs smoothness, not
  latency; the worker does not even render frames that it predicts would miss that window.
"""

from __future__ import annotations

from dataclasses import dataclass

from facecast.engine.pipeline import Frame


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

"""Output frame n of the live engine: its picture and its sound.

The picture is the newest generated frame that the Display lets out (else the last one again, inside an utterance),
faded over the avatar's own frame by the speech gate's alpha; the sound is exactly input block n from the delay line
(AudioOut), with what the mixer said about that block (audible, the segment end marks it holds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

import cv2
import numpy as np

from facecast.engine.avatar.prepare import Avatar
from facecast.engine.pipeline import Frame

from ..config import LiveConfig
from .audio_out import AudioOut
from .clock import Clock, FrameClock
from .display import Display
from .mixer import Take
from .outputs import OutputFrame, Outputs
from .speech_gate import SpeechGate


class Compositor:
    """Event loop side: what came in for each tick (``add_block``) and what goes out for frame n (``compose``)."""

    def __init__(self, config: LiveConfig, samples_per_frame: int, delay_frames: int, fps: int) -> None:
        self.display = Display(config.max_late_frames)
        self.audio_out = AudioOut(samples_per_frame, keep_frames=delay_frames + 3)
        self.takes: dict[int, Take] = {}  # input block k -> what the mixer said about it, until frame k goes out
        self.last_picture: Frame | None = None
        self.shown_times: deque[float] = deque(maxlen=2 * fps)  # when new pictures went out (generated fps)

    def add_block(self, k: int, block_16k: np.ndarray, take: Take) -> None:
        """Input block k, taken by tick k: the sound of output frame k."""
        self.takes[k] = take
        self.audio_out.push(k, block_16k)

    def forget_pictures(self) -> None:
        """No generated picture waits or is repeated any more (the avatar changed, or a barge-in)."""
        self.display.clear()
        self.last_picture = None

    def cut(self, first_unsent: int) -> list[Hashable]:
        """A barge-in: frames from ``first_unsent`` on go out silent and idle. Returns the end marks dropped."""
        dropped: list[Hashable] = []
        for k in [k for k in self.takes if k >= first_unsent]:
            dropped += self.takes.pop(k).marks
        self.audio_out.silence_from(first_unsent)
        self.forget_pictures()
        return dropped

    def compose(
        self, n: int, avatar: Avatar, gate: SpeechGate, frames: FrameClock, clock: Clock, outputs: Outputs
    ) -> OutputFrame:
        base = avatar.frames[avatar.index_for(n)]
        segment = gate.segment_of(n)
        dropped = self.display.counters.dropped
        frame = self.display.pick(n)
        take = self.takes.pop(n, Take())
        for k in [k for k in self.takes if k < n]:  # blocks whose frame was jumped over: their marks come now
            take = Take(take.audible, self.takes.pop(k).marks + take.marks)
        if self.display.counters.dropped > dropped:
            for o in outputs.observers:
                o.frames_dropped(n, self.display.counters.dropped - dropped)
        if frame is not None:
            self.last_picture = frame
            self.shown_times.append(clock.now())
        elif segment is not None:
            self.display.counters.repeated += 1
        picture, alpha = self.last_picture, gate.alpha(n)
        if segment is None or picture is None or picture.index < segment[0] or alpha <= 0:
            image, picture, alpha = base, None, 0.0  # idle, or nothing generated yet in this utterance
        elif alpha >= 1:
            image = picture.image
        else:
            image = cv2.addWeighted(picture.image, alpha, base, 1.0 - alpha, 0.0)
        return OutputFrame(
            n,
            image,
            self.audio_out.block_48k(n),
            frames.video_pts(n),
            frames.audio_pts(n),
            picture,
            alpha,
            fresh=picture is not None and picture is frame,
            audible=take.audible,
            marks=take.marks,
        )

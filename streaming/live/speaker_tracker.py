"""Whose voice drives the live engine: the first ``LiveConfig.speaker_seconds`` of speech make the speaker embedding
(once per talker), and after ``speaker_reset_s`` of silence the next speech counts as a new talker."""

from __future__ import annotations

import numpy as np

from facecast.engine.speaker import SPEAKER_DIM

from ..config import LiveConfig


class SpeakerTracker:
    """Event loop side collects the speech (``collect``); the embedding itself is written by the model thread only."""

    def __init__(self, config: LiveConfig, sample_rate: int, fps: int) -> None:
        self.need_samples = int(config.speaker_seconds * sample_rate)  # 0: the embedding stays at zeros
        self.reset_frames = config.speaker_reset_s * fps
        self.embedding = np.zeros(SPEAKER_DIM, np.float32)  # the talker's, kept across engine restarts
        self.forget()

    def forget(self) -> None:
        """The next ``speaker_seconds`` of speech are a new talker's."""
        self._speech: list[np.ndarray] = []
        self._samples = 0
        self.taken = False  # an embedding was (or is being) computed for this talker

    def collect(self, block: np.ndarray) -> np.ndarray | None:
        """One block of speech; returns the talker's speech once there is enough of it to embed (once per talker)."""
        if self.need_samples <= 0 or self._samples >= self.need_samples:
            return None
        self._speech.append(block)
        self._samples += block.size
        if self._samples < self.need_samples:
            return None
        self.taken = True
        speech, self._speech = np.concatenate(self._speech), []
        return speech

    def talker_gone(self, k: int, last_speech_end: int | None) -> bool:
        """At tick k: the talker whose voice was taken has been silent so long that the next may be someone else."""
        return self.taken and k - (last_speech_end or 0) > self.reset_frames

"""``facecast generate``: avatar + speech file -> a 25 fps H.264 + AAC mp4."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import check_speech
from .avatar.prepare import Avatar
from .backend import Backend
from .config import InferenceConfig
from .media import Mp4Writer
from .pipeline import Frame, LipSyncSession
from .speaker import speaker_embedding

CHUNK_SAMPLES = 3_200  # the file is fed in 200 ms chunks, as a microphone would deliver it


@dataclass
class GenerateReport:
    frames: int
    audio_seconds: float
    wall_seconds: float
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean per frame

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds else 0.0


def run_session(
    session: LipSyncSession,
    audio_16k: np.ndarray,
    on_frame: Callable[[Frame], None],
    chunk_samples: int = CHUNK_SAMPLES,
) -> list[dict[str, float]]:
    """Feed a whole signal through a session in chunks; calls ``on_frame`` for each frame in order."""
    timings = []
    for start in range(0, len(audio_16k), chunk_samples):
        for f in session.push_audio(audio_16k[start : start + chunk_samples]):
            on_frame(f)
            timings.append(f.timings_ms)
    for f in session.finish():
        on_frame(f)
        timings.append(f.timings_ms)
    return timings


def generate_video(
    backend: Backend,
    avatar: Avatar,
    audio_16k: np.ndarray,
    out_path: Path,
    inference: InferenceConfig = InferenceConfig(),
    progress: Callable[[int, int], None] | None = None,
    landmarks: str = "audio",
) -> GenerateReport:
    cfg = backend.cfg
    check_speech(audio_16k, cfg.audio)
    speaker = speaker_embedding(audio_16k, backend.speaker_partials)
    session = LipSyncSession(backend, cfg, avatar, speaker, inference, landmarks=landmarks)
    total = len(audio_16k) // cfg.audio.samples_per_frame
    h, w = avatar.frames.shape[1:3]
    writer = Mp4Writer(out_path, w, h, cfg.audio.fps)
    count = 0

    def write(f: Frame) -> None:
        nonlocal count
        writer.write(f.image)
        count += 1
        if progress:
            progress(count, total)

    start = time.perf_counter()
    try:
        timings = run_session(session, audio_16k, write)
        writer.close(audio_16k, cfg.audio.sample_rate)
    except BaseException:
        writer.abort()  # never leave a half-written file under the final name
        raise
    wall = time.perf_counter() - start
    keys = timings[0].keys() if timings else []
    stage = {k: float(np.mean([t[k] for t in timings])) for k in keys}
    return GenerateReport(count, len(audio_16k) / cfg.audio.sample_rate, wall, stage)

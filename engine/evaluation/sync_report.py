"""``facecast eval-sync``: the sync expert on real held-out clips, with their audio in place, delayed and swapped.

Real video must score in sync (offset near 0, high confidence); the same video with its audio delayed by
``shift_frames`` must show the planted offset (``-shift_frames`` from the aligned one: video frame i now matches
audio i + shift, and a positive offset means the mouth lags); with another clip's audio there is no true offset and
the confidence must collapse. Generated clips are scored by ``facecast eval --sync-expert`` (same scorer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import SAMPLES_PER_FRAME
from ..training.dataset import load_clips
from ..training.train import DEFAULT_HOLDOUT
from . import metrics
from .sync_expert import SyncExpertOnAudio

CONDITIONS = ("real", "shifted", "swapped")


def delayed(audio_16k: np.ndarray, frames: int) -> np.ndarray:
    """The audio ``frames`` video frames later (silence first), the same length."""
    pad = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
    return np.concatenate([pad, np.asarray(audio_16k, np.float32)])[: len(audio_16k)]


def sync_report(
    data: Path,
    expert: SyncExpertOnAudio,
    clips: tuple[str, ...] = DEFAULT_HOLDOUT,
    max_frames: int = 200,
    shift_frames: int = 10,
) -> dict:
    """Per clip and mean: offset_frames, confidence, min_dist for each of ``CONDITIONS``."""
    loaded = load_clips(Path(data), list(clips))
    per_clip: dict[str, dict[str, dict]] = {}
    for i, clip in enumerate(loaded):
        n = min(clip.frames, max_frames)
        crops, lms = np.asarray(clip.crops[:n]), clip.landmarks[:n]
        audio = np.asarray(clip.audio[: n * SAMPLES_PER_FRAME], np.float32)
        # Swapped: the next held-out clip's speech (another speaker), looped to this clip's length if shorter.
        other = loaded[(i + 1) % len(loaded)].audio
        swapped = np.resize(np.asarray(other, np.float32), len(audio))
        per_clip[clip.name] = {}
        for name, sound in (("real", audio), ("shifted", delayed(audio, shift_frames)), ("swapped", swapped)):
            s = expert.score(crops, lms, sound)
            per_clip[clip.name][name] = {
                k: s[k] for k in ("offset_frames", "confidence", "min_dist", "dist_at_0", "n_windows")
            }
    mean = {c: metrics.summarize([p[c] for p in per_clip.values()]) for c in CONDITIONS}
    # How often the offset lands where it should, within a frame (swapped audio has no right answer).
    for c, target in (("real", 0), ("shifted", -shift_frames)):
        hits = [abs(p[c]["offset_frames"] - target) <= 1 for p in per_clip.values()]
        mean[c]["offset_within_1_of_expected"] = float(np.mean(hits))
    return {
        "data": str(data),
        "max_frames": max_frames,
        "shift_frames": shift_frames,
        "clips": per_clip,
        "mean": mean,
        "notes": [
            "offset_frames: positive = mouth lags audio; shifted = the clip's audio delayed by shift_frames, "
            "expected offset -shift_frames; swapped = the next held-out clip's speech, no true offset",
            "confidence = median - min of the mean distance curve over offsets -15..15 (LSE-C style); "
            "min_dist = its minimum (LSE-D style), dist_at_0 its value at offset 0; distances between unit embeddings "
            "(0..2), this expert's scale",
        ],
    }

"""``facecast train mouth``: the mouth prior (``mouth_prior.py``) from a prepared dataset's clips.

No gradient descent, two statistics:
- the rest offset: per clip, the pose-free talking mean (what A2L displaces) minus the mean of the clip's most
  closed mouths, in interocular distances; the median over clips;
- the interior atlas: every sampled open mouth is unrolled into the canonical grid between its inner lips, divided
  by its own skin level (so a dim clip and a bright one count alike), sorted by opening into bins of equal count,
  and each bin keeps the per-pixel median (the median, not the mean, so one clip's tongue or lighting does not
  smear over every mouth).
Held-out clips are never looked at.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import crop
from .config import FaceConfig, L2VConfig
from .dataset import Clip, load_clips
from .errors import FacecastError
from .landmarks import DRIVEN, interocular, register_to
from .landmarks import mouth_opening as opening
from .mouth_prior import LUMA, MOUTH_PRIOR_FILE, MouthPrior, skin_colour, unroll


@dataclass(frozen=True)
class MouthTrainConfig:
    rows: int = 16  # canonical grid: rows from each lip inwards
    cols: int = 48  # left corner to right corner
    depth: float = 0.12  # interocular distances the rows reach from each lip (half the widest common opening)
    bins: int = 4  # bins of opening, equal counts
    min_opening: float = 0.04  # opening ÷ interocular below which a mouth shows too little inside to learn from
    frame_stride: int = 3  # every 3rd frame (40 ms frames barely differ from their neighbours)
    max_per_clip: int = 60  # no one clip (one person's teeth) dominates a bin
    min_skin_level: float = 20.0  # grey levels: a face this dark gives no usable brightness reference
    rest_quantile: float = 0.1  # a clip's mouths "at rest": its most closed tenth
    min_clip_frames: int = 50  # shorter clips give no stable talking mean


def mouths_of(
    clip: Clip, tcfg: MouthTrainConfig, face: FaceConfig, l2v: L2VConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One clip's sampled open mouths: openings (N,), unrolled halves (N, 2, rows, cols, 3) ÷ skin luma (NaN past
    the middle of each mouth) and skin colours ÷ luma (N, 3)."""
    open_ratio = opening(clip.landmarks)
    frames = np.flatnonzero(clip.found.astype(bool) & (open_ratio >= tcfg.min_opening))[:: tcfg.frame_stride]
    if len(frames) > tcfg.max_per_clip:
        frames = frames[np.linspace(0, len(frames) - 1, tcfg.max_per_clip).round().astype(int)]
    openings, textures, skins = [], [], []
    for t in frames:
        lms, image = clip.landmarks[t], np.asarray(clip.crops[t])
        skin = skin_colour(image, crop.skin_around_mouth(crop.paste_mask(lms, face, l2v), lms, face))
        level = float(skin @ LUMA)
        if not level >= tcfg.min_skin_level:  # also NaN: no skin found
            continue
        openings.append(open_ratio[t])
        textures.append(unroll(image, lms, tcfg.rows, tcfg.cols, tcfg.depth * float(interocular(lms))) / level)
        skins.append(skin / level)
    if not textures:
        return (np.zeros(0, np.float32), np.zeros((0, 2, tcfg.rows, tcfg.cols, 3), np.float32),
                np.zeros((0, 3), np.float32))
    return np.asarray(openings, np.float32), np.stack(textures).astype(np.float32), np.stack(skins)


def _fill_deep_rows(texture: np.ndarray) -> np.ndarray:
    """(2, rows, cols, 3) with NaN where no mouth was that deep: each such pixel takes the row above it (towards the
    lip it hangs from), so the deepest seen colour (the cavity) continues inwards."""
    out = texture.copy()
    for r in range(1, out.shape[1]):
        missing = np.isnan(out[:, r])
        out[:, r][missing] = out[:, r - 1][missing]
    return np.nan_to_num(out, nan=0.0)


def rest_offset_of(clip: Clip, tcfg: MouthTrainConfig) -> tuple[np.ndarray, float, float] | None:
    """One clip's (37, 2) offset from rest to talking mean in interocular distances, its rest and mean openings;
    None for a clip too short to have a stable mean. Registered as ``train.a2l_clip`` registers A2L's targets."""
    if clip.frames < tcfg.min_clip_frames:
        return None
    registered = register_to(clip.landmarks, clip.landmarks[0])
    open_ratio = opening(registered)
    rest = registered[open_ratio <= np.quantile(open_ratio, tcfg.rest_quantile)].mean(0)
    mean = registered.mean(0)
    scale = float(interocular(mean))
    return (mean - rest)[DRIVEN] / scale, float(opening(rest)), float(opening(mean))


def build_prior(
    clips: list[Clip], tcfg: MouthTrainConfig = MouthTrainConfig(), face: FaceConfig = FaceConfig(),
    l2v: L2VConfig = L2VConfig(),
) -> MouthPrior:
    openings, textures, skins, rests = [], [], [], []
    for clip in tqdm(clips, desc="mouths", unit="clip"):
        o, t, k = mouths_of(clip, tcfg, face, l2v)
        openings.append(o)
        textures.append(t)
        skins.append(k)
        rest = rest_offset_of(clip, tcfg)
        if rest is not None:
            rests.append(rest)
    op, tex = np.concatenate(openings), np.concatenate(textures)
    if len(op) < tcfg.bins * 10 or not rests:
        raise FacecastError(
            f"only {len(op)} open mouths (opening ≥ {tcfg.min_opening} of the interocular distance) and "
            f"{len(rests)} clips of ≥ {tcfg.min_clip_frames} frames in {len(clips)} clips: the mouth prior needs "
            f"at least {tcfg.bins * 10} and 1; add talking clips to the dataset."
        )
    order = np.argsort(op, kind="stable")
    groups = np.array_split(order, tcfg.bins)
    with warnings.catch_warnings():  # a pixel no mouth of a bin reached is NaN here and filled below
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = [np.nanmedian(tex[g], axis=0) for g in groups]
    return MouthPrior(
        rest_offset=np.median(np.stack([r[0] for r in rests]), axis=0).astype(np.float32),
        rest_opening=float(np.median([r[1] for r in rests])),
        mean_opening=float(np.median([r[2] for r in rests])),
        rest_quantile=tcfg.rest_quantile,
        textures=np.stack([_fill_deep_rows(m) for m in medians]).astype(np.float32),
        depth=tcfg.depth,
        openings=np.array([np.median(op[g]) for g in groups], np.float32),
        counts=np.array([len(g) for g in groups], np.int64),
        skin=np.median(np.concatenate(skins), axis=0).astype(np.float32),
    )


def train_mouth(
    data: Path, model_dir: Path, holdout: tuple[str, ...], tcfg: MouthTrainConfig = MouthTrainConfig()
) -> dict:
    """Build the prior from ``data``'s clips not in ``holdout`` and write it into ``model_dir``; a summary."""
    from .checkpoint import load_config

    start = time.time()
    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    clips = [c for c in load_clips(data) if c.name not in holdout]
    prior = build_prior(clips, tcfg, cfg.face, cfg.l2v)
    prior.save(model_dir / MOUTH_PRIOR_FILE)
    summary = {
        "part": "mouth",
        "seconds": round(time.time() - start, 1),
        "config": asdict(tcfg),
        "rest_opening": round(prior.rest_opening, 4),
        "mean_opening": round(prior.mean_opening, 4),
        "bin_openings": [round(float(o), 4) for o in prior.openings],
        "bin_counts": [int(c) for c in prior.counts],
        "train_clips": [c.name for c in clips],
        "holdout": list(holdout),
    }
    (model_dir / "mouth.train.json").write_text(json.dumps(summary, indent=2))
    return summary

"""``facecast train mouth``: the mouth prior (``mouth_prior.py``) from a prepared dataset's clips.

No gradient descent, two statistics:
- the rest offset: per clip, the pose-free talking mean (what A2L displaces) minus the mean of the clip's most
  closed mouths, in interocular distances; the median over clips;
- the interior atlas: every sampled open mouth is unrolled into the canonical grid between its inner lips and
  divided by its own skin level (so a dim clip and a bright one count alike). Of the widest ``exemplar_share`` of
  them, the atlas is the *medoid*: the one real mouth nearest the per-pixel median (mean absolute difference over
  the pixels it has, plus the share of the grid it lacks). A per-pixel median of many people's mouths blurs their
  teeth, tongue and lips into a pink band (the first atlas: docs/quality.md); one real, typical mouth keeps sharp
  upper and lower teeth. Rows deeper than that mouth reaches fade into the cavity colour: the median over those
  mouths of the mean of their darkest ``cavity_share`` of pixels.
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

from .. import crop
from ..config import FaceConfig, L2VConfig
from ..errors import FacecastError
from ..landmarks import DRIVEN, interocular, register_to
from ..landmarks import mouth_opening as opening
from ..mouth_prior import LUMA, MOUTH_PRIOR_FILE, MouthPrior, skin_colour, unroll
from .dataset import Clip, load_clips

MIN_OPEN_MOUTHS = 40  # fewer open mouths than this give no typical one (nor a stable median) to pick from


@dataclass(frozen=True)
class MouthTrainConfig:
    rows: int = 16  # canonical grid: rows from each lip inwards
    cols: int = 48  # left corner to right corner
    depth: float = 0.12  # interocular distances the rows reach from each lip (half the widest common opening)
    exemplar_share: float = 0.25  # the atlas is the medoid of the widest quarter of the open mouths
    cavity_share: float = 0.1  # each mouth's darkest tenth of pixels is its cavity
    cavity_fade_rows: int = 3  # rows over which the exemplar's deepest row fades into the cavity colour
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
        return (
            np.zeros(0, np.float32),
            np.zeros((0, 2, tcfg.rows, tcfg.cols, 3), np.float32),
            np.zeros((0, 3), np.float32),
        )
    return np.asarray(openings, np.float32), np.stack(textures).astype(np.float32), np.stack(skins)


def cavity_colour(textures: np.ndarray, share: float) -> np.ndarray:
    """(3,) the median over mouths (N, 2, rows, cols, 3) of the mean colour of each one's darkest ``share`` of its
    pixels (÷ skin luma, as the textures are)."""
    darkest = []
    for texture in textures:
        px = texture.reshape(-1, 3)
        px = px[np.isfinite(px).all(axis=1)]
        if len(px):
            k = max(1, int(len(px) * share))
            darkest.append(px[np.argsort(px @ LUMA, kind="stable")[:k]].mean(axis=0))
    return np.median(np.stack(darkest), axis=0).astype(np.float32)


def medoid(textures: np.ndarray) -> int:
    """Index of the mouth (N, 2, rows, cols, 3; NaN where it does not reach) nearest the per-pixel median: mean
    absolute difference over the pixels it has, plus the share of the grid it lacks (so a mouth that shows the
    whole grid is preferred to an equally typical one that shows a sliver)."""
    with warnings.catch_warnings():  # a pixel no mouth reached is NaN in the median
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(textures, axis=0)
        flat = np.abs(textures - median[None]).reshape(len(textures), -1)
        error = np.nanmean(flat, axis=1)
    lacking = np.isnan(flat).mean(axis=1)
    return int(np.argmin(np.where(np.isfinite(error), error + lacking, np.inf)))


def fill_deep_rows(texture: np.ndarray, cavity: np.ndarray, fade_rows: int) -> np.ndarray:
    """(2, rows, cols, 3) with NaN where the mouth was not that deep: each such pixel fades from the deepest row its
    column has towards ``cavity`` (3,) over ``fade_rows`` rows; a column with no row at all is cavity."""
    out = texture.copy()
    rows = out.shape[1]
    for half in range(out.shape[0]):
        for col in range(out.shape[2]):
            have = np.flatnonzero(np.isfinite(out[half, :, col]).all(axis=-1))
            last = have[-1] if len(have) else -1
            edge = out[half, last, col] if len(have) else cavity
            for r in range(last + 1, rows):
                w = min(1.0, (r - last) / max(fade_rows, 1))
                out[half, r, col] = (1 - w) * edge + w * cavity
    return out


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
    clips: list[Clip],
    tcfg: MouthTrainConfig = MouthTrainConfig(),
    face: FaceConfig = FaceConfig(),
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
    if len(op) < MIN_OPEN_MOUTHS or not rests:
        raise FacecastError(
            f"only {len(op)} open mouths (opening ≥ {tcfg.min_opening} of the interocular distance) and "
            f"{len(rests)} clips of ≥ {tcfg.min_clip_frames} frames in {len(clips)} clips: the mouth prior needs "
            f"at least {MIN_OPEN_MOUTHS} and 1; add talking clips to the dataset."
        )
    widest = np.argsort(op, kind="stable")[-max(1, int(round(len(op) * tcfg.exemplar_share))) :]
    exemplar = tex[widest[medoid(tex[widest])]]
    cavity = cavity_colour(tex[widest], tcfg.cavity_share)
    return MouthPrior(
        rest_offset=np.median(np.stack([r[0] for r in rests]), axis=0).astype(np.float32),
        rest_opening=float(np.median([r[1] for r in rests])),
        mean_opening=float(np.median([r[2] for r in rests])),
        rest_quantile=tcfg.rest_quantile,
        textures=fill_deep_rows(exemplar, cavity, tcfg.cavity_fade_rows)[None],
        depth=tcfg.depth,
        openings=np.array([np.median(op[widest])], np.float32),
        counts=np.array([len(widest)], np.int64),
        skin=np.median(np.concatenate(skins), axis=0).astype(np.float32),
    )


def train_mouth(
    data: Path, model_dir: Path, holdout: tuple[str, ...], tcfg: MouthTrainConfig = MouthTrainConfig()
) -> dict:
    """Build the prior from ``data``'s clips not in ``holdout`` and write it into ``model_dir``; a summary."""
    from ..checkpoint import load_config

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
        "exemplar_pool": int(prior.counts[0]),  # the widest open mouths the atlas's mouth is the medoid of
        "exemplar_pool_opening": round(float(prior.openings[0]), 4),  # their median opening
        "train_clips": [c.name for c in clips],
        "holdout": list(holdout),
    }
    (model_dir / "mouth.train.json").write_text(json.dumps(summary, indent=2))
    return summary

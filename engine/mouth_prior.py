"""What facecast knows of real talking mouths beyond A2L and L2V, learned from the training clips
(``facecast train mouth``): where a mouth at rest sits relative to the talking mean A2L displaces, and what the
inside of an open mouth looks like.

**The rest offset.** A2L predicts each frame's mouth as a displacement from the *mean* shape of a talking clip,
which is half open; a video avatar made of talking frames has that mean as its reference. A portrait with a closed
mouth does not: used as the reference, A2L's "close" displacements pushed the lips through each other (the lower
inner lip above the upper: a crossed mouth that reads as open to ``lip_gap`` but renders shut) and its "open"
ones opened only by the difference. ``talking_reference`` moves a still mouth to where the talking mean of the
same face would be, by the median offset from rest to mean measured on the training clips.

**The interior atlas.** A warp of a closed mouth can only stretch lip skin across the opening, and L2V's painting,
pulled towards the closed avatar it is conditioned on, fills it with lip- and skin-coloured blur. So the inside
is drawn from the open mouths of the training clips, unrolled into a canonical grid between the inner lips
(``unroll``), brightness-normalised by the skin around the mouth, and reduced to a per-pixel median in a few bins
of opening. At run time the bin texture for the driving opening is rolled back onto the driving inner lips
(``roll_onto``) and lit by the avatar's own skin level.

Canonical grid: ``rows`` from the upper inner lip (row 0) to the lower inner lip (last row), ``cols`` from the left
mouth corner (iBUG 60) to the right (64); each column runs straight between the two lips at that fraction of the
mouth's width. All landmark coordinates are pixels of the 256² crop; images are uint8 RGB (H, W, 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import WeightsError
from .landmarks import DRIVEN, INNER_LIP_PAIRS, interocular
from .landmarks import mouth_opening as opening

MOUTH_PRIOR_FILE = "mouth.safetensors"
UPPER_INNER = np.array([60, 61, 62, 63, 64])  # left corner, upper inner lip, right corner
LOWER_INNER = np.array([60, 67, 66, 65, 64])
# Rec. 601 luma weights: the skin "level" that lights the atlas (brightness only; hue stays the atlas's own, since
# teeth are not skin-coloured on any face).
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def skin_level(image: np.ndarray, region: np.ndarray) -> float:
    """Mean luma (grey levels) of ``image`` (H, W, 3) over the boolean ``region`` (H, W); NaN when it is empty."""
    if not region.any():
        return float("nan")
    return float(image[region].astype(np.float32).mean(0) @ LUMA)


def _mouth_axes(lms_px: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Origin (the left inner corner), unit vectors along and across the mouth, and the corner-to-corner length."""
    origin = lms_px[UPPER_INNER[0]].astype(np.float64)
    along = lms_px[UPPER_INNER[-1]].astype(np.float64) - origin
    width = float(np.linalg.norm(along))
    along = along / max(width, 1e-6)
    across = np.array([-along[1], along[0]])  # image y grows downwards: "across" points from upper to lower lip
    return origin, along, across, max(width, 1e-6)


def _lip_profiles(lms_px: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Across-the-mouth offsets (pixels) of the upper and lower inner lips at mouth-width fractions ``u``."""
    origin, along, across, width = _mouth_axes(lms_px)
    out = []
    for idx in (UPPER_INNER, LOWER_INNER):
        rel = lms_px[idx].astype(np.float64) - origin
        pu, pv = rel @ along / width, rel @ across
        order = np.argsort(pu, kind="stable")
        out.append(np.interp(u, pu[order], pv[order]))
    return out[0], out[1]


def unroll(image: np.ndarray, lms_px: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The mouth's inside as a canonical (rows, cols, 3) float32 grid sampled from ``image`` (bilinear)."""
    origin, along, across, width = _mouth_axes(lms_px)
    u = (np.arange(cols) + 0.5) / cols
    v = (np.arange(rows) + 0.5) / rows
    upper, lower = _lip_profiles(lms_px, u)
    offset = upper[None] + v[:, None] * (lower - upper)[None]  # (rows, cols) pixels across
    pts = origin + (u * width)[None, :, None] * along + offset[..., None] * across
    map_x, map_y = pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)


def roll_onto(texture: np.ndarray, lms_px: np.ndarray, box: tuple[slice, slice], size_px: int) -> np.ndarray:
    """``texture`` (rows, cols, 3) laid between the inner lips of ``lms_px``: the (box) pixels of a ``size_px``²
    crop, float32. Pixels outside the lips repeat the nearest edge of the grid (the interior mask hides them)."""
    rows, cols = texture.shape[:2]
    r0, r1, _ = box[0].indices(size_px)
    c0, c1, _ = box[1].indices(size_px)
    ys, xs = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    origin, along, across, width = _mouth_axes(lms_px)
    rel_x, rel_y = xs - origin[0], ys - origin[1]
    u = np.clip((rel_x * along[0] + rel_y * along[1]) / width, 0.0, 1.0)
    pv = rel_x * across[0] + rel_y * across[1]
    upper, lower = _lip_profiles(lms_px, u.ravel())
    upper, lower = upper.reshape(u.shape), lower.reshape(u.shape)
    v = (pv - upper) / np.maximum(lower - upper, 1e-3)
    map_x = (u * cols - 0.5).astype(np.float32)
    map_y = (np.clip(v, 0.0, 1.0) * rows - 0.5).astype(np.float32)
    return cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class MouthPrior:
    """The learned rest offset and interior atlas (see the module's docstring).

    rest_offset: float32 (37, 2), the driven points' median offset from a mouth at rest to its clip's talking mean,
    in interocular distances (crop axes); rest_opening, mean_opening: the median openings (``opening``) of those
    rest mouths and talking means. textures: float32 (bins, rows, cols, 3), interior colour ÷ skin luma; openings:
    float32 (bins,), each bin's median opening, ascending; counts: int (bins,), how many mouths made each bin.
    """

    rest_offset: np.ndarray
    rest_opening: float
    mean_opening: float
    textures: np.ndarray
    openings: np.ndarray
    counts: np.ndarray

    def talking_reference(self, reference_px: np.ndarray) -> np.ndarray:
        """The reference A2L should displace for an avatar whose reference shape is ``reference_px`` (68, 2).

        A mouth at rest (opening at or below the learned rest opening) gets the whole offset; a reference already
        as open as a talking mean (a video of talking frames, as in training) gets none; in between, a share."""
        o = float(opening(reference_px))
        share = np.clip((self.mean_opening - o) / max(self.mean_opening - self.rest_opening, 1e-6), 0.0, 1.0)
        out = reference_px.astype(np.float32).copy()
        out[DRIVEN] += share * self.rest_offset * float(interocular(reference_px))
        return out

    def texture_for(self, open_ratio: float) -> np.ndarray:
        """The interior texture for one opening: linear between the two nearest bins, the end bins beyond them."""
        i = int(np.searchsorted(self.openings, open_ratio))
        if i <= 0:
            return self.textures[0]
        if i >= len(self.openings):
            return self.textures[-1]
        lo, hi = self.openings[i - 1], self.openings[i]
        w = float((open_ratio - lo) / max(hi - lo, 1e-6))
        return (1 - w) * self.textures[i - 1] + w * self.textures[i]

    def render_interior(
        self, lms_px: np.ndarray, level: float, box: tuple[slice, slice], size_px: int
    ) -> np.ndarray:
        """uint8 (box) pixels of the interior for driving landmarks ``lms_px`` (68, 2), lit to skin luma ``level``."""
        texture = self.texture_for(float(opening(lms_px))) * level
        return np.clip(roll_onto(texture.astype(np.float32), lms_px, box, size_px) + 0.5, 0, 255).astype(np.uint8)

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        save_file(
            {
                "rest_offset": self.rest_offset.astype(np.float32),
                "rest_opening": np.float32([self.rest_opening]),
                "mean_opening": np.float32([self.mean_opening]),
                "textures": self.textures.astype(np.float16),
                "openings": self.openings.astype(np.float32),
                "counts": self.counts.astype(np.int64),
            },
            str(path),
        )

    @classmethod
    def load(cls, path: Path) -> MouthPrior:
        from safetensors.numpy import load_file

        try:
            t = load_file(str(path))
            return cls(
                t["rest_offset"].astype(np.float32),
                float(t["rest_opening"][0]),
                float(t["mean_opening"][0]),
                t["textures"].astype(np.float32),
                t["openings"].astype(np.float32),
                t["counts"],
            )
        except Exception as e:  # safetensors raises its own error types for a damaged file; a KeyError for a key
            raise WeightsError(
                f"{path} is not a readable mouth prior ({type(e).__name__}: {e}): make it again with "
                "`facecast train mouth --data DATASET --out MODEL_DIR`, or copy it from the model folder."
            ) from e


def uncross_lips(lms_px: np.ndarray) -> np.ndarray:
    """``lms_px`` (68, 2) with every inner-lip pair whose lower point rose above its upper one (across the mouth's
    axis) moved to their common middle: a displacement larger than the mouth's own opening must close it, not
    turn it inside out (a fold in the warp, and an "opening" to ``lip_gap``)."""
    out = lms_px.copy()
    _, _, across, _ = _mouth_axes(lms_px)
    for upper, lower in INNER_LIP_PAIRS:
        if float((out[lower] - out[upper]) @ across) < 0.0:
            mid = (out[upper] + out[lower]) / 2
            out[upper] = out[lower] = mid
    return out


def load_mouth_prior(folder: Path) -> MouthPrior | None:
    """The prior beside a model or export folder's weights, or None when it has none (a model trained before it:
    A2L displaces the avatar's own reference and L2V paints the interior)."""
    path = Path(folder) / MOUTH_PRIOR_FILE
    return MouthPrior.load(path) if path.is_file() else None

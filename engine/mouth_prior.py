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
(``unroll``) and brightness-normalised by the skin around the mouth: ``facecast train mouth`` keeps one real mouth,
the most typical of the widest ones, with sharp upper and lower teeth (a per-pixel median over many people blurs
them into pink), its deeper rows fading into a cavity colour. At run time the texture (one per bin of opening;
the trainer writes one bin) is rolled back onto the driving inner lips (``roll_onto``), lit by the avatar's skin
luma and coloured by its chroma.

Canonical grid: two halves, one hanging from the upper inner lip and one rising from the lower; in each, ``rows``
at fixed pixel depths from that lip (up to ``depth`` interocular distances) and ``cols`` from the left mouth
corner (iBUG 60) to the right (64), each column running straight across the mouth at that fraction of its width.
All landmark coordinates are pixels of the 256² crop; images are uint8 RGB (H, W, 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .config import FaceConfig
from .errors import WeightsError
from .landmarks import DRIVEN, INNER_LIP_PAIRS, interocular
from .landmarks import mouth_opening as opening

MOUTH_PRIOR_FILE = "mouth.safetensors"
UPPER_INNER = np.array([60, 61, 62, 63, 64])  # left corner, upper inner lip, right corner
LOWER_INNER = np.array([60, 67, 66, 65, 64])
# Rec. 601 luma weights: the skin's brightness lights the atlas.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
UPPER, LOWER = 0, 1  # the atlas's two halves: hanging from the upper lip, rising from the lower
# Interocular units: a mouth whose opening varies less over its frames does not talk (dlib's own jitter is
# 0.002-0.004); ``facecast eval`` uses the same bound for clips whose real mouth is still.
STILL_MOUTH_OPENING_STD = 0.005


def skin_colour(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Mean RGB (3,) of ``image`` (H, W, 3) over the boolean ``region`` (H, W); NaN when it is empty."""
    if not region.any():
        return np.full(3, np.nan, np.float32)
    return image[region].astype(np.float32).mean(0)


def chroma(colour: np.ndarray) -> float:
    """How far a colour (3,) is from grey, relative to its own luma (0 for any grey)."""
    return float(np.linalg.norm(colour / max(float(colour @ LUMA), 1e-6) - 1.0))


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


def unroll(image: np.ndarray, lms_px: np.ndarray, rows: int, cols: int, depth_px: float) -> np.ndarray:
    """The mouth's inside in the canonical grid: float32 (2, rows, cols, 3), NaN where the mouth is not that deep.

    Half ``UPPER``: row r lies (r + 0.5) * depth_px / rows pixels below the upper inner lip; half ``LOWER``: as far
    above the lower one; each half only down (up) to the middle of the opening. Anchoring the rows to the lips in
    pixels, not in fractions of the opening, keeps teeth (which hang from the upper lip at their own size, whatever
    the opening) in the same rows of every mouth, so a median over many mouths keeps them."""
    origin, along, across, width = _mouth_axes(lms_px)
    u = (np.arange(cols) + 0.5) / cols
    depth = (np.arange(rows) + 0.5) * depth_px / rows
    upper, lower = _lip_profiles(lms_px, u)
    half_gap = (lower - upper) / 2
    out = np.empty((2, rows, cols, 3), np.float32)
    for half, offset in ((UPPER, upper[None] + depth[:, None]), (LOWER, lower[None] - depth[:, None])):
        pts = origin + (u * width)[None, :, None] * along + offset[..., None] * across
        sampled = cv2.remap(
            image,
            pts[..., 0].astype(np.float32),
            pts[..., 1].astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).astype(np.float32)
        sampled[depth[:, None] > half_gap[None]] = np.nan
        out[half] = sampled
    return out


def roll_onto(
    texture: np.ndarray, lms_px: np.ndarray, box: tuple[slice, slice], size_px: int, depth_px: float
) -> np.ndarray:
    """``texture`` (2, rows, cols, 3) laid between the inner lips of ``lms_px``, ``unroll``'s inverse: the (box)
    pixels of a ``size_px``² crop, float32. A pixel nearer the upper lip takes the upper half, else the lower;
    deeper than the grid reaches, its deepest row (the cavity). Outside the lips: the nearest edge of the grid
    (the interior mask hides it)."""
    rows, cols = texture.shape[1:3]
    r0, r1, _ = box[0].indices(size_px)
    c0, c1, _ = box[1].indices(size_px)
    ys, xs = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    origin, along, across, width = _mouth_axes(lms_px)
    rel_x, rel_y = xs - origin[0], ys - origin[1]
    u = np.clip((rel_x * along[0] + rel_y * along[1]) / width, 0.0, 1.0)
    pv = rel_x * across[0] + rel_y * across[1]
    upper, lower = _lip_profiles(lms_px, u.ravel())
    from_upper, from_lower = pv - upper.reshape(u.shape), lower.reshape(u.shape) - pv
    map_x = (u * cols - 0.5).astype(np.float32)
    halves = []
    for half, depth in ((UPPER, from_upper), (LOWER, from_lower)):
        map_y = (np.clip(depth, 0.0, None) * rows / depth_px - 0.5).astype(np.float32)
        halves.append(cv2.remap(texture[half], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return np.where((from_upper <= from_lower)[..., None], halves[UPPER], halves[LOWER])


@dataclass(frozen=True)
class MouthPrior:
    """The learned rest offset and interior atlas (see the module's docstring).

    rest_offset: float32 (37, 2), the driven points' median offset from a mouth at rest to its clip's talking mean,
    in interocular distances (crop axes); rest_opening, mean_opening: the median openings (``opening``) of those
    rest mouths and talking means; rest_quantile: which of a clip's mouths count as at rest (its most closed
    fraction). textures: float32 (bins, 2, rows, cols, 3), interior colour ÷ skin luma, the
    two halves of ``unroll``; depth: interocular distances the rows reach from each lip; openings: float32 (bins,),
    each bin's median opening, ascending; counts: int (bins,), how many mouths made each bin; skin: float32 (3,),
    the median skin colour ÷ its luma of those mouths' faces (their chroma is what the atlas's colours go with).
    """

    rest_offset: np.ndarray
    rest_opening: float
    mean_opening: float
    rest_quantile: float
    textures: np.ndarray
    depth: float
    openings: np.ndarray
    counts: np.ndarray
    skin: np.ndarray

    def talking_reference(self, reference_px: np.ndarray, frames_px: np.ndarray) -> np.ndarray:
        """The reference A2L should displace, for an avatar whose reference shape is ``reference_px`` (68, 2) and
        whose frames have landmarks ``frames_px`` (T, 68, 2).

        A2L learned displacements from each training clip's own talking mean. A video avatar of talking frames
        (its mouth moves: opening std above ``STILL_MOUTH_OPENING_STD``) has exactly that as its reference: it is
        left as it is. A still mouth (a portrait, an idle video) gets the rest offset, in the share its opening
        lacks of a talking mean's: a closed photo all of it, a smiling one none."""
        if len(frames_px) > 1 and float(opening(frames_px).std()) > STILL_MOUTH_OPENING_STD:
            return reference_px
        lacking = self.mean_opening - float(opening(reference_px))
        share = np.clip(lacking / max(self.mean_opening - self.rest_opening, 1e-6), 0.0, 1.0)
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
        self, lms_px: np.ndarray, skin_rgb: np.ndarray, box: tuple[slice, slice], size_px: int
    ) -> np.ndarray:
        """uint8 (box) pixels of the interior for driving landmarks ``lms_px`` (68, 2), lit and coloured for a face
        whose skin around the mouth has mean colour ``skin_rgb`` (3,): its luma sets the brightness, its chroma
        against the training faces' scales the atlas's colours (a black-and-white photo gets a grey mouth)."""
        level = float(skin_rgb @ LUMA)
        saturation = float(np.clip(chroma(skin_rgb) / max(chroma(self.skin), 1e-6), 0.0, 1.0))
        texture = self.texture_for(float(opening(lms_px)))
        grey = (texture @ LUMA)[..., None]
        texture = (grey + saturation * (texture - grey)) * level
        depth_px = self.depth * float(interocular(lms_px))
        out = roll_onto(texture.astype(np.float32), lms_px, box, size_px, depth_px)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        save_file(
            {
                "rest_offset": self.rest_offset.astype(np.float32),
                "rest_opening": np.float32([self.rest_opening]),
                "mean_opening": np.float32([self.mean_opening]),
                "rest_quantile": np.float32([self.rest_quantile]),
                "textures": self.textures.astype(np.float16),
                "depth": np.float32([self.depth]),
                "openings": self.openings.astype(np.float32),
                "counts": self.counts.astype(np.int64),
                "skin": self.skin.astype(np.float32),
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
                float(t["rest_quantile"][0]),
                t["textures"].astype(np.float32),
                float(t["depth"][0]),
                t["openings"].astype(np.float32),
                t["counts"],
                t["skin"].astype(np.float32),
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


def interior_painter(face: FaceConfig, prior: MouthPrior | None) -> MouthPrior | None:
    """The prior that paints the inside of the lips, or None where L2V's decoded picture paints it (no prior, or
    ``face.interior_source = "l2v"``)."""
    return prior if prior is not None and face.interior_source == "atlas" else None


def shows_l2v(face: FaceConfig, prior: MouthPrior | None) -> bool:
    """Whether a model's frames show any pixel of L2V's picture. They do not when the warp draws the face and the
    prior paints the inside of the lips: then sessions make no L2V call (``LipSyncSession.runs_l2v``) and an
    enrolment has no L2V adapter to fit (``enroll.enroll``)."""
    return not (face.warp_prior and interior_painter(face, prior) is not None)


def load_mouth_prior(folder: Path) -> MouthPrior | None:
    """The prior beside a model or export folder's weights, or None when it has none (a model trained before it:
    A2L displaces the avatar's own reference and L2V paints the interior)."""
    path = Path(folder) / MOUTH_PRIOR_FILE
    return MouthPrior.load(path) if path.is_file() else None

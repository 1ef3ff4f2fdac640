"""Reference-based quality metrics for ``facecast eval``, measured the way talking-head papers measure them.

Everything here is plain numpy (plus skimage for SSIM, cv2 for the Laplacian) so it runs anywhere and is easy to
test:

* image fidelity: PSNR and SSIM per frame, averaged per clip;
* sharpness: variance of the Laplacian, for generated vs real mouth detail;
* geometry: landmark distance (LMD) normalised by the interocular distance, on the mouth or the whole face;
* temporal coherence: mean pixel MSE between consecutive frames, and its gap to the real video;
* an offline lip-sync proxy: correlation of the inner-lip opening with the audio loudness envelope,
  searched over small offsets (the learned SyncNet scores live in ``syncnet.py``);
* mouth motion: how much the inner-lip opening varies over a clip, generated vs real.

Conventions: images are uint8 HWC RGB (a stack is THWC); landmarks are float pixels in 68-point iBUG order,
shape (T, 68, 2); video is 25 fps and audio 16 kHz mono float, video frame n covering samples
[640 n, 640 (n + 1)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .. import mouth_prior
from ..config import SAMPLES_PER_FRAME
from ..errors import FaceError, InputError
from ..landmarks import INNER_LIP_PAIRS, lip_gap  # noqa: F401 - INNER_LIP_PAIRS: part of this module's API

# Identical frames have infinite PSNR; clip means cap each frame here so one perfect frame does not turn the
# whole clip (and every average above it) into inf. 100 dB is far above any real reconstruction.
PSNR_CAP_DB = 100.0

# A real clip whose inner-lip opening varies less than this over the clip (std, interocular units) has a mouth
# that does not move: a motion ratio against it would divide by detector noise. Measured with dlib on
# ../shared/data clips: re-detecting one still frame under +-2 grey-level noise gives an opening std of
# 0.002-0.004; talking clips (grid, hdtf, dinet) give 0.02-0.07.
STILL_MOUTH_OPENING_STD = mouth_prior.STILL_MOUTH_OPENING_STD

# Variance of the Laplacian (grey levels^2) below which a real crop has no texture to compare against (a flat
# patch); sharpness ratios against it are undefined. Real 96^2 mouth crops of the 256^2 aligned face score 20-35
# (measured on grid and hdtf clips from ../shared/data), far above it.
FLAT_LAPLACIAN_VAR = 1.0

# iBUG-68 index sets.
FACE = np.arange(68)
MOUTH = np.arange(48, 68)
LEFT_EYE_OUTER = 36  # subject's right eye, outer corner (image left)
RIGHT_EYE_OUTER = 45  # subject's left eye, outer corner (image right)


# ---------------------------------------------------------------------------------------------------------
# Input checks


def _image_stack(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a (T, H, W, C) uint8 stack; a single HWC image becomes T = 1."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise InputError(
            f"{name} must be uint8 images (0..255), got dtype {x.dtype}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8) or decode the video as uint8."
        )
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise InputError(f"{name} must be an HWC image or a THWC stack with 1 or 3 channels, got shape {x.shape}.")
    if x.shape[0] == 0:
        raise InputError(f"{name} is empty (0 frames); nothing to measure.")
    return x


def _paired_stacks(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real = _image_stack(real, "real")
    fake = _image_stack(fake, "fake")
    if real.shape != fake.shape:
        raise InputError(
            f"real and fake frames differ in shape: {real.shape} vs {fake.shape}; "
            "crop/resize both to the same size and trim both to the same number of frames first."
        )
    return real, fake


def _landmarks(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as (T, 68, 2) float64; a single (68, 2) set becomes T = 1."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (68, 2):
        raise InputError(f"{name} landmarks must have shape (T, 68, 2) in iBUG order, got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise FaceError(f"{name} landmarks contain NaN or inf; re-run landmark detection on those frames.")
    return x


def interocular_px(landmarks: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance per frame (T,), in pixels; the scale every landmark metric divides by."""
    lm = _landmarks(landmarks, "reference")
    iod = np.linalg.norm(lm[:, RIGHT_EYE_OUTER] - lm[:, LEFT_EYE_OUTER], axis=-1)
    bad = np.flatnonzero(iod <= 1e-6)
    if bad.size:
        raise FaceError(
            f"landmarks have zero interocular distance in {bad.size} frame(s) (first: {int(bad[0])}); "
            "the landmarks are degenerate, re-run landmark detection."
        )
    return iod


# ---------------------------------------------------------------------------------------------------------
# Image fidelity


def psnr(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB (T,) of uint8 images or THWC stacks; identical frames give ``inf``."""
    real, fake = _paired_stacks(real, fake)
    out = np.empty(real.shape[0], dtype=np.float64)
    for t in range(real.shape[0]):  # frame by frame: a float copy of a whole clip can be gigabytes
        mse = np.mean((real[t].astype(np.float64) - fake[t].astype(np.float64)) ** 2)
        out[t] = math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)
    return out


def ssim(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """Per-frame SSIM (T,) of uint8 images or THWC stacks (skimage's 7x7 window, data range 255)."""
    from skimage.metrics import structural_similarity  # heavy import, only needed here

    real, fake = _paired_stacks(real, fake)
    if min(real.shape[1:3]) < 7:
        raise InputError(f"SSIM needs frames of at least 7x7 pixels, got {real.shape[1]}x{real.shape[2]}.")
    return np.array(
        [structural_similarity(r, f, channel_axis=-1, data_range=255) for r, f in zip(real, fake, strict=True)],
        dtype=np.float64,
    )


def clip_psnr(real: np.ndarray, fake: np.ndarray, cap_db: float = PSNR_CAP_DB) -> float:
    """Mean per-frame PSNR of a clip in dB; frames are capped at ``cap_db`` so identical ones stay finite."""
    return float(np.mean(np.minimum(psnr(real, fake), cap_db)))


def clip_ssim(real: np.ndarray, fake: np.ndarray) -> float:
    """Mean per-frame SSIM of a clip."""
    return float(np.mean(ssim(real, fake)))


# ---------------------------------------------------------------------------------------------------------
# Sharpness


def laplacian_variance(images: np.ndarray) -> np.ndarray:
    """Per-frame sharpness (T,): variance of the 3x3 Laplacian of the grey image, in grey levels^2.

    The usual focus measure: edges and fine texture (teeth, lip lines) give large second derivatives, a blurred
    image small ones. It also rises with noise and compression artefacts, so compare a generated crop with the
    real crop of the same place rather than reading the number alone; 0 for a flat image.
    """
    import cv2  # project dependency; imported here like skimage above, only this metric needs it

    stack = _image_stack(images, "images")
    if min(stack.shape[1:3]) < 3:
        raise InputError(f"the Laplacian needs images of at least 3x3 pixels, got {stack.shape[1]}x{stack.shape[2]}.")
    out = np.empty(stack.shape[0], dtype=np.float64)
    for t, image in enumerate(stack):
        grey = image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        out[t] = cv2.Laplacian(grey, cv2.CV_64F).var()  # CV_64F: a uint8 result would clip negative responses
    return out


# ---------------------------------------------------------------------------------------------------------
# Geometry


def landmark_distance(
    pred: np.ndarray, real: np.ndarray, indices: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """Per-frame landmark distance (T,): mean point error over ``indices`` / interocular of ``real``.

    ``indices`` picks the points (``MOUTH`` for M-LMD, ``FACE`` or None for F-LMD). Dividing by the real
    face's outer-eye distance makes the number independent of resolution and face size.
    """
    pred_lm = _landmarks(pred, "predicted")
    real_lm = _landmarks(real, "real")
    if pred_lm.shape != real_lm.shape:
        raise InputError(
            f"predicted and real landmarks differ in shape: {pred_lm.shape} vs {real_lm.shape}; "
            "trim both to the same number of frames."
        )
    idx = FACE if indices is None else np.asarray(indices, dtype=np.int64)
    if idx.size == 0 or idx.min() < 0 or idx.max() > 67:
        raise InputError("landmark indices must be a non-empty subset of 0..67 (iBUG-68).")
    err_px = np.linalg.norm(pred_lm[:, idx] - real_lm[:, idx], axis=-1).mean(axis=1)
    return err_px / interocular_px(real_lm)


# ---------------------------------------------------------------------------------------------------------
# Temporal coherence


def temporal_pixel_mse(frames: np.ndarray) -> float:
    """Mean squared difference between consecutive frames, pixels on the [0, 1] scale, averaged over pairs.

    A flickering generator scores higher than the real video of the same motion; compare with
    ``temporal_gap`` rather than reading the number alone (real motion is not zero).
    """
    stack = _image_stack(frames, "frames")
    if stack.shape[0] < 2:
        raise InputError("temporal metrics need at least 2 frames, got 1.")
    total = 0.0
    prev = stack[0].astype(np.float32) / 255.0
    for t in range(1, stack.shape[0]):
        cur = stack[t].astype(np.float32) / 255.0
        total += float(np.mean((cur - prev) ** 2, dtype=np.float64))
        prev = cur
    return total / (stack.shape[0] - 1)


def temporal_gap(fake_frames: np.ndarray, real_frames: np.ndarray) -> float:
    """|temporal MSE(fake) - temporal MSE(real)|; 0 when the fake changes as much per frame as the real."""
    return abs(temporal_pixel_mse(fake_frames) - temporal_pixel_mse(real_frames))


# ---------------------------------------------------------------------------------------------------------
# Offline lip sync (landmark opening vs audio loudness)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip opening per frame (T,), in interocular units.

    Mean Euclidean gap of the pairs 61-67, 62-66, 63-65 (upper vs lower inner lip); Euclidean rather than the
    pure y gap so a tilted head does not read as a closed mouth.
    """
    lm = _landmarks(landmarks, "mouth")
    return lip_gap(lm) / interocular_px(lm)


def opening_std(landmarks: np.ndarray) -> float:
    """How much the mouth moves over a clip: std over frames of ``mouth_opening``, in interocular units."""
    opening = mouth_opening(landmarks)
    if opening.shape[0] < 2:
        raise InputError("mouth motion needs at least 2 frames of landmarks, got 1.")
    return float(opening.std())


def motion_ratio(fake: np.ndarray, real: np.ndarray, still_std: float = STILL_MOUTH_OPENING_STD) -> float:
    """``opening_std(fake) / opening_std(real)`` for landmarks (T, 68, 2) of the same clip; 1.0 = as lively.

    Below 1 the generated mouth under-articulates (a model regressing to the mean opens it too little), above 1
    it exaggerates or jitters. NaN when the real mouth is still (std below ``still_std``): there is no motion
    to match, and ``summarize`` leaves NaN out of the means.
    """
    real_std = opening_std(real)
    if real_std < still_std:
        return math.nan
    return opening_std(fake) / real_std


def audio_envelope(audio_16k: np.ndarray, n_frames: int) -> np.ndarray:
    """RMS loudness per video frame (n_frames,) from 16 kHz mono audio, 640 samples per frame.

    Audio shorter than the video is padded with silence; samples past the last frame are ignored.
    """
    audio = np.asarray(audio_16k, dtype=np.float64)
    if audio.ndim != 1:
        raise InputError(f"audio must be mono 1-D samples at 16 kHz, got shape {audio.shape}; downmix first.")
    if n_frames < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}.")
    need = n_frames * SAMPLES_PER_FRAME
    if audio.shape[0] < need:
        audio = np.pad(audio, (0, need - audio.shape[0]))
    chunks = audio[:need].reshape(n_frames, SAMPLES_PER_FRAME)
    return np.sqrt(np.mean(chunks**2, axis=1))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length 1-D series; 0.0 (not NaN) when either is constant."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"pearson needs two 1-D series of equal length, got {a.shape} and {b.shape}.")
    if a.size < 2 or _is_constant(a) or _is_constant(b):
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0))


def _is_constant(x: np.ndarray) -> bool:
    # Relative to the magnitude: round-off can leave a "constant" float series with a ~1e-17 spread.
    return float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def sync_correlation(opening: np.ndarray, envelope: np.ndarray, max_offset_frames: int = 5) -> tuple[float, int, float]:
    """Correlate mouth opening with the audio envelope over offsets -max..+max video frames.

    Returns ``(corr_at_0, best_offset_frames, corr_at_best)``. Sign convention (same as SyncNet's offset):
    a positive offset k means the mouth lags the audio, i.e. ``opening[t + k]`` pairs with ``envelope[t]``.
    Each offset is scored by Pearson correlation over the overlapping frames only (no padding); offsets
    leaving fewer than 3 overlapping frames are skipped. Ties go to the offset closest to 0. Constant inputs
    give correlation 0.0 rather than NaN.
    """
    o = np.asarray(opening, dtype=np.float64).ravel()
    e = np.asarray(envelope, dtype=np.float64).ravel()
    n = min(o.shape[0], e.shape[0])  # lengths may differ by a frame or two after decoding; use the overlap
    if n < 3:
        raise InputError(f"sync_correlation needs at least 3 frames of both series, got {o.shape[0]} and {e.shape[0]}.")
    if max_offset_frames < 0:
        raise InputError(f"max_offset_frames must be >= 0, got {max_offset_frames}.")
    o, e = o[:n], e[:n]

    def corr_at(k: int) -> float:
        return pearson(o[k:], e[: n - k]) if k >= 0 else pearson(o[: n + k], e[-k:])

    corr0 = corr_at(0)
    best_k, best_c = 0, corr0
    # Visit offsets by increasing |k| and only accept strict improvements, so ties favour small offsets.
    for k in sorted(range(-max_offset_frames, max_offset_frames + 1), key=lambda k: (abs(k), k)):
        if k == 0 or n - abs(k) < 3:
            continue
        c = corr_at(k)
        if c > best_c:
            best_k, best_c = k, c
    return corr0, best_k, best_c


# ---------------------------------------------------------------------------------------------------------
# Aggregation


def summarize(per_clip: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """Mean of every numeric metric over clips, plus ``n_clips``.

    A key missing from a clip, or a non-finite value (NaN, inf), is skipped for that clip only, so one clip
    without landmarks or with a perfect frame does not poison the average. Non-numeric values (names,
    paths) are ignored.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for clip in per_clip:
        for key, value in clip.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                continue
            v = float(value)
            if not math.isfinite(v):
                continue
            sums[key] = sums.get(key, 0.0) + v
            counts[key] = counts.get(key, 0) + 1
    out = {key: sums[key] / counts[key] for key in sums}
    out["n_clips"] = float(len(per_clip))
    return out

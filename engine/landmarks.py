"""68-point iBUG landmark groups, pose normalisation, and rendering landmarks as heatmaps."""

from __future__ import annotations

import numpy as np

JAW = np.arange(0, 17)
NOSE = np.arange(27, 36)
LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
OUTER_LIP = np.arange(48, 60)
INNER_LIP = np.arange(60, 68)
MOUTH = np.arange(48, 68)
# What audio moves (paper 002: audio only drives the mouth and jaw); the rest follows the avatar.
DRIVEN = np.concatenate([JAW, MOUTH])
# Points that speech does not move: used to register a frame's landmarks onto another's.
STABLE = np.concatenate([np.arange(17, 27), NOSE, LEFT_EYE, RIGHT_EYE])
# Inner-lip pairs (upper, lower) whose gaps measure how far a mouth is open.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))


def eye_centres(lms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(…, 68, 2) -> left and right eye centres (…, 2), image left first."""
    return lms[..., LEFT_EYE, :].mean(-2), lms[..., RIGHT_EYE, :].mean(-2)


def lip_gap(lms: np.ndarray) -> np.ndarray:
    """Mean Euclidean gap of the inner-lip pairs, in the landmarks' units: (…, 68, 2) -> (…,). Euclidean rather
    than the pure y gap so a tilted head does not read as a closed mouth."""
    return np.mean([np.linalg.norm(lms[..., a, :] - lms[..., b, :], axis=-1) for a, b in INNER_LIP_PAIRS], axis=0)


def interocular(lms: np.ndarray) -> np.ndarray:
    """Outer eye corner distance (36-45), the usual normaliser of landmark errors. Shape (…,)."""
    return np.linalg.norm(lms[..., 36, :] - lms[..., 45, :], axis=-1)


def mouth_opening(lms: np.ndarray) -> np.ndarray:
    """Inner-lip opening ÷ interocular distance, scale-free: (…, 68, 2) -> (…,)."""
    return lip_gap(lms) / np.maximum(interocular(lms), 1e-6)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking src (N, 2) to dst (N, 2).

    Returns a 2x3 matrix M with dst ≈ src @ M[:, :2].T + M[:, 2] (Umeyama without reflection).
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / max(s.var(0).sum(), 1e-12)
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def invert_affine(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[:, :2])
    return np.concatenate([a, -(a @ m[:, 2])[:, None]], axis=1)


def register_to(lms: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map each frame's landmarks (T, 68, 2) onto ``reference`` (68, 2) by its stable points, removing head pose."""
    out = np.empty_like(lms, dtype=np.float32)
    for t in range(len(lms)):
        out[t] = apply_affine(fit_similarity(lms[t, STABLE], reference[STABLE]), lms[t])
    return out


def render_heatmaps(lms: np.ndarray, size: int, crop_px: int, sigma: float = 0.6) -> np.ndarray:
    """Draw jaw, outer-lip and inner-lip polylines as Gaussian heatmaps at ``size``² (latent resolution).

    lms: (68, 2) pixels in the ``crop_px``² crop. Returns float32 (3, size, size) in [0, 1].
    """
    scale = size / crop_px
    groups = [(JAW, False), (OUTER_LIP, True), (INNER_LIP, True)]
    centres = np.arange(size, dtype=np.float32) + 0.5  # pixel centres along x and along y
    maps = np.zeros((len(groups), size, size), np.float32)
    for c, (idx, closed) in enumerate(groups):
        pts = lms[idx] * scale
        if closed:
            pts = np.concatenate([pts, pts[:1]])
        # Sample each segment densely; the max over samples approximates a distance-to-polyline Gaussian.
        t = np.linspace(0, 1, 6, endpoint=False)[:, None]
        samples = (pts[:-1, None] * (1 - t) + pts[1:, None] * t).reshape(-1, 2)
        # (S, 1, size) + (S, size, 1): the squared offsets along each axis are computed once per sample, not per pixel
        dx2 = (centres[None, None, :] - samples[:, 0, None, None]) ** 2
        dy2 = (centres[None, :, None] - samples[:, 1, None, None]) ** 2
        d2 = dx2 + dy2
        maps[c] = np.exp(-d2.min(0) / (2 * sigma**2))
    return maps

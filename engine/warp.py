"""The warp prior: the avatar's own mouth and jaw, moved to the driving landmarks (IP_LAP-style).

A piecewise-affine warp over a Delaunay triangulation of the 68 landmarks (plus fixed anchors on the crop's
border) takes a source crop whose landmarks are known to new landmarks. Lips, skin, beard and lighting then come
from the avatar's own pixels at full resolution; what a warp cannot show (the inside of an opening mouth: teeth,
the dark cavity) is painted by L2V and laid in through ``interior_mask``.

All coordinates are pixels in the 256² aligned crop; images are uint8 (H, W, 3).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from .landmarks import INNER_LIP, lip_gap


def border_anchors(size_px: int, per_side: int = 4) -> np.ndarray:
    """(4 * per_side, 2) points spaced along the crop's border: they pin the warp to identity at the edges."""
    t = np.linspace(0, size_px - 1, per_side + 1)[:-1]
    far = float(size_px - 1)
    sides = [
        np.stack([t, np.zeros_like(t)], 1),
        np.stack([np.full_like(t, far), t], 1),
        np.stack([far - t, np.full_like(t, far)], 1),
        np.stack([np.zeros_like(t), far - t], 1),
    ]
    return np.concatenate(sides).astype(np.float64)


def _affines_to_source(dst_tri: np.ndarray, src_tri: np.ndarray) -> np.ndarray:
    """Per triangle, the (3, 2) matrix taking homogeneous destination pixels to source pixels.

    dst_tri, src_tri: (K, 3, 2). A triangle with no area (a closed mouth's inner lips) gets the pseudo-inverse's
    least-squares answer, which maps it onto the source's line: harmless, it covers no pixel.
    """
    d = np.concatenate([dst_tri, np.ones((*dst_tri.shape[:2], 1))], axis=2)  # (K, 3, 3)
    return np.linalg.pinv(d) @ src_tri


def warp_map(
    src_px: np.ndarray, dst_px: np.ndarray, size_px: int, top_row: int = 0, box: tuple[slice, slice] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Backward map for ``cv2.remap``: for each destination pixel at rows >= ``top_row``, where to sample the
    source. src_px, dst_px: (N, 2) corresponding points (the 68 landmarks). Returns two float32 (size - top, size),
    or, with ``box`` ((rows, cols) slices inside those rows), the same map's values over the box only: callers
    that use only some pixels (the paste mask's bounding box, a third of the lower face) compute only those.
    """
    anchors = border_anchors(size_px)
    dst = np.concatenate([np.asarray(dst_px, np.float64), anchors])
    src = np.concatenate([np.asarray(src_px, np.float64), anchors])
    triangles = Delaunay(dst).simplices  # (K, 3): triangulated where the pixels are drawn
    rows, cols = box if box is not None else (slice(top_row, size_px), slice(0, size_px))
    r0, r1, _ = rows.indices(size_px)
    c0, c1, _ = cols.indices(size_px)
    if r0 < top_row:
        raise ValueError(f"warp box rows {r0}:{r1} start above the warped rows (from {top_row})")
    # Which triangle each destination pixel lies in (the last one drawn wins on shared edges). Always drawn on the
    # canvas of rows >= top_row: OpenCV fills a triangle cut by the canvas edge with other pixels along its edges
    # than the uncut one, so the canvas, not the box, decides the labels.
    label = np.full((size_px - top_row, size_px), -1, np.int32)
    corners = np.round(dst[triangles] - np.array([0.0, top_row])).astype(np.int32)  # (K, 3, 2) canvas pixels
    low, high = corners.min(1), corners.max(1)
    reaches = (high[:, 0] >= c0) & (high[:, 1] >= r0 - top_row) & (low[:, 0] < c1) & (low[:, 1] < r1 - top_row)
    drawn = reaches.nonzero()[0]
    for k in drawn:  # in drawing order; a triangle that misses the box paints none of it
        cv2.fillConvexPoly(label, corners[k], int(k))
    label = label[r0 - top_row : r1 - top_row, c0:c1]
    affine = np.zeros((len(triangles), 6))  # per triangle, (3, 2) flattened: only the drawn ones are used
    affine[drawn] = _affines_to_source(dst[triangles[drawn]], src[triangles[drawn]]).reshape(-1, 6)
    per_pixel = affine[np.maximum(label, 0)]  # (H, W, 6)
    xs = np.arange(c0, c1, dtype=np.float64)[None]  # (1, W)
    ys = np.arange(r0, r1, dtype=np.float64)[:, None]  # (H, 1)
    map_x = xs * per_pixel[..., 0] + ys * per_pixel[..., 2] + per_pixel[..., 4]
    map_y = xs * per_pixel[..., 1] + ys * per_pixel[..., 3] + per_pixel[..., 5]
    outside = label < 0  # only sliver pixels at the border: sample in place
    map_x[outside] = np.broadcast_to(xs, label.shape)[outside]
    map_y[outside] = np.broadcast_to(ys, label.shape)[outside]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def warp_face(
    source: np.ndarray,
    src_px: np.ndarray,
    dst_px: np.ndarray,
    top_row: int = 0,
    box: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """``source`` (S, S, 3) with landmarks ``src_px`` (68, 2), warped so they land on ``dst_px`` (68, 2).

    Rows above ``top_row`` are copied from the source unwarped (callers use only the lower face). With ``box``
    ((rows, cols) slices at rows >= top_row) only that part of the warped image is made and returned."""
    map_x, map_y = warp_map(src_px, dst_px, source.shape[0], top_row, box)
    warped = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if box is not None:
        return warped
    out = source.copy()
    out[top_row:] = warped
    return out


def interior_mask(lms_px: np.ndarray, size_px: int, grow_px: int, feather_px: float) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the inside of the inner lips, grown by ``grow_px`` and feathered.

    This is where a warp of a closed mouth can only show stretched lip skin, and L2V's painting is used."""
    mask = np.zeros((size_px, size_px), np.uint8)
    cv2.fillPoly(mask, [np.round(lms_px[INNER_LIP]).astype(np.int32)], 255)
    if grow_px > 0:
        mask = cv2.dilate(mask, np.ones((2 * grow_px + 1, 2 * grow_px + 1), np.uint8))
    soft = mask.astype(np.float32) / 255.0
    if feather_px > 0:
        soft = cv2.GaussianBlur(soft, (0, 0), feather_px)
    return np.clip(soft, 0.0, 1.0)


def most_closed_frame(landmarks_px: np.ndarray) -> int:
    """Index of the frame (T, 68, 2) whose mouth is most closed: the best source to warp, since opening a
    closed mouth only needs the interior painted, while closing an open one would squash teeth into the lips."""
    return int(np.argmin(lip_gap(landmarks_px)))


def pick_sources(
    crops: np.ndarray,
    landmarks_px: np.ndarray,
    upper_rows: int,
    candidates: int,
    min_gap_frames: int,
    switch_cost: float,
) -> np.ndarray:
    """Per avatar frame, which frame's lower face to warp (``warp_face``'s source): (T,) int.

    A video avatar turns and its light changes; one source frame warped under every frame leaves a lower face
    lit and turned unlike the rest (a visible patch on held-out clips with head motion). So each frame takes, from
    the ``candidates`` most closed mouths, one whose upper face (rows above ``upper_rows``, the pixels the
    pipeline keeps as they are) looks like its own: similar pose and light, by the mean absolute difference at 1/4
    resolution (grey levels). A source closer in time than ``min_gap_frames`` is not taken, so a mouth is never
    shown from the same moment of the video (in ``facecast eval``'s reconstruct protocol that moment's real mouth
    is the answer); live, a closed mouth a moment away looks the same. Each change of source costs
    ``switch_cost`` (grey levels x frames) and the cheapest sequence is taken (Viterbi): a source that changes
    every frame would flicker. crops: uint8 (T, S, S, 3); landmarks_px: (T, 68, 2).
    """
    t = len(crops)
    pool = np.argsort(lip_gap(landmarks_px), kind="stable")[: max(1, candidates)]
    if t == 1:
        return np.zeros(1, np.int64)
    small = np.stack([cv2.resize(c[:upper_rows], None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA) for c in crops])
    small = small.reshape(t, -1).astype(np.float32)
    cost = np.stack([np.abs(small - small[k]).mean(-1) for k in pool], axis=1)  # (T, K), one candidate at a time
    too_near = np.abs(np.arange(t)[:, None] - pool[None, :]) < min_gap_frames
    cost[too_near] = np.inf
    # A frame with every candidate too near (a short clip) falls back to the most closed mouth.
    cost[too_near.all(axis=1), 0] = 0.0
    return pool[_cheapest_path(cost, switch_cost)].astype(np.int64)


def _cheapest_path(cost: np.ndarray, switch_cost: float) -> np.ndarray:
    """Viterbi over (T, K) per-frame costs with ``switch_cost`` per change of column: (T,) column indices."""
    t, k = cost.shape
    total = cost[0].copy()
    came_from = np.zeros((t, k), np.int64)
    for i in range(1, t):
        best = int(np.argmin(total))
        stay = total <= total[best] + switch_cost
        came_from[i] = np.where(stay, np.arange(k), best)
        total = np.where(stay, total, total[best] + switch_cost) + cost[i]
    path = np.empty(t, np.int64)
    path[-1] = int(np.argmin(total))
    for i in range(t - 1, 0, -1):
        path[i - 1] = came_from[i, path[i]]
    return path

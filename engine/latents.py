"""Images <-> the autoencoder's input layout and latents, and the lower-face masking used everywhere.

numpy only: the runtime path (prepare an avatar, decode frames) runs on any backend without torch. The torch side
for training and enrolment (tensors, the torch encoder, a clip's latents) is ``training/latents.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .config import ModelConfig


def to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    x = np.asarray(images_uint8).astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x / np.float32(127.5) - np.float32(1.0))


def to_uint8_images(x: np.ndarray) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3): the inverse of ``to_unit_range``."""
    return (np.clip(x, -1, 1).transpose(0, 2, 3, 1) * 127.5 + 127.5 + 0.5).astype(np.uint8)


def mask_lower_face(images_uint8: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Blank (to mid grey) the rows that L2V regenerates, so the masked frame cannot leak the mouth."""
    out = np.array(images_uint8, copy=True)
    out[..., cfg.l2v.mask_top_px :, :, :] = 127
    return out


EncodeFn = Callable[[np.ndarray], np.ndarray]  # (N, 3, H, W) in [-1, 1] -> (N, C, H/8, W/8)


def encode_images(encode: EncodeFn, images_uint8: np.ndarray, batch: int = 32) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, C, H/8, W/8) float32 latents, ``batch`` images at a time."""
    out = [encode(to_unit_range(images_uint8[i : i + batch])) for i in range(0, len(images_uint8), batch)]
    return np.concatenate(out).astype(np.float32)

"""Images <-> latents with the trained autoencoder, and the lower-face masking used everywhere."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .config import ModelConfig
from .dataset import Clip


def image_to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.require(images_uint8, requirements=["C", "W"])).float()  # mmap slices are read-only
    return x.permute(0, 3, 1, 2).div(127.5).sub(1.0)


def to_uint8_images(x: np.ndarray) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3): the inverse of ``image_to_tensor``."""
    return (np.clip(x, -1, 1).transpose(0, 2, 3, 1) * 127.5 + 127.5 + 0.5).astype(np.uint8)


def mask_lower_face(images_uint8: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Blank (to mid grey) the rows that L2V regenerates, so the masked frame cannot leak the mouth."""
    out = np.array(images_uint8, copy=True)
    out[..., cfg.l2v.mask_top_px :, :, :] = 127
    return out


EncodeFn = Callable[[np.ndarray], np.ndarray]  # (N, 3, H, W) in [-1, 1] -> (N, C, H/8, W/8)


def encode_images(encode: EncodeFn, images_uint8: np.ndarray, batch: int = 32) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, C, H/8, W/8) float32 latents, ``batch`` images at a time."""
    out = [encode(image_to_tensor(images_uint8[i : i + batch]).numpy()) for i in range(0, len(images_uint8), batch)]
    return np.concatenate(out).astype(np.float32)


def torch_encoder(codec: torch.nn.Module, device: str = "cpu") -> EncodeFn:
    @torch.no_grad()
    def encode(x: np.ndarray) -> np.ndarray:
        return codec.encode(torch.from_numpy(x).to(device)).cpu().numpy()

    return encode


def clip_latents(
    codec: torch.nn.Module, clip: Clip, cfg: ModelConfig, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Latents of a clip's crops and of its masked crops: two (T, C, 32, 32) arrays."""
    crops = np.asarray(clip.crops)
    encode = torch_encoder(codec, device)
    return encode_images(encode, crops), encode_images(encode, mask_lower_face(crops, cfg))

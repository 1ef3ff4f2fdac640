"""The torch side of ``latents.py``, for training and enrolment: image tensors, the torch encoder, a clip's latents."""

from __future__ import annotations

import numpy as np
import torch

from ..config import ModelConfig
from ..latents import EncodeFn, encode_images, mask_lower_face, to_unit_range
from .dataset import Clip


def image_to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1] (``latents.to_unit_range`` as a tensor)."""
    return torch.from_numpy(to_unit_range(images_uint8))


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

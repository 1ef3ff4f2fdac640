"""Our image autoencoder: diffusers' AutoencoderTiny layout, narrow enough to decode on a CPU in real time."""

from __future__ import annotations

import torch
from diffusers import AutoencoderTiny

from ..config import AutoencoderConfig


def build_autoencoder(cfg: AutoencoderConfig) -> AutoencoderTiny:
    n = len(cfg.encoder_blocks)
    return AutoencoderTiny(
        encoder_block_out_channels=(cfg.encoder_channels,) * n,
        decoder_block_out_channels=(cfg.decoder_channels,) * len(cfg.decoder_blocks),
        num_encoder_blocks=cfg.encoder_blocks,
        num_decoder_blocks=cfg.decoder_blocks,
        latent_channels=cfg.latent_channels,
    )


class LatentCodec(torch.nn.Module):
    """Images in [-1, 1] (N, 3, H, W) <-> latents scaled to unit std (N, C, H/8, W/8)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vae = build_autoencoder(cfg)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        # AutoencoderTiny's encoder takes images in [0, 1].
        return self.vae.encoder(images.add(1).div(2)) * self.cfg.latent_scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decoder(latents / self.cfg.latent_scale).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(images)
        return self.decode(z), z

"""L2V: the latent denoiser that draws the lower face for given landmarks (papers 000, 001, 002).

Conditions, all at latent resolution (32x32 for the 256² crop) unless noted:
- the masked avatar frame's latent (lower face blanked), concatenated to the noisy latent;
- an identity reference latent (a different frame of the same person);
- the previous generated latent through a 1x1-conv bottleneck (paper 001: a pose prior that cannot be copied);
- landmark heatmaps (jaw, outer lip, inner lip) drawn at latent resolution (paper 000's landmark image);
- cross-attention tokens: one per driven landmark (coordinates + a learned point embedding, paper 000's landmark
  encoder) and one per audio frame around the current one.
The UNet is diffusers' UNet2DConditionModel; it predicts the clean latent (x0), which is what makes 1-2 DDIM
steps usable.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from ..config import AudioConfig, AutoencoderConfig, FaceConfig, L2VConfig
from .a2l import N_DRIVEN, normalise_landmarks


class L2V(nn.Module):
    def __init__(self, cfg: L2VConfig, audio: AudioConfig, face: FaceConfig, ae: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg, self.face = cfg, face
        c = ae.latent_channels
        self.latent_size = face.crop_px // ae.downscale
        self.bottleneck = nn.Conv2d(c, cfg.prior_channels, kernel_size=1)
        d = cfg.cross_attention_dim
        self.point_in = nn.Linear(2, d)
        self.point_embedding = nn.Parameter(torch.randn(N_DRIVEN, d) * 0.02)
        n_audio = 2 * cfg.audio_context_frames + 1
        self.audio_in = nn.Sequential(
            nn.LayerNorm(audio.mels_per_frame * audio.n_mels),
            nn.Linear(audio.mels_per_frame * audio.n_mels, d),
        )
        self.audio_embedding = nn.Parameter(torch.randn(n_audio, d) * 0.02)
        n = len(cfg.block_out_channels)
        self.unet = UNet2DConditionModel(
            sample_size=self.latent_size,
            in_channels=3 * c + cfg.prior_channels + cfg.heatmap_channels,
            out_channels=c,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
            block_out_channels=cfg.block_out_channels,
            layers_per_block=cfg.layers_per_block,
            cross_attention_dim=d,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=8,
        )

    @property
    def mask_top_row(self) -> int:
        """First latent row of the regenerated lower face."""
        return self.cfg.mask_top_px * self.latent_size // self.face.crop_px

    def tokens(self, driven_px: torch.Tensor, mel_window: torch.Tensor) -> torch.Tensor:
        """driven_px (B, 37, 2) crop pixels; mel_window (B, 2k+1, 320) -> (B, 37 + 2k+1, d)."""
        points = self.point_in(normalise_landmarks(driven_px, self.face)) + self.point_embedding
        audio = self.audio_in(mel_window) + self.audio_embedding
        return torch.cat([points, audio], dim=1)

    def forward(
        self,
        noisy: torch.Tensor,
        timestep: torch.Tensor,
        masked: torch.Tensor,
        identity: torch.Tensor,
        previous: torch.Tensor,
        heatmaps: torch.Tensor,
        driven_px: torch.Tensor,
        mel_window: torch.Tensor,
    ) -> torch.Tensor:
        """Latents (B, C, 32, 32), heatmaps (B, 3, 32, 32), driven landmarks (B, 37, 2) in crop pixels,
        mel_window (B, 2k+1, 320) -> the predicted clean latent (B, C, 32, 32)."""
        x = torch.cat([noisy, masked, identity, self.bottleneck(previous), heatmaps], dim=1)
        tokens = self.tokens(driven_px, mel_window)
        return self.unet(x, timestep, encoder_hidden_states=tokens).sample

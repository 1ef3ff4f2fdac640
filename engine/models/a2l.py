"""A2L: streaming audio -> mouth and jaw landmarks (paper 000's content network + speaker embedding).

The network predicts, for each video frame, the displacement of the 37 audio-driven points (jaw + mouth) from
the avatar's reference landmarks, in a pose-free frame (landmarks registered on the upper face, paper 002).
It is causal: a GRU over per-frame log-mel features. Its lookahead is a delay: the output emitted at step n
belongs to frame n - lookahead, so frame n waits for the audio of frames up to n + lookahead.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import A2LConfig, AudioConfig, FaceConfig
from ..landmarks import DRIVEN

N_DRIVEN = len(DRIVEN)


def normalise_landmarks(lms_px: torch.Tensor, face: FaceConfig) -> torch.Tensor:
    """Crop pixels -> roughly [-1, 1] around the crop centre."""
    half = face.crop_px / 2
    return (lms_px - half) / half


class A2L(nn.Module):
    def __init__(self, cfg: A2LConfig, audio: AudioConfig, face: FaceConfig) -> None:
        super().__init__()
        self.cfg, self.face = cfg, face
        mel_dim = audio.mels_per_frame * audio.n_mels
        # Input is running-mean-normalised log-mel (engine.audio.RunningMeanNormaliser): centred, only scaled here.
        self.mel_std = audio.log_mel_std
        self.mel_in = nn.Sequential(nn.Linear(mel_dim, cfg.hidden), nn.GELU())
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, num_layers=cfg.layers, batch_first=True, dropout=cfg.dropout)
        self.speaker = nn.Sequential(nn.Linear(cfg.speaker_dim, cfg.speaker_hidden), nn.GELU())
        self.reference = nn.Sequential(nn.Linear(68 * 2, cfg.speaker_hidden), nn.GELU())
        self.head = nn.Sequential(
            nn.Linear(cfg.hidden + 2 * cfg.speaker_hidden, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, N_DRIVEN * 2),
        )

    def initial_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=self.head[-1].weight.device)

    def forward(
        self, mel_frames: torch.Tensor, speaker: torch.Tensor, reference_px: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mel_frames (B, T, 4*80); speaker (B, 256); reference_px (B, 68, 2); state (layers, B, hidden).

        Returns displacements in crop pixels (B, T, 37, 2) for the *input* steps (delayed by the lookahead)
        and the new state.
        """
        x = self.mel_in(mel_frames / self.mel_std)
        h, state = self.gru(x, state)
        ref = normalise_landmarks(reference_px, self.face).flatten(1)
        ctx = torch.cat([self.speaker(speaker), self.reference(ref)], dim=-1)
        if self.training and self.cfg.condition_dropout > 0:
            keep = torch.rand(ctx.shape[0], 1, device=ctx.device) >= self.cfg.condition_dropout
            ctx = ctx * keep
        out = self.head(torch.cat([h, ctx[:, None].expand(-1, h.shape[1], -1)], dim=-1))
        scale = self.face.crop_px / 2 * (1.0 if self.training else self.cfg.motion_gain)
        return out.view(*out.shape[:2], N_DRIVEN, 2) * scale, state

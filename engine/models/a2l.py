"""A2L: streaming audio -> mouth and jaw landmarks (paper 000's content network + speaker embedding).

The network predicts, for each video frame, the displacement of the 37 audio-driven points (jaw + mouth) from
the avatar's reference landmarks, in a pose-free frame (landmarks registered on the upper face, paper 002).
It is causal: a GRU over per-frame audio features, log-mel or Whisper encoder tokens (``A2LConfig.audio_features``).
Its lookahead is a delay: the output emitted at step n belongs to frame n - lookahead, so frame n waits for the
audio of frames up to n + lookahead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import A2LConfig, AudioConfig, FaceConfig, SpeechEncoderConfig
from ..landmarks import DRIVEN

N_DRIVEN = len(DRIVEN)


def normalise_landmarks(lms_px: torch.Tensor, face: FaceConfig) -> torch.Tensor:
    """Crop pixels -> roughly [-1, 1] around the crop centre."""
    half = face.crop_px / 2
    return (lms_px - half) / half


class A2LMember(nn.Module):
    """One GRU predictor: per-frame log-mel -> displacements in half-crop units (crop pixels / (crop_px / 2))."""

    def __init__(self, cfg: A2LConfig, mel_dim: int) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(cfg.input_dropout)  # no weights: saved models load as before
        self.mel_in = nn.Sequential(nn.Linear(mel_dim, cfg.hidden), nn.GELU())
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, num_layers=cfg.layers, batch_first=True, dropout=cfg.dropout)
        self.speaker = nn.Sequential(nn.Linear(cfg.speaker_dim, cfg.speaker_hidden), nn.GELU())
        self.reference = nn.Sequential(nn.Linear(68 * 2, cfg.speaker_hidden), nn.GELU())
        self.head = nn.Sequential(
            nn.Linear(cfg.hidden + 2 * cfg.speaker_hidden, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, N_DRIVEN * 2),
        )

    def forward(
        self, mel: torch.Tensor, speaker: torch.Tensor, ref: torch.Tensor, state: torch.Tensor, dropout: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, T, mel_dim) scaled; ref (B, 136) normalised; state (layers, B, hidden) -> (B, T, 37, 2), state."""
        h, state = self.gru(self.mel_in(self.input_dropout(mel)), state)
        ctx = torch.cat([self.speaker(speaker), self.reference(ref)], dim=-1)
        if self.training and dropout > 0:
            keep = torch.rand(ctx.shape[0], 1, device=ctx.device) >= dropout
            ctx = ctx * keep
        out = self.head(torch.cat([h, ctx[:, None].expand(-1, h.shape[1], -1)], dim=-1))
        return out.view(*out.shape[:2], N_DRIVEN, 2), state


class A2L(nn.Module):
    """``cfg.members`` independently initialised GRU predictors, averaged (an ensemble): with a few dozen training
    speakers each member overfits in its own way, and the average is closer on new speakers (docs/quality.md).
    Their states are concatenated along the last axis, so the streaming state stays one tensor."""

    def __init__(
        self, cfg: A2LConfig, audio: AudioConfig, face: FaceConfig, speech: SpeechEncoderConfig | None = None
    ) -> None:
        super().__init__()
        self.cfg, self.face = cfg, face
        speech = speech or SpeechEncoderConfig()
        self.whisper = cfg.audio_features == "whisper"
        # Log-mel input is running-mean-normalised (engine.audio.RunningMeanNormaliser): centred, only scaled here.
        # Whisper tokens (the residual stream between blocks) are LayerNorm-ed per token without parameters, as the
        # next Whisper block would: their scale varies by dimension and by block.
        self.mel_std = audio.log_mel_std
        self.token_width = speech.width
        mel_dim = speech.frame_dim if self.whisper else audio.mels_per_frame * audio.n_mels
        self.members = nn.ModuleList(A2LMember(cfg, mel_dim) for _ in range(cfg.members))

    def scale_input(self, features: torch.Tensor) -> torch.Tensor:
        if not self.whisper:
            return features / self.mel_std
        # reshapes from the tensor's own shape, so the ONNX graph keeps a dynamic batch (unflatten bakes it in)
        b, t, d = features.shape
        tokens = features.reshape(b, t, d // self.token_width, self.token_width)
        return F.layer_norm(tokens, (self.token_width,)).reshape(b, t, d)

    def initial_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(self.cfg.layers, batch, self.cfg.state_width, device=self.members[0].head[-1].weight.device)

    def member_outputs(
        self, mel_frames: torch.Tensor, speaker: torch.Tensor, reference_px: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's displacements in crop pixels, unscaled by the motion gain: (members, B, T, 37, 2), state."""
        mel, ref = self.scale_input(mel_frames), normalise_landmarks(reference_px, self.face).flatten(1)
        outs, states = zip(
            *(
                member(mel, speaker, ref, s.contiguous(), self.cfg.condition_dropout)
                for member, s in zip(self.members, state.chunk(len(self.members), dim=-1), strict=True)
            ),
            strict=True,
        )
        return torch.stack(outs) * (self.face.crop_px / 2), torch.cat(states, dim=-1)

    def split_member_outputs(
        self, mel_frames: torch.Tensor, speaker: torch.Tensor, reference_px: torch.Tensor
    ) -> torch.Tensor:
        """Training: the batch cut into ``members`` equal parts, member i on part i only, from a zero state:
        (members, B / members, T, 37, 2) in crop pixels. Members trained on the same batches overfit alike and
        their average gained nothing on held-out speakers; on separate batches it did (docs/quality.md)."""
        k = len(self.members)
        mel, ref = self.scale_input(mel_frames), normalise_landmarks(reference_px, self.face).flatten(1)
        parts = zip(self.members, mel.chunk(k), speaker.chunk(k), ref.chunk(k), strict=True)
        outs = []
        for member, m, spk, r in parts:
            zero = torch.zeros(self.cfg.layers, len(m), self.cfg.hidden, device=m.device)
            outs.append(member(m, spk, r, zero, self.cfg.condition_dropout)[0])
        return torch.stack(outs) * (self.face.crop_px / 2)

    def forward(
        self, mel_frames: torch.Tensor, speaker: torch.Tensor, reference_px: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mel_frames (B, T, 4*80) log-mel or (B, T, 2*384) Whisper tokens; speaker (B, 256); reference_px
        (B, 68, 2); state (layers, B, state_width).

        Returns displacements in crop pixels (B, T, 37, 2) for the *input* steps (delayed by the lookahead)
        and the new state. In eval mode they are scaled by the motion gain.
        """
        outs, state = self.member_outputs(mel_frames, speaker, reference_px, state)
        return outs.mean(0) * (1.0 if self.training else self.cfg.motion_gain), state

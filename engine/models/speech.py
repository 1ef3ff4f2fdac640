"""The first blocks of Whisper tiny.en's audio encoder (OpenAI, MIT licence) as a plain torch module.

Weights come from ``engine.whisper.convert_ctranslate2`` (``MODEL/speech_encoder.safetensors``). The layout is
Whisper's: two GELU convolutions (the second of stride 2: one token per 20 ms), sinusoidal positions counted from
the window's start, then pre-LayerNorm transformer blocks with full (non-causal) attention inside the window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SpeechEncoderConfig

LN_EPS = 1e-5  # Whisper's LayerNorm epsilon


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(width, eps=LN_EPS)
        self.qkv = nn.Linear(width, 3 * width)  # fused q, k, v as CTranslate2 stores them (k's bias is zero)
        self.attn_out = nn.Linear(width, width)
        self.ffn_norm = nn.LayerNorm(width, eps=LN_EPS)
        self.ffn_in = nn.Linear(width, 4 * width)
        self.ffn_out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # Written out rather than scaled_dot_product_attention so the ONNX graph is plain MatMul/Softmax.
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // self.heads), dim=-1)
        x = x + self.attn_out((weights @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x))))


class SpeechEncoder(nn.Module):
    """Whisper log-mel (B, 80, F) -> (B, F // 2, width): the residual stream after ``blocks`` blocks (before the
    encoder's final LayerNorm, unless ``final_norm``: only the check against CTranslate2's full encoder uses it)."""

    def __init__(self, cfg: SpeechEncoderConfig, blocks: int | None = None, final_norm: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.width, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.width, cfg.width, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(cfg.max_positions, cfg.width))
        n = cfg.blocks if blocks is None else blocks
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(n))
        self.final_norm = nn.LayerNorm(cfg.width, eps=LN_EPS) if final_norm else None

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x) if self.final_norm is not None else x

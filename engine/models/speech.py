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

    def forward(self, x: torch.Tensor, queries: slice = slice(None)) -> torch.Tensor:
        """(B, T, C) -> (B, T', C): the tokens ``queries`` selects, each attending to all T tokens. The last block
        needs only the tokens A2L reads: its queries, attention output and FFN run on those alone."""
        b, t, c = x.shape
        h, d = self.heads, c // self.heads
        # The fused projection for every token (queries are sliced after it: sliced weights would keep
        # onnxruntime's int8 quantizer from seeing the MatMul's weights as constants).
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        q = q[:, :, queries]
        # Written out rather than scaled_dot_product_attention so the ONNX graph is plain MatMul/Softmax.
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        x = x[:, queries] + self.attn_out((weights @ v).transpose(1, 2).reshape(b, -1, c))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x))))


class SpeechEncoder(nn.Module):
    """Whisper log-mel of a live window (B, 80, F) -> (B, ``cfg.output_tokens``, width): the residual stream after
    ``blocks`` blocks at the tokens A2L reads, the last ones of the window before its silent pad
    (``SpeechEncoderConfig.pad_frames``).

    ``whole``: every token of any length of log-mel, (B, F // 2, width), before the encoder's final LayerNorm unless
    ``final_norm`` (the checks against CTranslate2's encoder and the linear probes use it)."""

    def __init__(
        self, cfg: SpeechEncoderConfig, blocks: int | None = None, final_norm: bool = False, whole: bool = False
    ) -> None:
        super().__init__()
        self.cfg, self.whole = cfg, whole
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.width, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.width, cfg.width, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(cfg.max_positions, cfg.width))
        n = cfg.blocks if blocks is None else blocks
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(n))
        self.final_norm = nn.LayerNorm(cfg.width, eps=LN_EPS) if final_norm else None

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        end = x.shape[1] - self.cfg.pad_frames * self.cfg.tokens_per_frame
        kept = slice(None) if self.whole else slice(end - self.cfg.output_tokens, end)
        for i, block in enumerate(self.blocks):
            x = block(x, kept if i == len(self.blocks) - 1 else slice(None))
        if self.whole and self.final_norm is not None:
            x = self.final_norm(x)
        return x

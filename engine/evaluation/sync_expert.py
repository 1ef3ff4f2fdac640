"""A small SyncNet-style lip-sync expert, trained by us (``facecast train sync``), and its LSE-style scores.

The published SyncNet (``syncnet.py``) needs weights we do not have and hears MFCCs. This expert hears what our
A2L hears: the Whisper encoder tokens per video frame (``whisper.clip_features``, (T, 768)), so one encoder pass
serves both. Two towers map a 5-frame window (0.2 s, as SyncNet) to L2-normalised embeddings:

* video: the 5 frames' grey mouth strips, ``MOUTH_H x MOUTH_W`` crop pixels around the mouth landmarks (48-67)
  of the aligned 256² face crop, stacked as 5 channels of a small 2-D conv net;
* audio: the same 5 frames' tokens (5, 768), a per-frame linear layer then a 1-D conv over the 5 frames.

Scoring a clip reuses ``syncnet.offset_distances`` / ``syncnet.sync_scores``: window i of video against audio
windows i-15 .. i+15, distances averaged over the windows whose 31 audio windows all lie inside the clip.
``min_dist`` is the curve's minimum (LSE-D style), ``confidence`` its median minus minimum (LSE-C style),
``offset_frames`` positive when the mouth lags the audio, the sign of ``metrics.sync_correlation``. Distances are
between unit vectors (0..2), so the values are on this expert's own scale, not the published SyncNet's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import build_dataclass
from ..errors import InputError, WeightsError
from .syncnet import VSHIFT, offset_distances, sync_scores

WINDOW_FRAMES = 5  # video frames per window (0.2 s at 25 fps), as SyncNet
MOUTH_H, MOUTH_W = 48, 96  # grey mouth strip, crop pixels of the 256² aligned face crop
MOUTH_POINTS = slice(48, 68)  # dlib's outer and inner lip points
MARGIN_PX = 4  # strips are cut this much larger on each side, so training can jitter the box
EXPERT_FILE = "sync_expert.safetensors"
CONFIG_FILE = "sync_expert.json"


@dataclass(frozen=True)
class SyncExpertConfig:
    audio_dim: int = 768  # Whisper tokens per frame (whisper.SpeechEncoderConfig.frame_dim)
    embed_dim: int = 128
    video_channels: tuple[int, ...] = (32, 64, 96, 128)  # one stride-2 conv each: 48x96 -> 3x6
    audio_hidden: int = 128
    # Regularisation, active in training only (``model.train()``); functional, so the weights' names are unchanged
    # and an expert saved without these fields loads with them at 0.
    audio_dropout: float = 0.0  # on the Whisper tokens, after their LayerNorm: the tower cannot lean on a few dims
    feature_dropout: float = 0.0  # on each tower's pooled features, before its last linear layer


# ---------------------------------------------------------------------------------------------- mouth strips


def mouth_strips(crops: np.ndarray, landmarks: np.ndarray, margin_px: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 aligned face crops + (T, 68, 2) landmarks in crop pixels -> (T, MOUTH_H + 2m, MOUTH_W + 2m)
    uint8 grey strips centred on the mouth points' mean (outside the crop: edge pixels)."""
    frames, lms = np.asarray(crops), np.asarray(landmarks, dtype=np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or lms.shape != (len(frames), 68, 2):
        raise InputError(f"need (T, H, W, 3) crops and (T, 68, 2) landmarks, got {frames.shape} and {lms.shape}.")
    h, w = MOUTH_H + 2 * margin_px, MOUTH_W + 2 * margin_px
    centre = np.round(lms[:, MOUTH_POINTS].mean(1)).astype(int)  # (T, 2) x, y
    out = np.empty((len(frames), h, w), np.uint8)
    for t, (img, (cx, cy)) in enumerate(zip(frames, centre, strict=True)):
        ys = np.clip(np.arange(cy - h // 2, cy - h // 2 + h), 0, img.shape[0] - 1)
        xs = np.clip(np.arange(cx - w // 2, cx - w // 2 + w), 0, img.shape[1] - 1)
        patch = img[ys[:, None], xs[None, :]].astype(np.float32)
        out[t] = np.round(patch @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)  # BT.601 luma
    return out


def normalise_windows(strips: torch.Tensor) -> torch.Tensor:
    """(N, 5, h, w) grey 0..255 -> zero mean, unit std per window: lighting and skin tone are not sync cues,
    but the frame-to-frame changes inside the window (the mouth moving) are kept."""
    x = strips.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
    return (x - mean) / std


# ---------------------------------------------------------------------------------------------- the network


class SyncExpert(nn.Module):
    """Video window (N, 5, MOUTH_H, MOUTH_W) normalised grey and audio window (N, 5, audio_dim) -> unit (N, embed)."""

    def __init__(self, cfg: SyncExpertConfig = SyncExpertConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = WINDOW_FRAMES  # the 5 frames as channels: the first conv sees the motion across them
        for c_out in cfg.video_channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        self.video = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, cfg.embed_dim))
        self.audio_in = nn.Sequential(
            nn.LayerNorm(cfg.audio_dim), nn.Linear(cfg.audio_dim, cfg.audio_hidden), nn.ReLU()
        )
        self.audio = nn.Sequential(
            nn.Conv1d(cfg.audio_hidden, cfg.audio_hidden, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),  # keep where in the window each frame is: (hidden * 5)
            nn.Linear(cfg.audio_hidden * WINDOW_FRAMES, cfg.embed_dim),
        )

    def embed_video(self, strips: torch.Tensor) -> torch.Tensor:
        features = self.video[:-1](normalise_windows(strips))  # (N, last channels)
        features = F.dropout(features, self.cfg.feature_dropout, self.training)
        return F.normalize(self.video[-1](features), dim=1)

    def embed_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        norm, linear, relu = self.audio_in
        x = F.dropout(norm(tokens.float()), self.cfg.audio_dropout, self.training)
        h = relu(linear(x))  # (N, 5, hidden)
        features = self.audio[:-1](h.transpose(1, 2))  # (N, hidden * 5)
        features = F.dropout(features, self.cfg.feature_dropout, self.training)
        return F.normalize(self.audio[-1](features), dim=1)


def windows(x: np.ndarray | torch.Tensor, n_windows: int) -> torch.Tensor:
    """(T, ...) per-frame array -> (n_windows, 5, ...) of frames i..i+4 for each window i."""
    t = torch.as_tensor(np.asarray(x))
    return torch.stack([t[i : i + WINDOW_FRAMES] for i in range(n_windows)])


# ---------------------------------------------------------------------------------------------- scoring


class SyncExpertScorer:
    """A trained expert: ``score(crops, landmarks, features)`` -> offset, confidence, min distance."""

    def __init__(self, net: SyncExpert, meta: dict | None = None, batch_size: int = 256) -> None:
        self.net = net.eval()
        self.meta = meta or {}
        self.batch_size = batch_size

    @classmethod
    def from_dir(cls, folder: str | Path) -> SyncExpertScorer:
        """Load ``folder/sync_expert.safetensors`` + ``sync_expert.json`` (written by ``facecast train sync``)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        weights, config = folder / EXPERT_FILE, folder / CONFIG_FILE
        if not weights.is_file() or not config.is_file():
            raise WeightsError(
                f"no sync expert in {folder} ({EXPERT_FILE} + {CONFIG_FILE}): run `facecast train sync`."
            )
        meta = json.loads(config.read_text())
        cfg = build_dataclass(SyncExpertConfig, meta["expert"])
        net = SyncExpert(cfg)
        net.load_state_dict(load_file(str(weights)))
        return cls(net, meta)

    @torch.no_grad()
    def embed(self, strips: np.ndarray, features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, MOUTH_H, MOUTH_W) strips + (T', audio_dim) features -> (N, embed) video and audio embeddings,
        N = min(T, T') - 4 windows."""
        n = min(len(strips), len(features)) - WINDOW_FRAMES + 1
        if n < 1:
            raise InputError(
                f"the sync expert needs at least {WINDOW_FRAMES} frames, got {len(strips)}/{len(features)}."
            )
        v, a = [], []
        for s in range(0, n, self.batch_size):
            count = min(n, s + self.batch_size) - s
            v.append(self.net.embed_video(windows(strips[s:], count)))
            a.append(self.net.embed_audio(windows(features[s:], count)))
        return torch.cat(v), torch.cat(a)

    def score_strips(self, strips: np.ndarray, features: np.ndarray, vshift: int = VSHIFT) -> dict:
        """Offset/confidence of (T, MOUTH_H, MOUTH_W) uint8 mouth strips against (T, audio_dim) features."""
        video_emb, audio_emb = self.embed(np.ascontiguousarray(strips), np.ascontiguousarray(features, np.float32))
        n = video_emb.shape[0]
        if n <= 2 * vshift:
            raise InputError(
                f"scoring offsets ±{vshift} needs more than {2 * vshift + WINDOW_FRAMES - 1} frames, got {n + 4}."
            )
        # Only the windows whose every offset lands on real audio: syncnet.py pads the audio beyond the clip with
        # zero embeddings, and a unit embedding is at distance 1 from zero, about the in-sync distance, so padded
        # windows would pull the curve's ends (offsets ±15) down towards a false minimum.
        dists = offset_distances(video_emb, audio_emb, vshift)[vshift : n - vshift]
        lse = sync_scores(dists, vshift)
        return {
            "offset_frames": lse["offset_frames"],
            "confidence": lse["lse_c"],
            "min_dist": lse["lse_d"],
            "dist_at_0": lse["mean_dists"][vshift],  # as given: how far from in sync the clip is without a shift
            "n_windows": int(dists.shape[0]),
            "mean_dists": lse["mean_dists"],  # mean_dists[k]: offset vshift - k
        }

    def score(self, crops: np.ndarray, landmarks: np.ndarray, features: np.ndarray) -> dict:
        """(T, 256, 256, 3) uint8 aligned face crops, their (T, 68, 2) landmarks and (T, 768) Whisper tokens per
        frame (``whisper.clip_features`` of the clip's audio) -> offset_frames, confidence, min_dist."""
        return self.score_strips(mouth_strips(crops, landmarks), features)


def save_expert(net: SyncExpert, folder: Path, meta: dict) -> Path:
    """Weights + a JSON of the architecture and how it was trained (``meta``)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(folder / EXPERT_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps({"expert": asdict(net.cfg), **meta}, indent=2))
    return folder / EXPERT_FILE


class SyncExpertOnAudio:
    """The expert plus the speech encoder it hears: scores face crops against raw 16 kHz audio.

    The encoder is the one the expert was trained with (``speech_model`` in its JSON, checked by file hash), not
    the evaluated model's, so a log-mel model is scored on the same scale as a Whisper one."""

    def __init__(self, scorer: SyncExpertScorer, speech_cfg: object, encode: object) -> None:
        self.scorer = scorer
        self.speech_cfg = speech_cfg
        self.encode = encode
        self._features: dict[bytes, np.ndarray] = {}  # by audio digest: the systems of one clip share its audio

    @classmethod
    def from_dir(cls, folder: str | Path, speech_model: str | Path | None = None) -> SyncExpertOnAudio:
        from .. import checkpoint
        from ..whisper import SPEECH_PART, load_speech_encoder, torch_encode

        scorer = SyncExpertScorer.from_dir(folder)
        model_dir = checkpoint.model_folder(str(speech_model or scorer.meta["speech_model"]))  # a path or "default"
        encoder = model_dir / f"{SPEECH_PART}.safetensors"
        if not encoder.is_file():
            raise WeightsError(f"the sync expert hears the speech encoder of {model_dir}, which has no {encoder.name}.")
        if checkpoint.file_hash(encoder) != scorer.meta.get("speech_encoder_hash"):
            raise WeightsError(f"{encoder} is not the speech encoder the sync expert in {folder} was trained with.")
        speech_cfg = checkpoint.load_config(model_dir).speech
        return cls(scorer, speech_cfg, torch_encode(load_speech_encoder(model_dir, speech_cfg)))

    def features(self, audio_16k: np.ndarray) -> np.ndarray:
        """(T, 768) Whisper tokens per video frame, as a live session computes them."""
        import hashlib

        from ..whisper import clip_features

        audio = np.ascontiguousarray(audio_16k, np.float32)
        digest = hashlib.sha1(audio.tobytes()).digest()
        if digest not in self._features:
            self._features = {digest: clip_features(audio, self.speech_cfg, self.encode)}  # keep the last clip only
        return self._features[digest]

    def score(self, crops: np.ndarray, landmarks: np.ndarray, audio_16k: np.ndarray) -> dict:
        return self.scorer.score(crops, landmarks, self.features(audio_16k))

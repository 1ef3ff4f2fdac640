"""``facecast train sync``: the lip-sync expert of ``evaluation/sync_expert.py``, on a prepared dataset.

Contrastive (CLIP-style InfoNCE, both directions): a batch holds ``windows_per_clip`` windows from each of
``clips_per_batch`` clips, their starts at least ``min_shift_frames`` apart, so every video window's negatives are
the same clip's audio shifted by >= 5 frames (same face, voice and room: only timing tells them apart) and other
clips' audio. The loop is ``train.train_loop`` (tqdm, safetensors, resumable from ``OUT/runs/sync/``).

Against overfitting the training speakers (``SyncTrainConfig``): AdamW weight decay, dropout in the expert
(``SyncExpertConfig.audio_dropout`` / ``feature_dropout``), photometric jitter of the mouth strips, and the
checkpoint kept by a figure of a few training clips set aside (``select_clips``, whole speakers, never drawn for
training): their loss or their real-minus-swapped confidence (``select_by``). All off by default; measured in
docs/quality.md (none beat the shipped expert). The held-out clips are the test set: their loss is logged
(``val_loss``: one fixed batch, as the first runs logged it; ``heldout_loss``: averaged over ``select_batches``)
but never picks anything.

Audio features are the speech model's Whisper tokens per frame (``whisper.clip_features``); those already cached
by ``facecast train a2l`` (``MODEL/runs/a2l_features/KEY/``, or another folder given as ``features_cache``) are
read, the rest computed and kept in ``OUT/a2l_features/KEY/``. Held-out clips (whole speakers) are never drawn.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import checkpoint
from ..config import ModelConfig, build_dataclass
from ..errors import FacecastError
from ..evaluation.sync_expert import (
    MARGIN_PX,
    MOUTH_H,
    MOUTH_W,
    WINDOW_FRAMES,
    SyncExpert,
    SyncExpertConfig,
    SyncExpertScorer,
    mouth_strips,
    save_expert,
)
from ..whisper import SPEECH_PART, clip_features, load_speech_encoder, torch_encode
from .dataset import Clip, load_clips
from .train import DEFAULT_HOLDOUT, TrainConfig, a2l_features_key, set_seed, split, train_loop


@dataclass(frozen=True)
class SyncTrainConfig:
    steps: int = 4000  # ~0.15-0.2 s each on one shared core: about 12 min
    clips_per_batch: int = 16
    windows_per_clip: int = 4  # batch = 64 windows
    min_shift_frames: int = 5  # same-clip negatives are at least this far from the positive
    lr: float = 1e-3
    warmup_steps: int = 100
    temperature: float = 0.1  # of the cosine-similarity logits
    # Regularisation (the expert's dropout is in ``expert``). 0 and () give the first recipe, draw for draw.
    weight_decay: float = 0.0  # AdamW's decoupled weight decay, on every parameter
    brightness_jitter: float = 0.0  # per frame: + U(-b, b) x 255 grey levels
    contrast_jitter: float = 0.0  # per frame: scaled about its own mean by U(1 - c, 1 + c)
    gamma_jitter: float = 0.0  # per window: grey (0..1) ** exp(U(-g, g))
    select_clips: tuple[str, ...] = ()  # training clips (whole speakers) set aside: their loss picks the checkpoint
    select_batches: int = 8  # fixed batches that loss (and heldout_loss) is averaged over
    select_by: str = "loss"  # "loss": the lowest select_loss; "separation": the largest select_separation
    max_frames_per_clip: int = 500  # bounds the strip cache (and its reading time) for long clips
    time_limit_s: float = 900.0  # stop (and save) after this long; 0 = no limit
    threads: int = 1
    seed: int = 0
    log_every: int = 100
    holdout: tuple[str, ...] = DEFAULT_HOLDOUT
    expert: SyncExpertConfig = SyncExpertConfig()


@dataclass
class SyncClip:
    name: str
    strips: np.ndarray  # (T, MOUTH_H + 2 MARGIN_PX, MOUTH_W + 2 MARGIN_PX) uint8 grey
    features: np.ndarray  # (T, 768) float32 Whisper tokens per frame
    starts: np.ndarray  # window starts whose 5 frames all had a detected face


# ---------------------------------------------------------------------------------------------- data


class FeatureSource:
    """Whisper tokens per frame for a prepared clip: from a cache folder when there, else computed (and kept)."""

    def __init__(self, model_dir: Path, out: Path, features_cache: Path | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.cfg = checkpoint.load_config(self.model_dir)
        if not (self.model_dir / f"{SPEECH_PART}.safetensors").is_file():
            raise FacecastError(f"{model_dir} has no {SPEECH_PART}.safetensors: give a model whose A2L hears Whisper.")
        self.key = a2l_features_key(self.cfg, self.model_dir)
        roots = [self.model_dir / "runs" / "a2l_features", *([Path(features_cache)] if features_cache else [])]
        self.read_from = [r / self.key for r in roots]
        self.write_to = Path(out) / "a2l_features" / self.key
        self._encode = None

    def __call__(self, clip: Clip) -> np.ndarray:
        for folder in [*self.read_from, self.write_to]:
            if (folder / f"{clip.name}.npy").is_file():
                return np.load(folder / f"{clip.name}.npy")
        if self._encode is None:  # loaded only when something is missing from the caches
            self._encode = torch_encode(load_speech_encoder(self.model_dir, self.cfg.speech))
        features = clip_features(np.asarray(clip.audio), self.cfg.speech, self._encode).astype(np.float32)
        self.write_to.mkdir(parents=True, exist_ok=True)
        np.save(self.write_to / f"{clip.name}.npy", features)
        return features


def sync_clip(clip: Clip, features: np.ndarray, max_frames: int, margin_px: int = MARGIN_PX) -> SyncClip:
    n = min(clip.frames, len(features), max_frames)
    strips = mouth_strips(clip.crops[:n], clip.landmarks[:n], margin_px)
    found = np.asarray(clip.found[:n], bool)
    ok = np.convolve(found, np.ones(WINDOW_FRAMES), "valid") == WINDOW_FRAMES  # (n - 4,): all 5 frames found
    return SyncClip(clip.name, strips, np.asarray(features[:n], np.float32), np.flatnonzero(ok))


def load_sync_clips(clips: list[Clip], features: FeatureSource, max_frames: int) -> list[SyncClip]:
    out = [sync_clip(c, features(c), max_frames) for c in tqdm(clips, desc="mouth strips", unit="clip")]
    return [c for c in out if len(c.starts) >= 4]


def spaced_starts(starts: np.ndarray, k: int, min_gap: int, rng: np.random.Generator) -> list[int]:
    """Up to ``k`` window starts drawn from ``starts``, pairwise at least ``min_gap`` frames apart."""
    chosen: list[int] = []
    for s in rng.permutation(starts):
        if all(abs(int(s) - c) >= min_gap for c in chosen):
            chosen.append(int(s))
            if len(chosen) == k:
                break
    return chosen


def photometric_jitter(window: np.ndarray, scfg: SyncTrainConfig, rng: np.random.Generator) -> np.ndarray:
    """(5, h, w) grey window -> float32 0..255, with a gamma per window and a contrast and brightness per frame.

    One shift or scale of the whole window would be undone by ``normalise_windows``; these change the frames
    against each other (flicker, as generated frames have) or non-linearly (lighting), which it keeps."""
    x = (window.astype(np.float32) / 255.0) ** np.exp(rng.uniform(-scfg.gamma_jitter, scfg.gamma_jitter))
    contrast = rng.uniform(1 - scfg.contrast_jitter, 1 + scfg.contrast_jitter, (len(x), 1, 1))
    brightness = rng.uniform(-scfg.brightness_jitter, scfg.brightness_jitter, (len(x), 1, 1))
    mean = x.mean(axis=(1, 2), keepdims=True)
    x = (x - mean) * contrast + mean + brightness
    return (np.clip(x, 0.0, 1.0) * 255).astype(np.float32)


def sync_batch(clips: list[SyncClip], scfg: SyncTrainConfig, rng: np.random.Generator, augment: bool = True) -> dict:
    """Aligned (video, audio) windows; row i's positive is column i, every other column is a negative."""
    video, audio = [], []
    jitter = augment and (scfg.brightness_jitter or scfg.contrast_jitter or scfg.gamma_jitter)
    for ci in rng.choice(len(clips), size=min(scfg.clips_per_batch, len(clips)), replace=False):
        c = clips[ci]
        for s in spaced_starts(c.starts, scfg.windows_per_clip, scfg.min_shift_frames, rng):
            # Jitter the box by up to the margin (the same for the 5 frames): landmarks on generated frames wobble.
            dy, dx = rng.integers(0, 2 * MARGIN_PX + 1, 2) if augment else (MARGIN_PX, MARGIN_PX)
            v = c.strips[s : s + WINDOW_FRAMES, dy : dy + MOUTH_H, dx : dx + MOUTH_W]
            v = v[:, :, ::-1] if augment and rng.random() < 0.5 else v
            video.append(photometric_jitter(v, scfg, rng) if jitter else v)
            audio.append(c.features[s : s + WINDOW_FRAMES])
    return {
        "video": torch.from_numpy(np.ascontiguousarray(np.stack(video))),
        "audio": torch.from_numpy(np.stack(audio)),
    }


class ContrastiveObjective:
    """Symmetric InfoNCE on cosine similarity / temperature."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def __call__(self, model: SyncExpert, batch: dict, cfg: ModelConfig, step: int) -> torch.Tensor:
        v, a = model.embed_video(batch["video"]), model.embed_audio(batch["audio"])
        logits = v @ a.T / self.temperature  # (B, B)
        target = torch.arange(len(v), device=v.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# ---------------------------------------------------------------------------------------------- the checkpoint


def fixed_batches(clips: list[SyncClip], scfg: SyncTrainConfig, seed: int) -> list[dict]:
    """``select_batches`` unaugmented batches, the same at every log step (and in every run with this seed)."""
    rng = np.random.default_rng(seed)
    return [sync_batch(clips, scfg, rng, augment=False) for _ in range(scfg.select_batches)] if len(clips) >= 2 else []


def separation(model: SyncExpert, clips: list[SyncClip], frames: int = 150) -> float:
    """Mean confidence with each clip's own audio minus with the next clip's (looped to length), over the first
    ``frames`` frames: what ``facecast eval-sync`` measures on the held-out clips, here on the set-aside ones."""
    scorer = SyncExpertScorer(model)
    gaps = []
    for i, c in enumerate(clips):
        strips = c.strips[:frames, MARGIN_PX : MARGIN_PX + MOUTH_H, MARGIN_PX : MARGIN_PX + MOUTH_W]
        other = np.resize(clips[(i + 1) % len(clips)].features, c.features[:frames].shape)
        real, swapped = scorer.score_strips(strips, c.features[:frames]), scorer.score_strips(strips, other)
        gaps.append(real["confidence"] - swapped["confidence"])
    return float(np.mean(gaps))


class KeepBest:
    """``train_loop``'s ``on_log``: a figure of the set-aside training speakers picks the checkpoint, kept in memory
    and in ``run_dir/best.safetensors``: the lowest ``select_loss`` (contrastive loss on fixed batches) or, with
    ``select_by="separation"``, the largest ``select_separation``. The held-out loss is only logged."""

    def __init__(
        self,
        objective: ContrastiveObjective,
        select: list[dict],
        heldout: list[dict],
        run_dir: Path,
        select_clips: list[SyncClip] = (),
        select_by: str = "loss",
    ):
        if select_by not in ("loss", "separation"):
            raise FacecastError(f"select_by is 'loss' or 'separation', not {select_by!r}.")
        self.objective, self.select, self.heldout, self.clips = objective, select, heldout, list(select_clips)
        self.key, self.sign = ("select_loss", 1.0) if select_by == "loss" else ("select_separation", -1.0)
        self.path = Path(run_dir) / "best.safetensors"
        self.best_score, self.best_step, self.state = math.inf, 0, None  # score: lower is better
        state = Path(run_dir) / "state.json"
        if self.path.is_file() and state.is_file():  # a resumed run: the best so far is on disk
            from safetensors.torch import load_file

            logged = [e for e in json.loads(state.read_text())["history"] if self.key in e]
            if logged:
                best = min(logged, key=lambda e: self.sign * e[self.key])
                self.best_score, self.best_step = self.sign * best[self.key], best["step"]
                self.state = load_file(self.path)

    @torch.no_grad()
    def mean_loss(self, model: SyncExpert, batches: list[dict]) -> float:
        return float(np.mean([float(self.objective(model, b, None, 0)) for b in batches]))

    @torch.no_grad()
    def __call__(self, model: SyncExpert, step: int) -> dict:
        entry = {"heldout_loss": self.mean_loss(model, self.heldout)} if self.heldout else {}
        if self.select:
            entry["select_loss"] = self.mean_loss(model, self.select)
        if len(self.clips) >= 2:
            entry["select_separation"] = separation(model, self.clips)
        if self.key in entry and self.sign * entry[self.key] < self.best_score:
            from safetensors.torch import save_file

            self.best_score, self.best_step = self.sign * entry[self.key], step
            self.state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
            save_file(self.state, str(self.path))
        return entry


# ---------------------------------------------------------------------------------------------- the run


def load_sync_config(path: Path | None) -> SyncTrainConfig:
    """A JSON of ``SyncTrainConfig`` fields (``expert``: of ``SyncExpertConfig``); missing ones default."""
    if path is None:
        return SyncTrainConfig()
    values = json.loads(Path(path).read_text())
    expert = build_dataclass(SyncExpertConfig, values.pop("expert", {}))
    return replace(build_dataclass(SyncTrainConfig, values), expert=expert)


def loop_config(scfg: SyncTrainConfig) -> TrainConfig:
    """The ``train.train_loop`` settings of a sync run."""
    return replace(
        TrainConfig(),
        steps=scfg.steps,
        batch=scfg.clips_per_batch * scfg.windows_per_clip,
        lr=scfg.lr,
        weight_decay=scfg.weight_decay,
        warmup_steps=scfg.warmup_steps,
        seed=scfg.seed,
        log_every=scfg.log_every,
        save_every=scfg.log_every * 5,
        time_limit_s=scfg.time_limit_s,
        threads=scfg.threads,
        holdout=scfg.holdout,
    )


def heldout_offsets(model: SyncExpert, clips: list[SyncClip]) -> dict[str, dict]:
    """Each held-out clip's offset and confidence (centre of the strip, no jitter): a quick check of the run."""
    scorer = SyncExpertScorer(model.eval())
    out = {}
    for c in clips:
        strips = c.strips[:, MARGIN_PX : MARGIN_PX + MOUTH_H, MARGIN_PX : MARGIN_PX + MOUTH_W]
        s = scorer.score_strips(strips, c.features)
        out[c.name] = {k: s[k] for k in ("offset_frames", "confidence", "min_dist")}
    return out


def train_sync(
    data: Path,
    model_dir: Path,
    out: Path,
    scfg: SyncTrainConfig = SyncTrainConfig(),
    features_cache: Path | None = None,
) -> dict:
    """Train the expert into ``out`` (``sync_expert.safetensors`` + ``sync_expert.json``); returns the summary."""
    out = Path(out)
    set_seed(scfg.seed)
    torch.set_num_threads(scfg.threads)
    features = FeatureSource(model_dir, out, features_cache)
    all_clips = load_clips(data)
    if set(scfg.select_clips) & set(scfg.holdout):
        raise FacecastError(f"select_clips {sorted(set(scfg.select_clips) & set(scfg.holdout))} are held out (test).")
    missing = set(scfg.select_clips) - {c.name for c in all_clips}
    if missing:
        raise FacecastError(f"select_clips {sorted(missing)} are not in {data}.")
    train_clips = load_sync_clips(
        split(all_clips, (*scfg.holdout, *scfg.select_clips)), features, scfg.max_frames_per_clip
    )
    held = load_sync_clips([c for c in all_clips if c.name in scfg.holdout], features, scfg.max_frames_per_clip)
    chosen = load_sync_clips([c for c in all_clips if c.name in scfg.select_clips], features, scfg.max_frames_per_clip)
    if len(train_clips) < 2:
        raise FacecastError(f"{data}: fewer than 2 usable training clips; the expert needs other clips as negatives.")
    tcfg = loop_config(scfg)
    model = SyncExpert(scfg.expert)
    val = sync_batch(held, scfg, np.random.default_rng(1), augment=False) if len(held) >= 2 else None
    objective = ContrastiveObjective(scfg.temperature)
    select, heldout = fixed_batches(chosen, scfg, 2), fixed_batches(held, scfg, 3)
    keep = KeepBest(objective, select, heldout, out / "runs" / "sync", chosen, scfg.select_by)
    start = time.time()
    summary = train_loop(
        "sync",
        model,
        lambda rng: sync_batch(train_clips, scfg, rng),
        objective,
        features.cfg,
        tcfg,
        out,
        val,
        keep,
    )
    if keep.state is not None:  # the checkpoint with the lowest select_loss, not the last
        model.load_state_dict(keep.state)
        summary.update({"best_step": keep.best_step, f"best_{keep.key}": keep.sign * keep.best_score})
    summary["heldout"] = heldout_offsets(model, held)
    summary.update(
        {
            "wall_s": round(time.time() - start, 1),
            "train_clips": len(train_clips),
            "select_clips": len(chosen),
            "train_windows": int(sum(len(c.starts) for c in train_clips)),
            "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    )
    save_expert(
        model,
        out,
        {
            "speech_model": str(model_dir),
            "speech": asdict(features.cfg.speech),
            "speech_encoder_hash": checkpoint.file_hash(Path(model_dir) / f"{SPEECH_PART}.safetensors"),
            "train": {k: v for k, v in asdict(scfg).items() if k != "expert"},
            "summary": summary,
        },
    )
    return summary

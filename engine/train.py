"""``facecast train {autoencoder,a2l,l2v}``: one readable loop, three ways of drawing a batch.

Each part trains into the model folder (``MODEL/<part>.safetensors`` + ``MODEL/config.json``); the run state
(optimizer, step, the train config) lives in ``MODEL/runs/<part>/`` so an interrupted run resumes where it stopped.
Whole clips listed in ``holdout`` (speakers kept for evaluation) are never drawn.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint
from .audio import log_mel, mel_per_video_frame, normalised_log_mel
from .config import ModelConfig, build_dataclass
from .dataset import Clip, load_clips
from .ddim import make_scheduler
from .errors import FacecastError
from .landmarks import DRIVEN, register_to, render_heatmaps
from .latents import clip_latents, image_to_tensor

# Held-out speakers (whole clips, never trained on): see the model card.
DEFAULT_HOLDOUT = ("kennedy_low", "mimictalk_may_5s", "vox_00104", "lrs2_00016", "grid_lrwp9a")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    seed: int = 0
    log_every: int = 50
    save_every: int = 200
    time_limit_s: float = 0.0  # stop (and save) after this long; 0 = no limit
    threads: int = 0  # torch CPU threads; 0 = torch's default
    holdout: tuple[str, ...] = DEFAULT_HOLDOUT
    # autoencoder
    patch_px: int = 128
    # a2l
    sequence_frames: int = 50
    mel_gain_aug: float = 1.0  # ± natural-log units added to the log-mel (about ±4 dB)
    mel_noise_aug: float = 0.1
    # l2v
    noise_offset: float = 0.0


def load_train_config(path: Path | None, part: str) -> tuple[dict, TrainConfig]:
    """A run's JSON config: {"model": {ModelConfig fields}, "train": {TrainConfig fields}, "<part>": {overrides}}."""
    if path is None:
        return {}, TrainConfig()
    d = json.loads(Path(path).read_text())
    return d.get("model", {}), build_dataclass(TrainConfig, {**d.get("train", {}), **d.get(part, {})})


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split(clips: list[Clip], holdout: tuple[str, ...]) -> list[Clip]:
    train = [c for c in clips if c.name not in holdout and c.frames > 8]
    if not train:
        raise FacecastError("every prepared clip is held out or too short: nothing to train on.")
    return train


# ---------------------------------------------------------------------------------------------- batches


def autoencoder_batch(clips: list[Clip], cfg: ModelConfig, tcfg: TrainConfig, rng: np.random.Generator) -> dict:
    """Random patches, most of them over the lower face that the decoder has to draw."""
    size, p = cfg.face.crop_px, tcfg.patch_px
    patches = []
    for _ in range(tcfg.batch):
        clip = clips[rng.integers(len(clips))]
        img = clip.crops[rng.integers(clip.frames)]
        y0 = (
            int(rng.integers(cfg.l2v.mask_top_px - p // 2, size - p + 1))
            if rng.random() < 0.8
            else int(rng.integers(0, size - p + 1))
        )
        x0 = int(rng.integers(0, size - p + 1))
        patch = img[y0 : y0 + p, x0 : x0 + p]
        patches.append(patch[:, ::-1] if rng.random() < 0.5 else patch)
    return {"images": image_to_tensor(np.stack(patches))}


def a2l_clip(clip: Clip, cfg: ModelConfig, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame mel (T, 320), pose-free landmarks (T, 68, 2) and their mean (68, 2), cached per clip.

    The mean is the reference A2L displaces, exactly as ``facecast prepare`` makes it for a video avatar: with a
    single random frame as reference, its unknowable mouth state dominated the targets and held-out speakers did
    worse than no motion at all.
    """
    if clip.name not in cache:
        mel = mel_per_video_frame(normalised_log_mel(clip.audio, cfg.audio), cfg.audio)
        registered = register_to(clip.landmarks, clip.landmarks[0])
        cache[clip.name] = (mel, registered, registered.mean(0))
    return cache[clip.name]


def a2l_batch(
    clips: list[Clip], cfg: ModelConfig, tcfg: TrainConfig, rng: np.random.Generator, cache: dict, augment: bool = True
) -> dict:
    """Windows of ``sequence_frames``; targets are pose-free displacements from the clip's mean landmarks."""
    look = cfg.a2l.lookahead_frames
    mels, spk, ref, target = [], [], [], []
    for _ in range(tcfg.batch):
        clip = clips[rng.integers(len(clips))]
        mel, registered, r = a2l_clip(clip, cfg, cache)
        n = min(len(mel), clip.frames)
        length = min(tcfg.sequence_frames, n)
        start = int(rng.integers(0, n - length + 1))
        disp = registered[start : start + length, DRIVEN] - r[DRIVEN]
        # The GRU sees `look` extra frames of audio; output step s belongs to frame s - look.
        m = mel[start : start + length + look]
        m = np.concatenate([m, np.zeros((length + look - len(m), m.shape[1]), m.dtype)])
        if augment:  # a random level (log-mel offset) and a little noise: microphones differ
            m = m + rng.uniform(-tcfg.mel_gain_aug, tcfg.mel_gain_aug) + rng.normal(0, tcfg.mel_noise_aug, m.shape)
        pad = tcfg.sequence_frames - length
        mels.append(np.pad(m, ((0, pad), (0, 0))))
        target.append(np.pad(disp, ((0, pad), (0, 0), (0, 0)), constant_values=np.nan))
        spk.append(clip.speaker)
        ref.append(r)
    return {
        "mel": torch.from_numpy(np.stack(mels)).float(),
        "speaker": torch.from_numpy(np.stack(spk)).float(),
        "reference": torch.from_numpy(np.stack(ref)).float(),
        "target": torch.from_numpy(np.stack(target)).float(),
    }


def l2v_batch(clips: list[Clip], cfg: ModelConfig, tcfg: TrainConfig, rng: np.random.Generator, cache: dict) -> dict:
    k = cfg.l2v.audio_context_frames
    size = cfg.face.crop_px // cfg.autoencoder.downscale
    keys = ("target", "masked", "identity", "previous", "heatmaps", "driven", "mel")
    out: dict[str, list] = {key: [] for key in keys}
    for _ in range(tcfg.batch):
        clip = clips[rng.integers(len(clips))]
        lat, masked, mel = cache[clip.name]
        t = int(rng.integers(1, min(len(lat), len(mel))))
        out["target"].append(lat[t])
        out["masked"].append(masked[t])
        out["identity"].append(lat[rng.integers(len(lat))])
        out["previous"].append(lat[t - 1])
        lms = clip.landmarks[t]
        out["heatmaps"].append(render_heatmaps(lms, size, cfg.face.crop_px))
        out["driven"].append(lms[DRIVEN])
        idx = np.clip(np.arange(t - k, t + k + 1), 0, len(mel) - 1)
        out["mel"].append(mel[idx])
    return {key: torch.from_numpy(np.stack(v)).float() for key, v in out.items()}


# ---------------------------------------------------------------------------------------------- losses


def image_gradients(x: torch.Tensor) -> torch.Tensor:
    """Vertical and horizontal finite differences, flattened per image."""
    return torch.cat([(x[..., 1:, :] - x[..., :-1, :]).flatten(1), (x[..., :, 1:] - x[..., :, :-1]).flatten(1)], dim=1)


def autoencoder_loss(model: torch.nn.Module, batch: dict, cfg: ModelConfig, step: int) -> torch.Tensor:
    images = batch["images"]
    recon, z = model(images)
    # L1 keeps colours; the gradient term keeps edges sharp; a tiny latent penalty keeps the scale tame.
    return (
        F.l1_loss(recon, images)
        + 0.5 * F.l1_loss(image_gradients(recon), image_gradients(images))
        + 1e-4 * z.pow(2).mean()
    )


def a2l_loss(model: torch.nn.Module, batch: dict, cfg: ModelConfig, step: int) -> torch.Tensor:
    look = cfg.a2l.lookahead_frames
    state = model.initial_state(batch["mel"].shape[0])
    pred, _ = model(batch["mel"], batch["speaker"], batch["reference"], state)
    pred = pred[:, look:]
    target = batch["target"]
    valid = ~torch.isnan(target)
    return F.mse_loss(pred[valid], target[valid]) / 16.0  # pixels² / 16: ~unit scale


class L2VObjective:
    """x0-prediction on the lower face only: upper latent rows stay clean and are not scored (paper 002)."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.scheduler = make_scheduler(cfg.l2v)

    def __call__(self, model: torch.nn.Module, batch: dict, cfg: ModelConfig, step: int) -> torch.Tensor:
        target, masked = batch["target"], batch["masked"]
        b = target.shape[0]
        row = model.mask_top_row
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,))
        noise = torch.randn_like(target)
        noisy = self.scheduler.add_noise(target, noise, t)
        noisy = torch.cat([masked[:, :, :row], noisy[:, :, row:]], dim=2)
        pred = model(
            noisy,
            t,
            masked,
            batch["identity"],
            batch["previous"],
            batch["heatmaps"],
            batch["driven"],
            batch["mel"],
        )
        return F.mse_loss(pred[:, :, row:], target[:, :, row:])


# ---------------------------------------------------------------------------------------------- the loop


def lr_at(step: int, tcfg: TrainConfig) -> float:
    if step < tcfg.warmup_steps:
        return tcfg.lr * (step + 1) / tcfg.warmup_steps
    progress = (step - tcfg.warmup_steps) / max(1, tcfg.steps - tcfg.warmup_steps)
    return tcfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_loop(
    part: str,
    model: torch.nn.Module,
    next_batch: Callable[[np.random.Generator], dict],
    loss_fn: Callable[[torch.nn.Module, dict, ModelConfig, int], torch.Tensor],
    cfg: ModelConfig,
    tcfg: TrainConfig,
    model_dir: Path,
    val_batch: dict | None = None,
) -> dict:
    """Train ``model`` for ``tcfg.steps``; with ``val_batch`` (drawn from held-out clips) log its loss too."""
    run_dir = Path(model_dir) / "runs" / part
    run_dir.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    state_path = run_dir / "state.json"
    step, history = 0, []
    if state_path.is_file():  # resume
        state = json.loads(state_path.read_text())
        step, history = state["step"], state["history"]
        model.load_state_dict(_load_tensors(run_dir / "last.safetensors"))
        opt.load_state_dict(torch.load(run_dir / "optimizer.pt", weights_only=True))
        tqdm.write(f"resuming {part} at step {step}")
    (run_dir / "train_config.json").write_text(json.dumps({"model": cfg.to_dict(), "train": asdict(tcfg)}, indent=2))
    rng = np.random.default_rng(tcfg.seed + step)
    torch.manual_seed(tcfg.seed + step)

    def save() -> None:
        checkpoint.save_part(model, run_dir, "last")
        torch.save(opt.state_dict(), run_dir / "optimizer.pt")
        state_path.write_text(json.dumps({"step": step, "history": history}))

    model.train()
    start, losses = time.time(), []
    bar = tqdm(total=tcfg.steps, initial=step, desc=f"train {part}", unit="step")
    while step < tcfg.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tcfg)
        loss = loss_fn(model, next_batch(rng), cfg, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % tcfg.log_every == 0 or step == tcfg.steps:
            entry = {"step": step, "loss": float(np.mean(losses)), "elapsed_s": round(time.time() - start, 1)}
            if val_batch is not None:
                model.eval()
                with torch.no_grad():
                    entry["val_loss"] = float(loss_fn(model, val_batch, cfg, step))
                model.train()
            history.append(entry)
            bar.set_postfix({k: f"{v:.4f}" for k, v in entry.items() if "loss" in k})
            losses = []
        if step % tcfg.save_every == 0:
            save()
        if tcfg.time_limit_s and time.time() - start > tcfg.time_limit_s:
            tqdm.write(f"time limit reached at step {step}")
            break
    bar.close()
    save()
    model.eval()
    return {"part": part, "steps": step, "seconds": round(time.time() - start, 1), "history": history}


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def train(part: str, data: Path, model_dir: Path, config_path: Path | None = None) -> dict:
    """Train one part into ``model_dir`` and write its weights; returns a summary for the model card."""
    overrides, tcfg = load_train_config(config_path, part)
    model_dir = Path(model_dir)
    existing = model_dir / "config.json"
    cfg = ModelConfig.load(existing) if existing.is_file() else ModelConfig.from_dict(overrides)
    set_seed(tcfg.seed)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    clips = split(load_clips(data), tcfg.holdout)
    model = checkpoint.build(part, cfg)
    cache: dict = {}
    if part == "autoencoder":
        summary = train_loop(
            part,
            model,
            lambda rng: autoencoder_batch(clips, cfg, tcfg, rng),
            autoencoder_loss,
            cfg,
            tcfg,
            model_dir,
        )
        cfg = _with_latent_scale(cfg, model, clips)
        model.cfg = cfg.autoencoder
    elif part == "a2l":
        held = [c for c in load_clips(data) if c.name in tcfg.holdout and c.frames > 8]
        val = a2l_batch(held, cfg, tcfg, np.random.default_rng(1), {}, augment=False) if held else None
        summary = train_loop(
            part, model, lambda rng: a2l_batch(clips, cfg, tcfg, rng, cache), a2l_loss, cfg, tcfg, model_dir, val
        )
    elif part == "l2v":
        codec = checkpoint.load_part(model_dir, "autoencoder", cfg)
        for clip in tqdm(clips, desc="encode latents", unit="clip"):
            lat, masked = clip_latents(codec, clip, cfg)
            cache[clip.name] = (lat, masked, mel_per_video_frame(log_mel(clip.audio, cfg.audio), cfg.audio))
        summary = train_loop(
            part,
            model,
            lambda rng: l2v_batch(clips, cfg, tcfg, rng, cache),
            L2VObjective(cfg),
            cfg,
            tcfg,
            model_dir,
        )
    else:
        raise ValueError(f"unknown part {part!r}: choose from {checkpoint.PARTS}")
    cfg.save(model_dir / "config.json")
    checkpoint.save_part(model, model_dir, part)
    summary.update(
        {
            "train_clips": [c.name for c in clips],
            "holdout": list(tcfg.holdout),
            "threads": torch.get_num_threads(),
        }
    )
    (model_dir / f"{part}.train.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def _with_latent_scale(cfg: ModelConfig, model: torch.nn.Module, clips: list[Clip], samples: int = 64) -> ModelConfig:
    """Measure the latents' std on real crops and store 1/std, so the diffusion sees unit-scale latents."""
    import dataclasses

    rng = np.random.default_rng(0)
    imgs = np.stack([c.crops[rng.integers(c.frames)] for c in (clips[i % len(clips)] for i in range(samples))])
    model.cfg = dataclasses.replace(cfg.autoencoder, latent_scale=1.0)
    z = torch.cat([model.encode(image_to_tensor(imgs[i : i + 16])) for i in range(0, samples, 16)])
    ae = dataclasses.replace(cfg.autoencoder, latent_scale=float(1.0 / z.std()))
    return dataclasses.replace(cfg, autoencoder=ae)

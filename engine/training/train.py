"""``facecast train {autoencoder,a2l,l2v}``: one readable loop, three ways of drawing a batch.

Each part trains into the model folder (``MODEL/<part>.safetensors`` + ``MODEL/config.json``); the run state
(optimizer, step, the train config) lives in ``MODEL/runs/<part>/`` so an interrupted run resumes where it stopped.
Whole clips listed in ``holdout`` (speakers kept for evaluation) are never drawn.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from tqdm import tqdm

from .. import checkpoint
from ..audio import log_mel, mel_per_video_frame
from ..config import L2VConfig, ModelConfig, build_dataclass
from ..errors import FacecastError
from ..landmarks import DRIVEN, lip_gap, register_to, render_heatmaps
from ..sampler import BETA_END, BETA_START
from ..whisper import Encode, a2l_features, model_encode
from .augment import AudioAugment, augment_audio
from .dataset import Clip, load_clips
from .latents import clip_latents, image_to_tensor


def make_scheduler(cfg: L2VConfig) -> DDIMScheduler:
    """The noise schedule L2V trains with; ``sampler.DDIMSchedule`` samples with the same one, without diffusers."""
    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=BETA_START,
        beta_end=BETA_END,
        beta_schedule="linear",
        prediction_type=cfg.prediction_type,
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=True,
    )


# Held-out speakers (whole speakers: no other clip of theirs is trained on), from seven sources: see the model card.
DEFAULT_HOLDOUT = (
    "mimictalk_may_5s",
    "lrs2_00016",
    "hdtf_radio8",
    "vox_681600002",
    "mead_w040_happy",
    "firstimp_G3kw9HwCqY_000",
    "dinet_test19",
)


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
    device: str = "cpu"  # where the network trains ("cuda" on a GPU host); data is drawn on the CPU
    holdout: tuple[str, ...] = DEFAULT_HOLDOUT
    # autoencoder
    patch_px: int = 128
    # a2l
    sequence_frames: int = 50
    mel_gain_aug: float = 1.0  # ± natural-log units added to the log-mel (about ±4 dB)
    mel_noise_aug: float = 0.1
    # Vocal-tract-length perturbation: the mel axis is stretched by a random factor in [1 - this, 1 + this], so that
    # a new speaker's formants are not new to A2L (held-out mouth LMD 0.0443 -> 0.0431 over three seeds).
    mel_warp_aug: float = 0.15
    # The motion gain makes the held-in inner-lip opening's std this fraction of the real one. With an opening
    # correlation rho on new speakers, a motion ratio s gives an error of about sqrt(1 + s^2 - 2 s rho) x that of a
    # still mouth (docs/quality.md): a mouth moving fully (s = 1) at rho ~ 0.37 strays further than one that moves a
    # little less, so the default sits inside the 0.7-1.3 band, near its lower end.
    motion_target: float = 1.0
    velocity_weight: float = 0.0  # weight of the frame-to-frame motion term: MSE alone smooths speech away
    # Whisper A2L only: per training clip, this many augmented versions of its audio (``augment.py``: another pitch
    # and vocal tract, a room, a microphone's noise), each run through the live feature stream and cached beside
    # the clean features; every training window takes the clean copy or one of these at random. Held-out clips and
    # the motion gain always use the clean audio. 0 = off.
    a2l_aug_copies: int = 0
    a2l_aug_pitch: float = 0.0  # pitch scaled by a factor in [1 / (1 + this), 1 + this]
    a2l_aug_formant: float = 0.0  # formants (spectral envelope) likewise, independently of the pitch
    a2l_aug_reverb: float = 0.0  # probability of a synthetic room
    a2l_aug_noise: float = 0.0  # probability of added noise, at an SNR drawn in a2l_aug_snr_db
    a2l_aug_snr_db: tuple[float, float] = (10.0, 30.0)
    a2l_aug_seed: int = 0  # seeds the copies' draws (not train.seed: both training seeds share the cached copies)
    # l2v
    noise_offset: float = 0.0
    # Extra weight of the mouth in L2V's loss (1 + this inside it): the composite takes only the mouth interior
    # from L2V (the rest is the warped avatar), so that is where its capacity should go.
    mouth_loss_weight: float = 0.0
    mouth_grow_px: int = 8  # the weighted region: the lips' hull grown by this (crop pixels)


def augment_recipe(tcfg: TrainConfig) -> AudioAugment:
    """The audio augmentation of ``tcfg``'s A2L copies."""
    return AudioAugment(
        pitch=tcfg.a2l_aug_pitch,
        formant=tcfg.a2l_aug_formant,
        reverb=tcfg.a2l_aug_reverb,
        noise=tcfg.a2l_aug_noise,
        snr_db=tuple(tcfg.a2l_aug_snr_db),
        seed=tcfg.a2l_aug_seed,
    )


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


def a2l_clip(
    clip: Clip, cfg: ModelConfig, cache: dict, encode: Encode | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame audio features (T, 320 log-mel or 768 Whisper: ``whisper.a2l_features``), pose-free landmarks
    (T, 68, 2) and their mean (68, 2), cached per clip. ``encode``: the speech encoder, for Whisper features.

    The mean is the reference A2L displaces, exactly as ``facecast prepare`` makes it for a video avatar: with a
    single random frame as reference, its unknowable mouth state dominated the targets and held-out speakers did
    worse than no motion at all.
    """
    if clip.name not in cache:
        mel = a2l_features(clip.audio, cfg, encode)
        registered = register_to(clip.landmarks, clip.landmarks[0])
        cache[clip.name] = (mel, registered, registered.mean(0))
    return cache[clip.name]


def a2l_features_key(cfg: ModelConfig, model_dir: Path) -> str:
    """The name of the folder ``cached_a2l_features`` keeps Whisper features in: a hash of the speech config and
    the encoder file, so any model folder with the same encoder finds (and can share) the same features."""
    from ..whisper import SPEECH_PART

    key = json.dumps(asdict(cfg.speech), sort_keys=True) + checkpoint.file_hash(
        Path(model_dir) / f"{SPEECH_PART}.safetensors"
    )
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def cached_a2l_features(clips: list[Clip], cfg: ModelConfig, encode: Encode, model_dir: Path) -> dict:
    """``a2l_clip``'s cache entries for ``clips`` with Whisper features, kept in ``MODEL/runs/a2l_features/KEY/``
    (KEY: the speech config and encoder file), so variants and resumed runs do not rerun the encoder."""
    folder = Path(model_dir) / "runs" / "a2l_features" / a2l_features_key(cfg, model_dir)
    features = _cached_features(folder, clips, lambda clip: clip.audio, cfg, encode, asdict(cfg.speech))
    out = {}
    for clip in clips:
        registered = register_to(clip.landmarks, clip.landmarks[0])
        out[clip.name] = (features[clip.name], registered, registered.mean(0))
    return out


def a2l_augment_key(base_key: str, recipe: AudioAugment, copy: int) -> str:
    """The folder name of one augmented copy's features: the clean key, the recipe and the copy index."""
    key = json.dumps({"base": base_key, "recipe": asdict(recipe), "copy": copy}, sort_keys=True)
    return f"{base_key}-aug-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def cached_augmented_features(
    clips: list[Clip], cfg: ModelConfig, encode: Encode, model_dir: Path, recipe: AudioAugment, copies: int
) -> dict[str, list[np.ndarray]]:
    """Per clip, the Whisper features of ``copies`` augmented versions of its audio (``augment.augment_audio``),
    each cached in ``MODEL/runs/a2l_features/KEY-aug-HASH/`` (``a2l_augment_key``), beside the clean features."""
    base = a2l_features_key(cfg, model_dir)
    out: dict[str, list[np.ndarray]] = {clip.name: [] for clip in clips}
    for copy in range(copies):
        folder = Path(model_dir) / "runs" / "a2l_features" / a2l_augment_key(base, recipe, copy)
        key = {"speech": asdict(cfg.speech), "base": base, "recipe": asdict(recipe), "copy": copy}

        def audio(clip: Clip, copy: int = copy) -> np.ndarray:
            return augment_audio(clip.audio, recipe, recipe.rng(copy, clip.name))

        for name, features in _cached_features(folder, clips, audio, cfg, encode, key, f"copy {copy}").items():
            out[name].append(features)
    return out


def _cached_features(
    folder: Path,
    clips: list[Clip],
    audio: Callable[[Clip], np.ndarray],
    cfg: ModelConfig,
    encode: Encode,
    key: dict,
    label: str = "",
) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / "key.json"
    if not key_path.is_file():  # written once: a folder shared with other model folders is only ever added to
        key_path.write_text(json.dumps(key))
    out = {}
    for clip in tqdm(clips, desc=f"whisper features {label}".strip(), unit="clip"):
        path = folder / f"{clip.name}.npy"
        if path.is_file():
            features = np.load(path)
        else:
            features = a2l_features(audio(clip), cfg, encode).astype(np.float32)
            np.save(path, features)
        out[clip.name] = features
    return out


def warp_mel_axis(mel: np.ndarray, factor: float, n_mels: int) -> np.ndarray:
    """(T, k * n_mels) stacked mel frames -> the same with each frame's mel axis stretched by ``factor`` (> 1 moves
    energy to higher bands, as a shorter vocal tract does), linearly interpolated, the top band held at the edge."""
    if factor == 1.0:
        return mel
    frames = mel.reshape(len(mel), -1, n_mels)
    src = np.clip(np.arange(n_mels) / factor, 0, n_mels - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_mels - 1)
    w = (src - lo).astype(mel.dtype)
    return (frames[..., lo] * (1 - w) + frames[..., hi] * w).reshape(mel.shape)


def a2l_batch(
    clips: list[Clip],
    cfg: ModelConfig,
    tcfg: TrainConfig,
    rng: np.random.Generator,
    cache: dict,
    augment: bool = True,
    encode: Encode | None = None,
    copies: dict[str, list[np.ndarray]] | None = None,
) -> dict:
    """``tcfg.batch`` windows of ``sequence_frames`` for each ensemble member; targets are pose-free displacements
    from the clip's mean landmarks. ``copies``: per clip, features of augmented versions of its audio
    (``cached_augmented_features``): with ``augment``, each window takes the clean features or one of them."""
    look = cfg.a2l.lookahead_frames
    mels, spk, ref, target = [], [], [], []
    for _ in range(tcfg.batch * cfg.a2l.members):
        clip = clips[rng.integers(len(clips))]
        mel, registered, r = a2l_clip(clip, cfg, cache, encode)
        if augment and copies and copies.get(clip.name):
            pick = int(rng.integers(len(copies[clip.name]) + 1))  # 0: the clean audio
            mel = copies[clip.name][pick - 1] if pick else mel
        n = min(len(mel), clip.frames)
        length = min(tcfg.sequence_frames, n)
        start = int(rng.integers(0, n - length + 1))
        disp = registered[start : start + length, DRIVEN] - r[DRIVEN]
        # The GRU sees `look` extra frames of audio; output step s belongs to frame s - look.
        m = mel[start : start + length + look]
        m = np.concatenate([m, np.zeros((length + look - len(m), m.shape[1]), m.dtype)])
        # Log-mel only: another vocal tract, a random level (log-mel offset) and a little noise (microphones differ).
        # Whisper features are computed once per clip (the encoder is too slow to rerun per batch): their augmentation
        # is in the audio, before the encoder (``copies``).
        if augment and cfg.a2l.audio_features == "logmel":
            m = warp_mel_axis(m, rng.uniform(1 - tcfg.mel_warp_aug, 1 + tcfg.mel_warp_aug), cfg.audio.n_mels)
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


@dataclass
class L2VClip:
    """What L2V's batches index, computed once per clip (T frames, 32x32 latent resolution)."""

    latents: np.ndarray  # (T, C, 32, 32)
    masked: np.ndarray  # (T, C, 32, 32) latents of the crops with the lower face blanked
    mel: np.ndarray  # (T', 320) raw log-mel per video frame
    heatmaps: np.ndarray  # (T, 3, 32, 32)
    driven: np.ndarray  # (T, 37, 2) crop pixels
    mouth: np.ndarray  # (T, 1, 32, 32) in [0, 1]: where the loss weighs more

    @property
    def frames(self) -> int:
        return min(len(self.latents), len(self.mel))


def l2v_clip(codec: torch.nn.Module, clip: Clip, cfg: ModelConfig, tcfg: TrainConfig) -> L2VClip:
    import cv2

    from ..crop import mouth_mask

    size = cfg.face.crop_px // cfg.autoencoder.downscale
    lat, masked = clip_latents(codec, clip, cfg, tcfg.device)
    mouth = [
        cv2.resize(mouth_mask(lms, cfg.face, tcfg.mouth_grow_px), (size, size), interpolation=cv2.INTER_AREA)
        for lms in clip.landmarks
    ]
    return L2VClip(
        latents=lat,
        masked=masked,
        mel=mel_per_video_frame(log_mel(clip.audio, cfg.audio), cfg.audio),
        heatmaps=np.stack([render_heatmaps(lms, size, cfg.face.crop_px) for lms in clip.landmarks]),
        driven=clip.landmarks[:, DRIVEN],
        mouth=np.stack(mouth)[:, None],
    )


def l2v_batch(clips: list[L2VClip], cfg: ModelConfig, tcfg: TrainConfig, rng: np.random.Generator) -> dict:
    k = cfg.l2v.audio_context_frames
    keys = ("target", "masked", "identity", "previous", "heatmaps", "driven", "mel", "mouth")
    out: dict[str, list] = {key: [] for key in keys}
    for _ in range(tcfg.batch):
        c = clips[rng.integers(len(clips))]
        t = int(rng.integers(1, c.frames))
        out["target"].append(c.latents[t])
        out["masked"].append(c.masked[t])
        out["identity"].append(c.latents[rng.integers(len(c.latents))])
        out["previous"].append(c.latents[t - 1])
        out["heatmaps"].append(c.heatmaps[t])
        out["driven"].append(c.driven[t])
        out["mel"].append(c.mel[np.clip(np.arange(t - k, t + k + 1), 0, len(c.mel) - 1)])
        out["mouth"].append(c.mouth[t])
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


class A2LObjective:
    """Displacement MSE of every ensemble member on its own part of the batch (so the members stay independent),
    plus optionally MSE of the frame-to-frame motion."""

    def __init__(self, tcfg: TrainConfig) -> None:
        self.velocity_weight = tcfg.velocity_weight

    def __call__(self, model: torch.nn.Module, batch: dict, cfg: ModelConfig, step: int) -> torch.Tensor:
        look = cfg.a2l.lookahead_frames
        members = model.split_member_outputs(batch["mel"], batch["speaker"], batch["reference"])
        pred = members[:, :, look:]  # (members, B / members, T, 37, 2)
        target = batch["target"].view(pred.shape)
        valid = ~torch.isnan(target)
        loss = F.mse_loss(pred[valid], target[valid]) / 16.0  # pixels² / 16: ~unit scale
        if self.velocity_weight:
            dp, dt = pred[:, :, 1:] - pred[:, :, :-1], target[:, :, 1:] - target[:, :, :-1]
            moving = ~torch.isnan(dt)
            loss = loss + self.velocity_weight * F.mse_loss(dp[moving], dt[moving]) / 16.0
        return loss


class L2VObjective:
    """x0-prediction on the lower face only: upper latent rows stay clean and are not scored (paper 002)."""

    def __init__(self, cfg: ModelConfig, mouth_loss_weight: float = 0.0) -> None:
        self.scheduler = make_scheduler(cfg.l2v)
        self.mouth_loss_weight = mouth_loss_weight

    def __call__(self, model: torch.nn.Module, batch: dict, cfg: ModelConfig, step: int) -> torch.Tensor:
        target, masked = batch["target"], batch["masked"]
        b = target.shape[0]
        row = model.mask_top_row
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=target.device)
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
        weight = 1.0 + self.mouth_loss_weight * batch["mouth"][:, :, row:]
        return (weight * (pred[:, :, row:] - target[:, :, row:]).pow(2)).mean()


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
    on_log: Callable[[torch.nn.Module, int], dict] | None = None,
) -> dict:
    """Train ``model`` for ``tcfg.steps``; with ``val_batch`` (drawn from held-out clips) log its loss too.

    ``on_log(model, step)``, called at each log step in eval mode without gradients, returns more figures for the
    log entry (and may keep a copy of the model: ``train sync`` keeps its best checkpoint so)."""
    run_dir = Path(model_dir) / "runs" / part
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(tcfg.device)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    state_path = run_dir / "state.json"
    step, history = 0, []
    if state_path.is_file():  # resume
        state = json.loads(state_path.read_text())
        step, history = state["step"], state["history"]
        model.load_state_dict(_load_tensors(run_dir / "last.safetensors"))
        opt.load_state_dict(torch.load(run_dir / "optimizer.pt", weights_only=True, map_location=device))
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
        batch = {k: v.to(device, non_blocking=True) for k, v in next_batch(rng).items()}
        loss = loss_fn(model, batch, cfg, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % tcfg.log_every == 0 or step == tcfg.steps:
            entry = {"step": step, "loss": float(np.mean(losses)), "elapsed_s": round(time.time() - start, 1)}
            model.eval()
            with torch.no_grad():
                if val_batch is not None:
                    val = {k: v.to(device) for k, v in val_batch.items()}
                    entry["val_loss"] = float(loss_fn(model, val, cfg, step))
                if on_log is not None:
                    entry |= on_log(model, step)
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
    model.eval().cpu()
    return {"part": part, "steps": step, "seconds": round(time.time() - start, 1), "history": history}


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def train(part: str, data: Path, model_dir: Path, config_path: Path | None = None, device: str | None = None) -> dict:
    """Train one part into ``model_dir`` and write its weights; returns a summary for the model card.

    ``device`` ("cpu", "cuda") overrides the run config's."""
    overrides, tcfg = load_train_config(config_path, part)
    if device is not None:
        tcfg = replace(tcfg, device=device)
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
        encode = model_encode(model_dir, cfg)
        copies = None
        if encode is not None:  # Whisper features: computed once per clip, kept on disk for the next run
            cache |= cached_a2l_features(clips + held, cfg, encode, model_dir)
            if tcfg.a2l_aug_copies:  # training clips only: held-out scores are on the clean audio
                recipe = augment_recipe(tcfg)
                if not recipe.active:
                    raise FacecastError("train.a2l_aug_copies needs an augmentation: set a2l_aug_pitch, ... > 0")
                copies = cached_augmented_features(clips, cfg, encode, model_dir, recipe, tcfg.a2l_aug_copies)
        elif tcfg.a2l_aug_copies:
            raise FacecastError("train.a2l_aug_copies is for the Whisper A2L: the log-mel A2L augments its mel")
        val = a2l_batch(held, cfg, tcfg, np.random.default_rng(1), dict(cache), augment=False) if held else None
        summary = train_loop(
            part,
            model,
            lambda rng: a2l_batch(clips, cfg, tcfg, rng, cache, copies=copies),
            A2LObjective(tcfg),
            cfg,
            tcfg,
            model_dir,
            val,
        )
        cfg = with_motion_gain(cfg, model, clips, cache, tcfg.motion_target)
        model.cfg = cfg.a2l
        summary["motion_gain"] = cfg.a2l.motion_gain
    elif part == "l2v":
        codec = checkpoint.load_part(model_dir, "autoencoder", cfg).to(tcfg.device)
        cached = [l2v_clip(codec, clip, cfg, tcfg) for clip in tqdm(clips, desc="encode latents", unit="clip")]
        del codec
        summary = train_loop(
            part,
            model,
            lambda rng: l2v_batch(cached, cfg, tcfg, rng),
            L2VObjective(cfg, tcfg.mouth_loss_weight),
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
            "batch": tcfg.batch,
            "device": torch.cuda.get_device_name(0) if tcfg.device.startswith("cuda") else "cpu",
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


@torch.no_grad()
def a2l_predict_clip(model: torch.nn.Module, mel: np.ndarray, speaker: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Run A2L over a whole clip: mel (T, 320) normalised, speaker (256,), reference (68, 2) -> (T, 37, 2)."""
    look = model.cfg.lookahead_frames
    padded = np.concatenate([mel, np.zeros((look, mel.shape[1]), np.float32)])
    disp, _ = model(
        torch.from_numpy(padded[None]).float(),
        torch.from_numpy(speaker[None]).float(),
        torch.from_numpy(reference[None]).float(),
        model.initial_state(1),
    )
    return disp[0, look:].numpy()


def with_motion_gain(
    cfg: ModelConfig,
    model: torch.nn.Module,
    clips: list[Clip],
    cache: dict,
    target: float = 1.0,
    encode: Encode | None = None,
) -> ModelConfig:
    """Measure how much A2L damps the mouth on its *training* clips and store ``target`` x the inverse as
    ``motion_gain``.

    Pooled over clips: std of the real inner-lip gap / std of the predicted one (pose-free pixels). Held-out
    clips are not looked at, so held-out scores stay honest.
    """
    import dataclasses

    model.eval()
    model.cfg = dataclasses.replace(cfg.a2l, motion_gain=1.0)
    real_dev, pred_dev = [], []
    for clip in clips:
        mel, registered, reference = a2l_clip(clip, cfg, cache, encode)
        n = min(len(mel), len(registered))
        pred = np.repeat(reference[None], n, 0)
        pred[:, DRIVEN] += a2l_predict_clip(model, mel[:n], clip.speaker, reference)[:n]
        real_gap, pred_gap = lip_gap(registered[:n]), lip_gap(pred)
        real_dev.append(real_gap - real_gap.mean())
        pred_dev.append(pred_gap - pred_gap.mean())
    gain = target * float(np.std(np.concatenate(real_dev)) / max(np.std(np.concatenate(pred_dev)), 1e-6))
    return dataclasses.replace(cfg, a2l=dataclasses.replace(cfg.a2l, motion_gain=round(gain, 3)))

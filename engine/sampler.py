"""L2V's sampler: few-step DDIM for x0-predicting denoisers, its schedule (diffusers' DDIMScheduler, without torch)
and the loop that runs it on a backend (``sample_latents``).

The schedule is diffusers' own arithmetic written out in numpy (a linear beta schedule, "trailing" timestep
spacing, ᾱ = 1 after the last step), bit-identical to ``DDIMScheduler`` as tests check, so the runtime needs neither
torch nor diffusers. The per-step update is a handful of array ops that run on numpy arrays or torch tensors, around
any backend (torch, onnxruntime, TensorRT) without a scheduler object in the hot path; tests check it against
``DDIMScheduler.step``. Training takes diffusers' scheduler itself (``training.train.make_scheduler``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .backend import Backend, Weights, weights_keyword
from .config import L2VConfig

# diffusers' DDIMScheduler defaults, which the L2V was trained with (``training.train.make_scheduler``): linear betas.
BETA_START = 0.0001
BETA_END = 0.02

ArrayT = TypeVar("ArrayT")  # numpy array or torch tensor


def linear_betas(num_train_timesteps: int, start: float = BETA_START, end: float = BETA_END) -> np.ndarray:
    """float32 (T,): torch.linspace(start, end, T) exactly (it fills each half from its own end, fused multiply-add;
    float64 products of float32 values are exact, so one rounding to float32 reproduces it)."""
    lo, hi = np.float32(start), np.float32(end)
    step = np.float32((hi - lo) / np.float32(num_train_timesteps - 1))
    i = np.arange(num_train_timesteps)
    first = np.float64(lo) + np.float64(step) * i
    second = np.float64(hi) - np.float64(step) * (num_train_timesteps - 1 - i)
    return np.where(i < num_train_timesteps // 2, first, second).astype(np.float32)


def alphas_cumprod(num_train_timesteps: int) -> np.ndarray:
    """float32 (T,) ᾱ_t as DDIMScheduler holds them (torch's float32 cumprod accumulates in float64)."""
    alphas = np.float32(1.0) - linear_betas(num_train_timesteps)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


@dataclass(frozen=True)
class DDIMSchedule:
    timesteps: tuple[int, ...]
    alphas_cumprod: tuple[float, ...]  # ᾱ at each timestep
    alphas_cumprod_prev: tuple[float, ...]  # ᾱ at the step it goes to (1.0 after the last)

    @classmethod
    def from_config(cls, cfg: L2VConfig, steps: int) -> DDIMSchedule:
        if steps < 1:
            raise ValueError(f"DDIM needs at least one step, got {steps}")
        total = cfg.num_train_timesteps
        # "trailing" spacing starts few-step sampling at the last training timestep (pure noise), which is what the
        # denoiser sees at t = T-1 in training; "leading" would start at T/steps and mismatch.
        ts = [int(t) for t in np.round(np.arange(total, 0, -total / steps)).astype(np.int64) - 1]
        ac = alphas_cumprod(total)
        ratio = total // steps
        final = 1.0  # set_alpha_to_one: the last step lands on the prediction itself
        prev = [float(ac[t - ratio]) if t - ratio >= 0 else final for t in ts]
        return cls(tuple(ts), tuple(float(ac[t]) for t in ts), tuple(prev))


def ddim_step(x0_pred: ArrayT, sample: ArrayT, alpha: float, alpha_prev: float) -> ArrayT:
    """Deterministic (eta = 0) DDIM update from ``sample`` at ᾱ=alpha to ᾱ=alpha_prev given the predicted x0."""
    eps = (sample - alpha**0.5 * x0_pred) / (1 - alpha) ** 0.5
    return alpha_prev**0.5 * x0_pred + (1 - alpha_prev) ** 0.5 * eps


def sample_latents(
    backend: Backend,
    schedule: DDIMSchedule,
    noise: np.ndarray,
    masked: np.ndarray,
    row: int,
    conditions: list[np.ndarray],
    mel_window: np.ndarray,
    weights: Weights = None,
) -> np.ndarray:
    """The generated latents (B, C, 32, 32): every step of ``schedule`` as one ``backend.denoise`` call for the whole
    batch, from ``noise``. Rows above ``row`` stay ``masked``'s (the upper face stays clean, paper 002);
    ``conditions``: identity, previous, heatmaps, driven_px; ``weights``: an enrolment (None: the model's own)."""
    x, keyword = noise, weights_keyword(weights)
    for i, ts in enumerate(schedule.timesteps):
        x0 = backend.denoise(x, np.full(len(x), ts, np.int64), masked, *conditions, mel_window, **keyword)
        x0[:, :, :row] = masked[:, :, :row]
        last = i + 1 == len(schedule.timesteps)
        x = x0 if last else ddim_step(x0, x, schedule.alphas_cumprod[i], schedule.alphas_cumprod_prev[i])
    return x

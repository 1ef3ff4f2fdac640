"""Few-step DDIM for x0-predicting denoisers, with the schedule taken from diffusers' DDIMScheduler.

The per-step update is written out (a handful of tensor ops) so the same loop runs around any backend
(torch, onnxruntime, TensorRT) without a scheduler object in the hot path; tests check it against
``DDIMScheduler.step``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from .config import L2VConfig


def make_scheduler(cfg: L2VConfig) -> DDIMScheduler:
    # "trailing" spacing starts few-step sampling at the last training timestep (pure noise), which is what the
    # denoiser sees at t = T-1 in training; "leading" would start at T/steps and mismatch.
    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        prediction_type=cfg.prediction_type,
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=True,
    )


@dataclass(frozen=True)
class DDIMSchedule:
    timesteps: tuple[int, ...]
    alphas_cumprod: tuple[float, ...]  # ᾱ at each timestep
    alphas_cumprod_prev: tuple[float, ...]  # ᾱ at the step it goes to (1.0 after the last)

    @classmethod
    def from_config(cls, cfg: L2VConfig, steps: int) -> DDIMSchedule:
        if steps < 1:
            raise ValueError(f"DDIM needs at least one step, got {steps}")
        sched = make_scheduler(cfg)
        sched.set_timesteps(steps)
        ts = [int(t) for t in sched.timesteps]
        ac = sched.alphas_cumprod
        ratio = cfg.num_train_timesteps // steps
        prev = [float(ac[t - ratio]) if t - ratio >= 0 else float(sched.final_alpha_cumprod) for t in ts]
        return cls(tuple(ts), tuple(float(ac[t]) for t in ts), tuple(prev))


def ddim_step(x0_pred: torch.Tensor, sample: torch.Tensor, alpha: float, alpha_prev: float) -> torch.Tensor:
    """Deterministic (eta = 0) DDIM update from ``sample`` at ᾱ=alpha to ᾱ=alpha_prev given the predicted x0."""
    eps = (sample - alpha**0.5 * x0_pred) / (1 - alpha) ** 0.5
    return alpha_prev**0.5 * x0_pred + (1 - alpha_prev) ** 0.5 * eps

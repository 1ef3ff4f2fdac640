import numpy as np
import pytest
import torch

from facecast.engine.config import L2VConfig
from facecast.engine.sampler import DDIMSchedule, alphas_cumprod, ddim_step
from facecast.engine.training.train import make_scheduler


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_ddim_step_matches_diffusers(steps):
    cfg = L2VConfig()
    ours = DDIMSchedule.from_config(cfg, steps)
    theirs = make_scheduler(cfg)
    theirs.set_timesteps(steps)
    assert list(ours.timesteps) == [int(t) for t in theirs.timesteps]
    assert ours.timesteps[0] == cfg.num_train_timesteps - 1  # few-step sampling starts from pure noise
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(2, 8, 32, 32, generator=g)
    for i, t in enumerate(ours.timesteps):
        x0 = torch.randn(2, 8, 32, 32, generator=g)
        expected = theirs.step(x0, t, x).prev_sample
        got = ddim_step(x0, x, ours.alphas_cumprod[i], ours.alphas_cumprod_prev[i])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        x = expected
    # The last step lands on the prediction itself (alpha_prev = 1).
    assert ours.alphas_cumprod_prev[-1] == 1.0


def test_zero_steps_is_refused():
    with pytest.raises(ValueError, match="at least one step"):
        DDIMSchedule.from_config(L2VConfig(), 0)


def test_schedule_is_diffusers_own_bit_for_bit():
    # The runtime computes the schedule without torch; it must be the one L2V was trained with, exactly.
    cfg = L2VConfig()
    theirs = make_scheduler(cfg)
    assert np.array_equal(alphas_cumprod(cfg.num_train_timesteps), theirs.alphas_cumprod.numpy())
    for steps in (1, 2, 3, 4, 7):
        ours = DDIMSchedule.from_config(cfg, steps)
        theirs.set_timesteps(steps)
        ratio = cfg.num_train_timesteps // steps
        ac = theirs.alphas_cumprod
        prev = [float(ac[t - ratio]) if t - ratio >= 0 else float(theirs.final_alpha_cumprod) for t in ours.timesteps]
        assert ours.alphas_cumprod == tuple(float(ac[t]) for t in theirs.timesteps)
        assert ours.alphas_cumprod_prev == tuple(prev)

"""An enrolled bundle's weights as the runtime loads them (``facecast enroll`` writes them, engine/training/enroll.py).

The torch backend runs a bundle's L2V with its LoRA adapter merged in (``merged_l2v``) and its A2L at the person's
motion gain (``enrolled_a2l``). This is runtime code: it must not import the training side (enroll, train,
dataset), which imports it instead (tests/test_import_graph.py).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import torch

from .. import checkpoint
from ..config import ModelConfig
from ..errors import InputError
from .prepare import A2L_FILE, ADAPTER_FILE, enrolment_of, runs_own_a2l

ADAPTER_CONFIG_FILE = "l2v_lora.json"

# Which UNet layers get adapters: attention projections, the transformer feed-forward and the ResNet convs.
# The non-UNet parts of L2V (token encoders, the prior bottleneck) stay as trained on many people.
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
LORA_TARGETS = (*ATTENTION, "conv1", "conv2")


def lora_config(rank: int, alpha: float):  # a peft.LoraConfig
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(LORA_TARGETS), lora_dropout=0.0)


def add_adapter(l2v: torch.nn.Module, rank: int, alpha: float) -> torch.nn.Module:
    """Put fresh LoRA adapters on L2V's UNet (in place) and leave only them trainable."""
    l2v.unet.add_adapter(lora_config(rank, alpha))
    for name, p in l2v.named_parameters():
        p.requires_grad_("lora_" in name)
    return l2v


def l2v_hash(model_dir: Path) -> str:
    return checkpoint.file_hash(Path(model_dir) / "l2v.safetensors")


def merged_l2v(base: torch.nn.Module, bundle: Path, base_hash: str | None = None) -> torch.nn.Module:
    """A copy of ``base`` (an L2V) with the bundle's adapter merged into its weights: a plain L2V, as fast as the
    base. ``base`` itself is not touched (other sessions may share it)."""
    from peft import set_peft_model_state_dict
    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors.torch import load_file

    bundle = Path(bundle)
    config = json.loads((bundle / ADAPTER_CONFIG_FILE).read_text())
    if base_hash is not None and config.get("base_l2v_hash") != base_hash:
        raise InputError(
            f"{bundle} was enrolled on another model (L2V {config.get('base_l2v_hash')}, this one {base_hash}): "
            f"enrol again with this model, or pass the --model it was enrolled with."
        )
    work = add_adapter(copy.deepcopy(base).float().cpu(), config["rank"], config["alpha"])
    set_peft_model_state_dict(work.unet, load_file(str(bundle / ADAPTER_FILE)))
    for module in work.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()  # base weight += scale * B @ A
    merged = {k.replace(".base_layer", ""): v for k, v in work.state_dict().items() if "lora_" not in k}
    out = copy.deepcopy(base).float().cpu()
    out.load_state_dict(merged)
    return out.eval()


def enrolled_a2l(bundle: Path, cfg: ModelConfig, base: torch.nn.Module) -> torch.nn.Module | None:
    """The A2L an enrolled bundle runs, at the motion gain measured on the person's video: the bundle's own A2L
    (``a2l_steps`` > 0), else a copy of ``base`` (the loaded model's A2L, not touched) at the measured gain; None
    when the bundle has neither (the base runs as it is)."""
    bundle = Path(bundle)
    if not runs_own_a2l(bundle):
        return None
    if (bundle / A2L_FILE).is_file():
        a2l = checkpoint.load_part(bundle, "a2l", cfg)  # A2L_FILE is the part's own file name
    else:
        a2l = copy.deepcopy(base)
    a2l.cfg = replace(cfg.a2l, motion_gain=(enrolment_of(bundle) or {}).get("a2l_motion_gain"))
    return a2l.eval()

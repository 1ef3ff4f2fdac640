"""Model folders: ``config.json`` + one safetensors file per network. A checkpoint loads without training state.

Reading a folder's config, its files' hashes and where the bundled model lies needs no torch: the runtime path with
an exported model (onnxruntime, TensorRT) uses them too. Only building and (de)serialising the networks imports
torch, inside the functions that do it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ModelConfig
from .errors import WeightsError

if TYPE_CHECKING:
    import torch

PARTS = ("autoencoder", "a2l", "l2v")
DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "default"
# The bundled models, by the name ``--model`` also takes. "logmel" is the default's previous A2L, which hears
# log-mel instead of Whisper's encoder: weaker lips (held-out opening correlation 0.37 against 0.57) but no encoder
# to run, for a CPU too slow or too busy to run Whisper in real time (docs/benchmarks.md). Its other parts are the
# default's (the same files, stored once by git).
BUNDLED_MODELS = {"default": DEFAULT_MODEL_DIR, "logmel": Path(__file__).parent / "weights" / "logmel"}


def model_folder(name_or_path: str) -> Path:
    """``--model``'s value: a folder, or the name of a bundled model (``BUNDLED_MODELS``) where no such folder is."""
    path = Path(name_or_path)
    return BUNDLED_MODELS[name_or_path] if not path.exists() and name_or_path in BUNDLED_MODELS else path


def build(part: str, cfg: ModelConfig) -> torch.nn.Module:
    from .models.a2l import A2L
    from .models.autoencoder import LatentCodec
    from .models.l2v import L2V

    if part == "autoencoder":
        return LatentCodec(cfg.autoencoder)
    if part == "a2l":
        return A2L(cfg.a2l, cfg.audio, cfg.face, cfg.speech)
    if part == "l2v":
        return L2V(cfg.l2v, cfg.audio, cfg.face, cfg.autoencoder)
    raise ValueError(f"unknown model part {part!r}; parts are {PARTS}")


def save_part(module: torch.nn.Module, model_dir: Path, part: str) -> Path:
    from safetensors.torch import save_file

    path = Path(model_dir) / f"{part}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return path


def load_config(model_dir: Path) -> ModelConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise WeightsError(f"no config.json in model folder {model_dir}: give a folder made by `facecast train`.")
    return ModelConfig.load(path)


def load_part(model_dir: Path, part: str, cfg: ModelConfig | None = None) -> torch.nn.Module:
    from safetensors.torch import load_file

    cfg = cfg or load_config(model_dir)
    path = Path(model_dir) / f"{part}.safetensors"
    if not path.is_file():
        raise WeightsError(f"missing weights file {path}: train it with `facecast train {part}` or restore the file.")
    module = build(part, cfg)
    tensors = load_file(str(path))
    if part == "a2l" and not any(k.startswith("members.") for k in tensors):
        tensors = {f"members.0.{k}": v for k, v in tensors.items()}  # saved before A2L ensembles: one member
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        raise WeightsError(f"{path} does not match {Path(model_dir) / 'config.json'}: {str(e)[:300]}") from e
    return module.eval()


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]

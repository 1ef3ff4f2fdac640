"""Choosing a backend by name, with a clear message when its runtime is not installed."""

from __future__ import annotations

from pathlib import Path

from facecast.engine.backend import Backend
from facecast.engine.errors import DependencyError

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def load_backend(name: str, model_dir: Path, device: str = "cpu") -> Backend:
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model_dir, device=device)
    if name in ("onnxruntime", "tensorrt"):
        raise DependencyError(
            f"the {name} backend needs an exported model: run `facecast export` first (not built yet)."
        )
    raise DependencyError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")

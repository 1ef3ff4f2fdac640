"""Choosing a backend by name, with a clear message when its runtime or its files are missing.

torch runs a model folder (config.json + safetensors); onnxruntime and tensorrt run an export folder made by
``facecast export`` (manifest.json + ONNX graphs + config.json).
"""

from __future__ import annotations

from pathlib import Path

from facecast.engine.backend import Backend
from facecast.engine.errors import DependencyError, WeightsError

from ..onnx.manifest import is_export_dir, is_model_dir, load_manifest

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def load_backend(name: str, path: Path, device: str = "cpu") -> Backend:
    """``path``: a model folder for torch, an export folder for onnxruntime and tensorrt.

    ``device`` picks torch's device; for onnxruntime "cpu" keeps it on the CPU provider and anything else lets it
    use TensorRT / CUDA when onnxruntime-gpu provides them; tensorrt always runs on the GPU.
    """
    path = Path(path)
    if name == "torch":
        if is_export_dir(path) and not is_model_dir(path):
            source = load_manifest(path, verify_hashes=False).source_model_dir
            raise WeightsError(
                f"{path} is an export folder (ONNX graphs): the torch backend needs the model folder it was exported "
                f"from ({source}), or use --backend onnxruntime with this folder."
            )
        from .torch_backend import TorchBackend

        return TorchBackend(path, device=device)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"] if device == "cpu" else None)
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend, import_tensorrt

        import_tensorrt()  # the missing runtime is the first thing to fix, before the folder
        return TensorRTBackend(path)
    raise DependencyError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")

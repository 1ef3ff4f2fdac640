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
# torch's CPU threads for a model whose sessions run no L2V (the warp and its mouth prior draw the face): what is
# left per frame (A2L, the speech encoder) is small, and torch's threads, spinning against every other process,
# made `facecast generate` 5x slower on a busy machine (6.6-7.6 frames/s at load average 5.6-5.7 on 2 cores, 34-35
# with one thread; docs/benchmarks.md).
TORCH_THREADS_WITHOUT_L2V = 1


def load_backend(name: str, path: Path, device: str = "cpu", threads: int | None = None) -> Backend:
    """``path``: a model folder for torch, an export folder for onnxruntime and tensorrt.

    ``device`` picks torch's device; for onnxruntime "cpu" keeps it on the CPU provider and anything else lets it
    use TensorRT / CUDA when onnxruntime-gpu provides them; tensorrt always runs on the GPU.

    ``threads``: CPU threads for torch (process-wide) or onnxruntime's sessions. None: onnxruntime's default (the
    physical cores), and for torch on the CPU ``TORCH_THREADS_WITHOUT_L2V`` when the model's sessions run no L2V,
    else torch's own default.
    """
    path = Path(path)
    if name == "torch":
        if is_export_dir(path) and not is_model_dir(path):
            source = load_manifest(path, verify_hashes=False).source_model_dir
            raise WeightsError(
                f"{path} is an export folder (ONNX graphs): the torch backend needs the model folder it was exported "
                f"from ({source}), or use --backend onnxruntime with this folder."
            )
        return _torch_backend(path, device, threads)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        providers = ["CPUExecutionProvider"] if device == "cpu" else None
        return OnnxRuntimeBackend(path, providers=providers, threads=threads)
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend, import_tensorrt

        import_tensorrt()  # the missing runtime is the first thing to fix, before the folder
        return TensorRTBackend(path)
    raise DependencyError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def _torch_backend(path: Path, device: str, threads: int | None) -> Backend:
    import torch

    from facecast.engine.mouth_prior import shows_l2v

    from .torch_backend import TorchBackend

    backend = TorchBackend(path, device=device)
    if backend.device.type == "cpu":
        if threads is None and not shows_l2v(backend.cfg.face, backend.mouth_prior):
            threads = TORCH_THREADS_WITHOUT_L2V
        if threads is not None:
            torch.set_num_threads(threads)
    return backend

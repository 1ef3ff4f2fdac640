"""The onnxruntime backend: an export folder's graphs in ONNX Runtime, on TensorRT, CUDA or CPU (best first)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facecast.engine.errors import DependencyError

from .graph_backend import GraphBackend
from .manifest import GRAPHS
from .ort_session import import_onnxruntime, session_options
from .tensorrt_backend import default_cache_dir

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: Sequence[str] | None = None, available: Sequence[str] | None = None) -> list[str]:
    """TensorRT, CUDA, CPU in that order, keeping those installed; ``requested`` narrows (and orders) the choice."""
    if available is None:
        available = import_onnxruntime().get_available_providers()
    wanted = list(requested) if requested else list(PROVIDER_ORDER)
    unknown = [p for p in wanted if p not in available]
    if requested and unknown:
        raise DependencyError(
            f"onnxruntime providers {unknown} are not available here (available: {list(available)}); "
            "for CUDA and TensorRT install onnxruntime-gpu: pip install 'facecast[gpu]'."
        )
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # the fallback for any node another provider does not take
    return chosen


def _provider_options(provider: str, cache_dir: Path) -> dict[str, str]:
    if provider == "TensorrtExecutionProvider":
        # Building TensorRT engines takes minutes: cache engines and tactic timings across sessions.
        return {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache_dir),
        }
    return {}


class OnnxRuntimeBackend(GraphBackend):
    """``OnnxRuntimeBackend(export_dir)``: the engine.backend.Backend protocol over one ORT session per graph."""

    name = "onnxruntime"

    def __init__(
        self,
        export_dir: Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(export_dir)
        ort = import_onnxruntime()
        chosen = choose_providers(providers)
        cache = Path(cache_dir) if cache_dir else default_cache_dir().with_name("onnxruntime-tensorrt")
        if "TensorrtExecutionProvider" in chosen:
            cache.mkdir(parents=True, exist_ok=True)
        with_options = [(p, _provider_options(p, cache)) for p in chosen]
        so = session_options(threads)
        self.sessions = {
            g: ort.InferenceSession(str(self.export_dir / self.manifest.graphs[g].file), so, providers=with_options)
            for g in GRAPHS
        }
        self.providers: list[str] = self.sessions["denoise"].get_providers()  # what ORT actually enabled
        self._outputs = {g: [t.name for t in self.manifest.graphs[g].outputs] for g in GRAPHS}

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sessions[graph].run(self._outputs[graph], feeds)

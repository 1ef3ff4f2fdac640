"""The TensorRT backend: an export folder's ONNX graphs built into TensorRT engines, run on torch CUDA tensors.

Written against TensorRT 10.x's documented Python API (builder, ONNX parser, builder config with a timing cache,
``build_serialized_network``, the name-based tensor API and ``execute_async_v3``). ``tensorrt`` is imported only
when a backend is made, so the rest of facecast works without it.

Precision: an fp16 export already carries half precision inside its graphs, so it is built as a strongly typed
network (the precision the graph says, which is also the only mode TensorRT 11 keeps). An fp32 export is built as
fp32 unless ``fp16=True`` asks for TensorRT's own fp16 kernel choice (BuilderFlag.FP16, deprecated since 10.12).

Batch: a dynamic-batch export is built with one optimisation profile per graph, batch 1 .. ``max_batch`` tuned for
``opt_batch`` (``BatchProfile``); each call sets its input shapes, and ``GraphBackend.run_batched`` cuts larger
batches into calls of at most ``max_batch``. A static export is built for its one batch.

Engines take minutes to build, so they are cached in ``cache_dir`` under a key of everything that makes an engine
invalid: GPU, TensorRT version, ONNX file, precision mode and batch profile (``engine_cache_key``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facecast.engine.errors import DependencyError, WeightsError

from ..onnx.manifest import BATCH_AXES, GRAPHS, GraphSpec
from .graph_backend import GraphBackend

INSTALL_HINT = (
    "pip install 'facecast[tensorrt]' on a machine with an NVIDIA GPU (TensorRT 10.x, CUDA 12 drivers); "
    "without a GPU use --backend onnxruntime or torch."
)
WORKSPACE_BYTES = 1 << 30  # scratch memory a tactic may use; our graphs are small, 1 GiB leaves the GPU room


@dataclass(frozen=True)
class BatchProfile:
    """The batch range a dynamic-batch engine is built for: TensorRT tunes kernels for ``opt`` and runs 1..``max``."""

    opt: int = 16  # the GPU target: 16 sessions, one frame each per tick
    max: int = 64  # more sessions than this are served in several calls

    def __post_init__(self) -> None:
        if not 1 <= self.opt <= self.max:
            raise ValueError(f"a batch profile needs 1 <= opt <= max, got opt={self.opt} max={self.max}")

    def key(self) -> str:
        return f"batch1-{self.opt}-{self.max}"


def profile_shapes(
    spec: GraphSpec, batch_axes: tuple[int, ...], profile: BatchProfile
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Per input of a dynamic-batch graph: its (min, opt, max) shapes, the batch axis at 1, opt and max."""

    def at(shape: tuple[int, ...], axis: int, b: int) -> tuple[int, ...]:
        return tuple(b if i == axis else d for i, d in enumerate(shape))

    return {
        t.name: (at(t.shape, ax, 1), at(t.shape, ax, profile.opt), at(t.shape, ax, profile.max))
        for t, ax in zip(spec.inputs, batch_axes, strict=True)
    }


def import_tensorrt():  # the tensorrt module
    try:
        import tensorrt
    except ImportError as e:
        raise DependencyError(f"the tensorrt backend needs TensorRT: {INSTALL_HINT}") from e
    return tensorrt


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facecast" / "tensorrt"


def engine_cache_key(gpu_name: str, tensorrt_version: str, onnx_hash: str, precision: str) -> str:
    """Pure: the same four inputs give the same key; any change gives another (engines are not portable across any)."""
    blob = json.dumps([gpu_name, tensorrt_version, onnx_hash, precision])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def precision_mode(export_fp16: bool, fp16: bool | None) -> str:
    """'strongly-typed' (the graph's own precision: fp32, or fp16 for an fp16 export) or 'fp16-flag'."""
    if export_fp16 or not fp16:
        return "strongly-typed"
    return "fp16-flag"


def build_engine(
    trt: Any,
    onnx_path: Path,
    precision: str,
    timing_cache: Path,
    logger: Any,
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None = None,
) -> bytes:
    """ONNX file -> serialized engine, reading and updating the timing cache file. ``profile`` (from
    ``profile_shapes``) is the optimisation profile a dynamic-batch graph needs; None for a static graph."""
    builder = trt.Builder(logger)
    flags = 0
    if precision == "strongly-typed":
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)  # explicit batch is the only mode in 10.x: no flag needed
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise WeightsError(f"TensorRT cannot parse {onnx_path}: {errors}. Check `facecast export`'s op report.")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if profile is not None:
        opt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.items():
            opt_profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(opt_profile)
    if precision == "fp16-flag":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise DependencyError(
                f"TensorRT {trt.__version__} has no fp16 builder flag (removed in 11): "
                "export with `facecast export --fp16` instead, which puts half precision into the graphs."
            )
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise WeightsError(f"TensorRT could not build an engine from {onnx_path}: see the TensorRT log above.")
    _write_atomic(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # two processes building at once must not leave a torn engine or cache


class TensorRTBackend(GraphBackend):
    """``TensorRTBackend(export_dir, cache_dir)``: the engine.backend.Backend protocol over TensorRT engines."""

    name = "tensorrt"

    def __init__(
        self,
        export_dir: Path,
        cache_dir: Path | None = None,
        fp16: bool | None = None,
        profile: BatchProfile = BatchProfile(),
    ) -> None:
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise DependencyError(f"the tensorrt backend needs a CUDA GPU, and torch sees none: {INSTALL_HINT}")
        super().__init__(export_dir)
        self.torch, self.trt = torch, trt
        self.device = torch.device("cuda")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.precision = precision_mode(self.manifest.fp16, fp16)
        self.profile = profile if self.manifest.dynamic_batch else None
        self.max_batch = profile.max if self.profile else None
        runtime = trt.Runtime(self.logger)
        self.engines, self.contexts = {}, {}
        for g in GRAPHS:
            engine = runtime.deserialize_cuda_engine(self._plan(g))
            if engine is None:
                raise WeightsError(f"TensorRT could not load the cached engine for {g}: delete {self.cache_dir}.")
            self.engines[g], self.contexts[g] = engine, engine.create_execution_context()

    def _plan(self, graph: str) -> bytes:
        spec = self.manifest.graphs[graph]
        mode = self.precision if self.profile is None else f"{self.precision}/{self.profile.key()}"
        key = engine_cache_key(self.torch.cuda.get_device_name(), self.trt.__version__, spec.sha256, mode)
        path = self.cache_dir / f"{graph}-{key}.engine"
        if path.is_file():
            return path.read_bytes()
        timing = self.cache_dir / f"timing-{self.trt.__version__}.cache"
        shapes = None if self.profile is None else profile_shapes(spec, BATCH_AXES[graph][0], self.profile)
        plan = build_engine(self.trt, self.export_dir / spec.file, self.precision, timing, self.logger, shapes)
        _write_atomic(path, plan)
        return plan

    def run_torch(self, graph: str, feeds: dict[str, Any]) -> list[Any]:
        """One engine call on CUDA tensors of the exported shapes (any batch within the profile of a dynamic-batch
        engine); returns new CUDA tensors."""
        torch, trt = self.torch, self.trt
        spec, context = self.manifest.graphs[graph], self.contexts[graph]
        keep = []  # inputs made contiguous here must live until the stream has run
        for t in spec.inputs:
            x = feeds[t.name].contiguous()
            keep.append(x)
            if self.profile is not None:
                context.set_input_shape(t.name, tuple(x.shape))
            context.set_tensor_address(t.name, x.data_ptr())
        outputs = []
        for t in spec.outputs:
            dtype = torch.from_numpy(np.empty(0, trt.nptype(self.engines[graph].get_tensor_dtype(t.name)))).dtype
            # with the inputs' shapes set, the context knows every output's (a static engine: the manifest's)
            shape = tuple(context.get_tensor_shape(t.name)) if self.profile is not None else t.shape
            y = torch.empty(shape, dtype=dtype, device=self.device)
            context.set_tensor_address(t.name, y.data_ptr())
            outputs.append(y)
        stream = torch.cuda.current_stream(self.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {graph}: see the TensorRT log above.")
        return outputs

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cuda = {k: self.torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in feeds.items()}
        outputs = self.run_torch(graph, cuda)
        return [y.float().cpu().numpy() for y in outputs]  # .cpu() waits for the stream

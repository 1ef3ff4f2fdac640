"""``facecast bench models``: latency of each network and of a whole frame, every available backend side by side.

Each backend is timed through the engine's Backend interface (numpy in, numpy out), which is what the pipeline
pays. Items: one A2L step (one video frame), one UNet (denoise) call, decode of the pipeline's lower-face latent,
encode of a 256² crop, and a frame = ``steps`` UNet calls + one decode. Times are per call for the whole batch.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from facecast.engine.backend import Backend
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR, load_config
from facecast.engine.errors import DependencyError
from facecast.engine.system import cpu_name
from facecast.export.backends import BACKENDS
from facecast.export.onnx.manifest import is_export_dir, load_manifest

Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    backends: tuple[str, ...] | None = None  # None: every backend that can run here
    steps: tuple[int, ...] = (1, 2, 4)  # DDIM steps per frame
    batches: tuple[int, ...] = (1,)  # each batch > 1 needs its own static-shape export, made into a temp folder
    repeats: int = 20
    warmup: int = 3
    seed: int = 0
    threads: int | None = None  # CPU threads for torch and ORT alike; None: each library's default (physical cores)


@dataclass(frozen=True)
class Row:
    backend: str
    batch: int
    item: str
    median_ms: float
    p95_ms: float
    runs: int
    vs_torch: float | None = None  # torch eager median / this median: above 1 is faster than torch


def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` can run on this machine, else why not (with the install hint)."""
    if name == "torch":
        return None
    if name == "onnxruntime":
        try:
            from facecast.export.backends.ort_session import import_onnxruntime

            import_onnxruntime()
        except DependencyError as e:
            return str(e)
        return None
    if name == "tensorrt":
        from facecast.export.backends.tensorrt_backend import INSTALL_HINT, import_tensorrt

        try:
            import_tensorrt()
        except DependencyError as e:
            return str(e)
        import torch

        return None if torch.cuda.is_available() else f"no CUDA GPU: {INSTALL_HINT}"
    return f"unknown backend {name!r}: choose from {', '.join(BACKENDS)}"


def print_report(report: dict[str, Any], json_path: Path | None) -> None:
    """A measurement's JSON on stdout, and in ``json_path`` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if json_path is not None:
        Path(json_path).write_text(text + "\n")


def time_calls(fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float, int]:
    """Median and p95 ms of ``repeats`` calls after ``warmup`` untimed ones, and the count."""
    for _ in range(warmup):  # first calls allocate and (TensorRT, CUDA) pick kernels
        fn()
    ms = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ms)), float(np.percentile(ms, 95)), repeats


def _workload(
    backend: Backend, cfg: Any, batch: int, steps: tuple[int, ...], seed: int
) -> dict[str, Callable[[], object]]:
    from facecast.export.onnx.export import example_inputs

    rng = np.random.default_rng(seed)
    mel, speaker, reference, state = example_inputs(cfg, "a2l_step", batch, rng)
    unet = example_inputs(cfg, "denoise", batch, rng)
    (latent,) = example_inputs(cfg, "decode", batch, rng)
    (images,) = example_inputs(cfg, "encode", batch, rng)

    def frame(n: int) -> Callable[[], object]:
        def run() -> object:
            for _ in range(n):
                backend.denoise(*unet)
            return backend.decode(latent)

        return run

    items: dict[str, Callable[[], object]] = {
        "a2l step": lambda: backend.a2l(mel, speaker, reference, state),
        "unet": lambda: backend.denoise(*unet),
        "decode": lambda: backend.decode(latent),
        "encode": lambda: backend.encode(images),
    }
    items.update({f"frame {n} step{'s' if n > 1 else ''}": frame(n) for n in steps})
    return items


def _make_backend(name: str, model_dir: Path, export_dir: Path | None, threads: int | None) -> Backend:
    if name == "torch":
        from facecast.export.backends.torch_backend import TorchBackend

        return TorchBackend(model_dir)
    if name == "onnxruntime":
        from facecast.export.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(export_dir, threads=threads)  # every available provider, best first
    from facecast.export.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(export_dir)


def _export_for(batch: int, model_dir: Path, export_dir: Path | None, tmp: Path, threads: int | None, log: Log) -> Path:
    """An export folder that runs this batch in one call: ``export_dir`` when it does (a dynamic-batch export, or a
    static one of this batch), else a fresh one under ``tmp``."""
    if export_dir is not None and is_export_dir(export_dir):
        manifest = load_manifest(export_dir)
        have = manifest.batch
        if manifest.dynamic_batch or have == batch:
            return export_dir
        log(f"{export_dir} is exported for batch {have}; exporting batch {batch} into a temporary folder")
    else:
        log(f"no export folder{f' at {export_dir}' if export_dir else ''}: exporting batch {batch} into a temp folder")
    from facecast.export.onnx.export import ExportOptions, export_model

    out = tmp / f"batch{batch}"
    export_model(model_dir, out, batch=batch, options=ExportOptions(threads=threads), log=lambda s: log(f"  {s}"))
    return out


def bench_models(
    model_dir: Path | None = None,
    export_dir: Path | None = None,
    options: BenchOptions = BenchOptions(),
    log: Log = print,
) -> dict[str, Any]:
    """``facecast bench models``: every backend's latency per network and per frame. ``model_dir`` None: the model
    the export came from (its manifest remembers it), else the bundled one."""
    import torch

    if model_dir is None:
        source = export_dir and is_export_dir(export_dir) and Path(load_manifest(export_dir).source_model_dir)
        model_dir = source if source and source.is_dir() else DEFAULT_MODEL_DIR

    requested = options.backends or BACKENDS
    skipped = {b: r for b in requested if (r := unavailable_reason(b)) is not None}
    if options.backends and skipped:  # asked for by name: not running it would hide the problem
        raise DependencyError("; ".join(f"{b}: {r}" for b, r in skipped.items()))
    names = [b for b in requested if b not in skipped]
    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    torch_threads = torch.get_num_threads()
    if options.threads:
        # On a CPU shared with other work, fewer threads than cores can be much faster: OpenMP's parallel regions
        # wait for their slowest thread, and a thread whose core is taken makes every region wait.
        torch.set_num_threads(options.threads)
    try:
        rows, exports, providers = _run(names, model_dir, cfg, export_dir, options, log)
    finally:
        threads_used = torch.get_num_threads()
        torch.set_num_threads(torch_threads)
    torch_ms = {(r.batch, r.item): r.median_ms for r in rows if r.backend == "torch"}
    rows = [
        Row(**{**asdict(r), "vs_torch": round(torch_ms[r.batch, r.item] / r.median_ms, 2)})
        if r.backend != "torch" and (r.batch, r.item) in torch_ms and r.median_ms > 0
        else r
        for r in rows
    ]
    return {
        "model": str(model_dir),
        "exports": exports,
        "machine": machine_info(),
        "threads": {"torch": threads_used, "onnxruntime": options.threads or _ort_threads()},
        "onnxruntime_providers": providers,
        "options": asdict(options),
        "rows": [asdict(r) for r in rows],
        "skipped": skipped,
    }


def _run(
    names: list[str], model_dir: Path, cfg: Any, export_dir: Path | None, options: BenchOptions, log: Log
) -> tuple[list[Row], dict[int, str], list[str]]:
    rows: list[Row] = []
    exports: dict[int, str] = {}
    providers: list[str] = []
    with tempfile.TemporaryDirectory(prefix="facecast-bench-") as tmp:
        for batch in options.batches:
            folder = None
            if any(n != "torch" for n in names):
                given = Path(export_dir) if export_dir else None
                folder = _export_for(batch, model_dir, given, Path(tmp), options.threads, log)
                exports[batch] = str(folder) if not str(folder).startswith(tmp) else "temporary export"
            for name in names:
                backend = _make_backend(name, model_dir, folder, options.threads)
                providers = getattr(backend, "providers", providers)
                for item, fn in _workload(backend, cfg, batch, options.steps, options.seed).items():
                    median, p95, runs = time_calls(fn, options.repeats, options.warmup)
                    rows.append(Row(name, batch, item, round(median, 3), round(p95, 3), runs))
                    log(f"{name:<12} batch {batch} {item:<14} median {median:8.2f} ms  p95 {p95:8.2f} ms")
    return rows, exports, providers


def _ort_threads() -> int:
    from facecast.engine.system import physical_cores

    return physical_cores()


def machine_info() -> dict[str, Any]:
    """CPU, GPU, Python and torch of this machine, for a bench report."""
    import torch

    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def render_table(report: dict[str, Any]) -> Table:
    """One row per (batch, item), one column pair per backend: median / p95 ms and the speedup over torch eager."""
    rows = report["rows"]
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    table = Table(title="facecast bench models (ms per call: median / p95; x torch: torch eager median / median)")
    table.add_column("batch", justify="right")
    table.add_column("item")
    for b in backends:
        table.add_column(f"{b} ms", justify="right")
        if b != "torch":
            table.add_column("x torch", justify="right")
    by_key = {(r["backend"], r["batch"], r["item"]): r for r in rows}
    for batch, item in dict.fromkeys((r["batch"], r["item"]) for r in rows):
        cells = [str(batch), item]
        for b in backends:
            r = by_key.get((b, batch, item))
            cells.append(f"{r['median_ms']:.2f} / {r['p95_ms']:.2f}" if r else "")
            if b != "torch":
                cells.append(f"{r['vs_torch']:.2f}" if r and r["vs_torch"] is not None else "")
        table.add_row(*cells)
    return table

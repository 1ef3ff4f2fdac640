"""The ``facecast export`` and ``facecast bench models`` sub-commands, for streaming/cli.py to register.

    sub = parser.add_subparsers(...)
    bench = add_commands(sub)  # adds `export` and `bench` (with `bench models`); returns bench's sub-parsers
    bench.add_parser("stream", ...)  # further `bench` sub-commands go here

Each parser sets ``func``; errors are FacecastError subclasses, which the CLI's main prints and exits on.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from facecast.engine.checkpoint import DEFAULT_MODEL_DIR

from .backends import BACKENDS

console = Console(stderr=True)  # progress to stderr, so stdout carries only the result


def _log(text: str) -> None:
    # Not rich markup: install hints like `pip install 'facecast[tensorrt]'` would lose their brackets.
    console.print(text, markup=False, highlight=False)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4, got {text!r}")
    return values


def _backends(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {unknown or text!r}: choose from {', '.join(BACKENDS)}")
    return names


# ------------------------------------------------------------------------------------------ export


def cmd_export(args: argparse.Namespace) -> None:
    from .onnx_export import ExportOptions, export_model

    manifest = export_model(
        args.model,
        args.out,
        fp16=args.fp16,
        batch=args.batch,
        options=ExportOptions(opset=args.opset, slim=not args.no_slim),
        log=_log,
        dynamic_batch=not args.static_batch,
    )
    table = Table("graph", "inputs -> outputs", "nodes", "max abs / rel. error", "onnxslim", "TensorRT ops")
    for name, g in manifest.graphs.items():
        slim = g.checks["onnxslim"]
        unsupported = g.checks["tensorrt"]["unsupported"]
        table.add_row(
            name,
            ", ".join(f"{t.name} {'x'.join(map(str, t.shape))}" for t in g.inputs)
            + " -> "
            + ", ".join(f"{t.name} {'x'.join(map(str, t.shape))}" for t in g.outputs),
            str(g.checks["nodes"]),
            f"{g.checks['parity']['max_abs']:.1e} / {g.checks['parity']['max_rel']:.1e}",
            "skipped"
            if "skipped" in slim
            else f"{slim['nodes_before']} -> {slim['nodes_after']}: {'kept' if slim['kept'] else 'not kept'}",
            "ok" if not unsupported else "unsupported: " + ", ".join(unsupported),
        )
    Console().print(table)
    _log(f"export written to {args.out} (manifest.json, config.json, {len(manifest.graphs)} graphs)")


def add_export(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    sp = subparsers.add_parser("export", help="model folder -> ONNX graphs for the onnxruntime / tensorrt backends")
    sp.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (default: the bundled model)")
    sp.add_argument("--out", type=Path, required=True, help="export folder to write")
    sp.add_argument("--fp16", action="store_true", help="half-precision graphs (for GPUs; slow on ORT's CPU provider)")
    sp.add_argument("--batch", type=int, default=1, help="batch the graphs are traced and checked at (default 1)")
    sp.add_argument(
        "--static-batch", action="store_true", help="graphs take only --batch (default: any batch, for many sessions)"
    )
    sp.add_argument("--opset", type=int, default=17, help="ONNX opset (TensorRT 10 reads 9..24)")
    sp.add_argument("--no-slim", action="store_true", help="skip onnxslim")
    sp.set_defaults(func=cmd_export)
    return sp


# ------------------------------------------------------------------------------------------ bench models


def cmd_bench_models(args: argparse.Namespace) -> None:
    from .bench_models import BenchOptions, bench_models, render_table
    from .manifest import is_export_dir, load_manifest

    model = args.model
    if model is None:  # the export remembers which model it came from; else the bundled one
        source = args.export and is_export_dir(args.export) and Path(load_manifest(args.export).source_model_dir)
        model = source if source and source.is_dir() else DEFAULT_MODEL_DIR
    options = BenchOptions(
        backends=args.backend,
        steps=args.steps,
        batches=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
    )
    report = bench_models(model, args.export, options, log=_log)
    report["command"] = shlex.join(["facecast", *sys.argv[1:]]) if "bench" in sys.argv else None
    Console().print(render_table(report))
    for name, why in report["skipped"].items():
        _log(f"skipped {name}: {why}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        _log(f"JSON report: {args.json}")


def add_bench(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``bench`` command; returns its sub-parsers so that more benchmarks can be added beside ``models``."""
    bench = subparsers.add_parser("bench", help="benchmarks")
    return bench.add_subparsers(dest="bench_command", required=True, metavar="{models,...}")


def add_bench_models(bench_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    sp = bench_subparsers.add_parser("models", help="latency per network and per frame, every backend side by side")
    sp.add_argument(
        "--model", type=Path, default=None, help="model folder (default: the export's source, else bundled)"
    )
    sp.add_argument("--export", type=Path, default=None, help="export folder (default: export into a temp folder)")
    sp.add_argument(
        "--backend",
        type=_backends,
        default=None,
        help=f"comma-separated, from {','.join(BACKENDS)} (default: every one that can run here)",
    )
    sp.add_argument("--steps", type=_ints, default=(1, 2, 4), help="DDIM steps per frame (default 1,2,4)")
    sp.add_argument(
        "--batch", type=_ints, default=(1,), help="batch sizes (default 1; each other batch is exported first)"
    )
    sp.add_argument("--repeats", type=int, default=20, help="timed calls per item (default 20)")
    sp.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    sp.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch and onnxruntime (default: physical cores; fewer when other work shares the CPU)",
    )
    sp.add_argument("--json", type=Path, default=None, help="also write the full report here")
    sp.set_defaults(func=cmd_bench_models)
    return sp


def add_commands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Register ``export`` and ``bench models``; returns the ``bench`` sub-parsers for further bench commands."""
    add_export(subparsers)
    bench = add_bench(subparsers)
    add_bench_models(bench)
    return bench

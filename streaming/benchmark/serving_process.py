"""A fresh serving process per backend, timed from launch to ready, with its memory and the heavy modules it loaded.

``facecast bench stream`` starts one per backend before it measures anything in its own process (which has torch
loaded as soon as it exports or runs the torch backend):

    python -m facecast.streaming.benchmark.serving_process --backend onnxruntime --model EXPORT_DIR --avatar IMAGE

does what ``facecast serve`` does before it listens (load the backend, prepare the avatar, build the engine and the
web app, warm every model up; dlib's face models from launch where the avatar is a portrait:
``serve.load_face_models_for``) and prints one JSON line about itself. The parent times it from launch, so the cold
start includes the interpreter and every import.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .memory import peak_rss_mb, rss_mb

HEAVY_MODULES = ("torch", "diffusers")  # what a deployed onnxruntime server should not pay for
READY_TIMEOUT_S = 600.0


def serve_ready(backend_name: str, model: Path, avatar_path: Path, device: str = "cpu") -> dict[str, Any]:
    """In this process: everything ``facecast serve`` does before it listens; then what it cost."""
    from facecast.engine.avatar.prepare import load_avatar
    from facecast.export.backends import load_backend

    from ..live.engine import LiveEngine
    from ..web.serve import load_face_models_for
    from ..web.server import create_app

    t0 = time.perf_counter()
    load_face_models_for(avatar_path)
    backend = load_backend(backend_name, model, device=device)
    avatar = load_avatar(avatar_path, backend)
    engine = LiveEngine(backend, avatar)
    create_app(engine)
    asyncio.run(engine.warm_up())
    return {
        "in_process_s": round(time.perf_counter() - t0, 3),
        "rss_mb": round(rss_mb(), 1),
        "rss_peak_mb": round(peak_rss_mb(), 1),
        "imported": {m: m in sys.modules for m in HEAVY_MODULES},
    }


def measure(backend_name: str, model: Path, avatar_path: Path, device: str = "cpu") -> dict[str, Any]:
    """Launch a fresh serving process and report: ``ready_s`` (launch -> ready to serve, imports included),
    ``in_process_s``, ``rss_mb`` / ``rss_peak_mb`` (MiB when ready), ``imported`` (torch, diffusers: loaded or not)
    and ``error`` (null; else why it failed, with the others null)."""
    failed = dict.fromkeys(("ready_s", "in_process_s", "rss_mb", "rss_peak_mb", "imported"))
    cmd = [sys.executable, "-m", "facecast.streaming.benchmark.serving_process", "--backend", backend_name]
    cmd += ["--model", str(model), "--avatar", str(avatar_path), "--device", device]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=READY_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"backend": backend_name, **failed, "error": f"not ready after {READY_TIMEOUT_S:g} s"}
    wall = time.perf_counter() - t
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"backend": backend_name, **failed, "error": f"exit {done.returncode}: {tail}"}
    return {"backend": backend_name, "ready_s": round(wall, 3), **json.loads(lines[-1]), "error": None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m facecast.streaming.benchmark.serving_process", description=__doc__)
    p.add_argument("--backend", required=True)
    p.add_argument("--model", type=Path, required=True, help="model folder (torch) or export folder")
    p.add_argument("--avatar", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    print(json.dumps(serve_ready(args.backend, args.model, args.avatar, args.device)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

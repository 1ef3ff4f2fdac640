"""The live engine in real time on this machine: what a viewer of ``facecast serve`` would get.

    python -m facecast.streaming.bench --model DIR [--avatar IMAGE] [--audio FILE] [--seconds 30] [--steps 1]
                                       [--backend torch] [--viewers N]

A speech file plays in a loop as the talker; after ``--seconds`` one JSON line reports the output fps (always the
clock's 25 unless the event loop stalls), how many new generated pictures per second viewers saw while the avatar
was speaking, the render time, the drop-policy counters and the latency. ``--viewers N`` also VP8-encodes every
output frame N times in aiortc's encoder, which is what N WebRTC viewers cost the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import av
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder

from facecast.engine.checkpoint import DEFAULT_MODEL_DIR

from .commands import ASSETS, _load_avatar
from .config import LiveConfig
from .live import LiveEngine, OutputFrame
from .sources import FileSource
from .webrtc import VIDEO_TIME_BASE


async def _viewer(queue: asyncio.Queue[OutputFrame | None], encode_ms: list[float]) -> None:
    """One viewer's encoder, fed like aiortc's sender: the next frame, encoded on the default executor."""
    encoder = Vp8Encoder()
    loop = asyncio.get_running_loop()
    while (out := await queue.get()) is not None:
        frame = av.VideoFrame.from_ndarray(out.image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = out.video_pts, VIDEO_TIME_BASE
        t = time.perf_counter()
        await loop.run_in_executor(None, encoder.encode, frame)
        encode_ms.append(1000 * (time.perf_counter() - t))


async def measure(engine: LiveEngine, audio: Path, seconds: float, viewers: int) -> dict:
    await engine.warm_up()
    watch = engine.subscribe()
    encode_ms: list[float] = []
    encoders = [asyncio.create_task(_viewer(engine.subscribe(), encode_ms)) for _ in range(viewers)]
    await engine.start()
    talker = asyncio.create_task(FileSource(engine, audio, loop=True).run())
    speaking = fresh = 0
    stages: dict[str, list[float]] = {}
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        out = await watch.get()
        if out is None:
            break
        if engine.gate.segment_of(out.index) is not None:
            speaking += 1
            if out.fresh:
                fresh += 1
                for k, v in out.generated.timings_ms.items():
                    stages.setdefault(k, []).append(v)
    talker.cancel()
    await asyncio.gather(talker, return_exceptions=True)
    await engine.stop()
    await asyncio.gather(*encoders, return_exceptions=True)
    s = engine.stats()
    return {
        "seconds": seconds,
        "steps": engine.inference.steps,
        "viewers": viewers,
        "fps": s["fps"],
        "generated_fps_while_speaking": round(25 * fresh / speaking, 2) if speaking else 0.0,
        "latency_ms": s["latency_ms"],
        "processing_frames": engine.config.processing_frames,
        "max_late_frames": engine.config.max_late_frames,
        "render_ms": s["render_ms"],
        "stage_ms": {k: round(float(np.mean(v)), 1) for k, v in stages.items()},
        "vp8_encode_ms": round(float(np.mean(encode_ms)), 1) if encode_ms else None,
        **{k: s[k] for k in ("frames", "rendered", "skipped", "dropped", "late", "repeated", "max_backlog")},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m facecast.streaming.bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--backend", default="torch")
    p.add_argument("--avatar", type=Path, default=ASSETS / "astronaut.jpg")
    p.add_argument("--audio", type=Path, default=ASSETS / "speech.wav")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--steps", type=int, default=LiveConfig.steps)
    p.add_argument("--viewers", type=int, default=0)
    p.add_argument("--processing-frames", type=int, default=LiveConfig.processing_frames)
    p.add_argument("--max-late-frames", type=int, default=LiveConfig.max_late_frames)
    args = p.parse_args(argv)

    from facecast.export.backends import load_backend

    backend = load_backend(args.backend, args.model)
    avatar = _load_avatar(args.avatar, backend, backend.cfg, args.model)
    live = LiveConfig(steps=args.steps, processing_frames=args.processing_frames, max_late_frames=args.max_late_frames)
    engine = LiveEngine(backend, backend.cfg, avatar, live)
    report = asyncio.run(measure(engine, args.audio, args.seconds, args.viewers))
    print(json.dumps({"model": str(args.model), "backend": args.backend, **report}))


if __name__ == "__main__":
    main()

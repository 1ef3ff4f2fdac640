"""Model-thread milliseconds per 40 ms tick for 1 and 2 sessions driven together as the shared model worker drives
them (``engine.batching.run_calls``), with the speech encoder's onnxruntime session on 1 or 2 threads
(``GraphBackend.speech_threads``). No event loop, no video encoding: the model thread's own share of a tick.

    python -m facecast.streaming.benchmark.session_tick_cost --export exports/default [--seconds 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from facecast.engine.avatar.prepare import load_avatar
from facecast.engine.batching import run_calls
from facecast.engine.bundled import DEFAULT_AVATAR, DEFAULT_SPEECH
from facecast.engine.config import SAMPLE_RATE, SAMPLES_PER_FRAME, InferenceConfig
from facecast.engine.media import load_audio
from facecast.engine.pipeline import LipSyncSession
from facecast.engine.system import cpu_name
from facecast.export.backends import load_backend
from facecast.streaming.benchmark.bench_models import print_report

WARM_TICKS = 10  # first ticks allocate: not counted


def tick_costs(export: Path, seconds: float) -> dict:
    audio = load_audio(DEFAULT_SPEECH, SAMPLE_RATE)
    audio = np.tile(audio, int(np.ceil(seconds * SAMPLE_RATE / len(audio))))[: int(seconds * SAMPLE_RATE)]
    report: dict = {"cpu": cpu_name(), "export": str(export), "ms_per_tick": {}}
    for threads in (1, 2):
        backend = load_backend("onnxruntime", export)
        backend.speech_threads = threads
        avatar = load_avatar(DEFAULT_AVATAR, backend)
        for sessions in (1, 2):
            speaker = np.zeros(256, np.float32)
            live = [
                LipSyncSession(backend, backend.cfg, avatar, speaker, InferenceConfig(steps=1)) for _ in range(sessions)
            ]
            ticks = []
            for i in range(0, len(audio), SAMPLES_PER_FRAME):
                t = time.perf_counter()
                run_calls(backend, [s.push_audio_steps(audio[i : i + SAMPLES_PER_FRAME]) for s in live])
                ticks.append((time.perf_counter() - t) * 1e3)
            ms = np.array(ticks[WARM_TICKS:])
            report["ms_per_tick"][f"speech_threads={threads} sessions={sessions}"] = {
                "mean": round(float(ms.mean()), 1),
                "p95": round(float(np.percentile(ms, 95)), 1),
                "max": round(float(ms.max()), 1),
            }
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, required=True, help="an export folder of a model whose A2L hears Whisper")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    print_report(tick_costs(a.export, a.seconds), a.json)


if __name__ == "__main__":
    main()

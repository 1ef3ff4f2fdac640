"""What A2L's audio features cost inside a live session: the session's own per-frame ``features`` and ``a2l``
stage times (engine/pipeline.py), for model folders side by side, fed the same speech in 40 ms chunks.

    OMP_NUM_THREADS=1 python -m facecast.streaming.benchmark.whisper_session_cost runs/models/logmel \
        runs/models/w50k1 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from facecast.engine.avatar.prepare import prepare_avatar
from facecast.engine.bundled import DEFAULT_AVATAR, DEFAULT_SPEECH
from facecast.engine.media import load_audio
from facecast.engine.pipeline import LipSyncSession
from facecast.engine.system import cpu_name
from facecast.export.backends.torch_backend import TorchBackend


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", type=Path, nargs="+")
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    speech = load_audio(DEFAULT_SPEECH)
    audio = np.tile(speech, int(np.ceil(a.seconds * 16000 / len(speech))))[: int(a.seconds * 16000)]
    out = {"cpu": cpu_name(), "load_average": os.getloadavg()}
    for model in a.models:
        backend = TorchBackend(model)
        avatar = prepare_avatar(DEFAULT_AVATAR, backend.encode, backend.cfg)
        session = LipSyncSession(backend, backend.cfg, avatar, np.zeros(256, np.float32), landmarks="static")
        # the session renders every frame too; only its features and a2l stage times are read here
        stages = {"features": [], "a2l": []}
        for i in range(0, len(audio), 640):
            for f in session.push_audio(audio[i : i + 640]):
                for k in stages:
                    stages[k].append(f.timings_ms.get(k, 0.0))
        out[str(model)] = {
            "audio_features": backend.cfg.a2l.audio_features,
            "speech": backend.cfg.speech.__dict__ if backend.cfg.a2l.audio_features == "whisper" else None,
            "frames": len(stages["features"]),
            **{f"{k}_ms_per_frame_median": round(float(np.median(v)), 2) for k, v in stages.items()},
            **{f"{k}_ms_per_frame_p95": round(float(np.percentile(v, 95)), 2) for k, v in stages.items()},
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

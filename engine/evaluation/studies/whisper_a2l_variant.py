"""Make a model folder whose A2L hears Whisper features (issue 19), ready for ``facecast train a2l``.

The folder gets the base model's autoencoder, L2V and mouth prior (so ``facecast eval`` and ``eval-landmarks`` run
on it as on the base model), its config with ``a2l.audio_features = "whisper"`` and the given ``speech`` settings,
and the speech encoder converted from the CTranslate2 ``model.bin`` (as ``whisper_encoder convert`` does, beside
this study). Then, per variant:

    python -m facecast.engine.evaluation.studies.whisper_a2l_variant runs/models/w1 --model-bin MODEL_BIN \
        --window-frames 25 --every 1
    OMP_NUM_THREADS=1 facecast train a2l --data runs/data --out runs/models/w1 --config configs/default.json
    OMP_NUM_THREADS=1 facecast eval-landmarks --data runs/data --model runs/models/w1 --json runs/models/w1/eval.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from facecast.engine.checkpoint import DEFAULT_MODEL_DIR, load_config
from facecast.engine.mouth_prior import MOUTH_PRIOR_FILE
from facecast.engine.whisper import convert_ctranslate2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--model-bin", type=Path, required=True, help="CTranslate2 model.bin of Whisper tiny.en")
    p.add_argument("--base", type=Path, default=DEFAULT_MODEL_DIR, help="autoencoder, L2V and config come from here")
    p.add_argument("--window-frames", type=int, default=None)
    p.add_argument("--every", type=int, default=None, help="SpeechEncoderConfig.every_frames")
    p.add_argument("--blocks", type=int, default=None)
    p.add_argument("--pad", type=int, default=None, help="SpeechEncoderConfig.pad_frames")
    p.add_argument("--delay", type=int, default=None, help="SpeechEncoderConfig.delay_frames")
    p.add_argument("--lookahead", type=int, default=None, help="A2LConfig.lookahead_frames")
    p.add_argument("--features", default="whisper", choices=["whisper", "logmel"])
    a = p.parse_args()
    cfg = load_config(a.base)
    given = {"window_frames": a.window_frames, "every_frames": a.every, "blocks": a.blocks, "pad_frames": a.pad}
    given["delay_frames"] = a.delay
    speech = dataclasses.replace(cfg.speech, **{k: v for k, v in given.items() if v is not None})
    a2l = dataclasses.replace(cfg.a2l, audio_features=a.features, motion_gain=1.0)
    if a.lookahead is not None:
        a2l = dataclasses.replace(a2l, lookahead_frames=a.lookahead)
    cfg = dataclasses.replace(cfg, a2l=a2l, speech=speech)
    a.out.mkdir(parents=True, exist_ok=True)
    for part in ("autoencoder", "l2v"):
        shutil.copyfile(a.base / f"{part}.safetensors", a.out / f"{part}.safetensors")
    if (a.base / MOUTH_PRIOR_FILE).is_file():  # so `facecast eval` renders the mouth as the base model does
        shutil.copyfile(a.base / MOUTH_PRIOR_FILE, a.out / MOUTH_PRIOR_FILE)
    cfg.save(a.out / "config.json")
    if a.features == "whisper":
        convert_ctranslate2(a.model_bin, a.out, speech)
    print(json.dumps({"model": str(a.out), "a2l": dataclasses.asdict(a2l), "speech": dataclasses.asdict(speech)}))


if __name__ == "__main__":
    main()

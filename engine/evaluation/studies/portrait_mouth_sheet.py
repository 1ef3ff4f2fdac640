"""Mouths of one portrait driven by one speech clip, for several models side by side, 3x enlarged.

    python -m facecast.engine.evaluation.studies.portrait_mouth_sheet --out docs/quality/astronaut_mouths.png \
        --model "before=runs/old_nowarp" --model "now=engine/weights/default"

Defaults: the bundled astronaut and speech. Each --model is LABEL=MODEL_DIR (its config.json decides the
composite, e.g. face.warp_prior). Every tile is a generated frame's mouth box, cut at the same place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facecast.engine import media
from facecast.engine.avatar.prepare import prepare_avatar
from facecast.engine.bundled import DEFAULT_AVATAR, DEFAULT_SPEECH
from facecast.engine.config import InferenceConfig
from facecast.engine.evaluation.evaluate import generated_crops, mouth_crops, mouth_sheet
from facecast.engine.pipeline import LipSyncSession
from facecast.engine.speaker import speaker_embedding
from facecast.export.backends import load_backend


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--avatar", type=Path, default=DEFAULT_AVATAR)
    p.add_argument("--audio", type=Path, default=DEFAULT_SPEECH)
    p.add_argument("--model", action="append", required=True, help="LABEL=MODEL_DIR, repeatable")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--frames", type=int, default=8, help="tiles per row")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = []
    for spec in args.model:
        label, model_dir = spec.split("=", 1)
        backend = load_backend("torch", Path(model_dir))
        avatar = prepare_avatar(args.avatar, backend.encode, backend.cfg)
        audio = media.load_audio(args.audio, backend.cfg.audio.sample_rate)
        n = len(audio) // backend.cfg.audio.samples_per_frame
        session = LipSyncSession(
            backend, backend.cfg, avatar, speaker_embedding(audio), InferenceConfig(steps=args.steps)
        )
        crops = generated_crops(session, audio, n)
        rows.append((label, mouth_crops(crops, avatar.landmarks[0])))
        print(f"{label}: {n} frames from {model_dir}")
    print(mouth_sheet(rows, args.out, frames=args.frames))


if __name__ == "__main__":
    main()

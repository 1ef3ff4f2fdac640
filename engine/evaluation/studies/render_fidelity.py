"""Does the picture open as far as A2L asks? One avatar (any mouth, open or shut) with one speech clip.

    python -m facecast.engine.evaluation.studies.render_fidelity [--avatar engine/assets/astronaut.jpg]
        [--audio engine/assets/speech.wav] [--model engine/weights/default] [--steps 1] [--max-frames 150]
        [--sheet fidelity.png]

The portrait protocol's measurement (``facecast eval --protocol portrait``, which scores only closed-mouth stills)
on any one avatar: per frame, the driving landmarks' inner-lip opening against the one dlib finds on the rendered
crop (slope, correlation), printed as JSON; ``--sheet`` writes the 8 frames A2L opens widest, 3x.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from facecast.engine import media
from facecast.engine.avatar import face
from facecast.engine.avatar.prepare import prepare_avatar
from facecast.engine.bundled import DEFAULT_AVATAR, DEFAULT_SPEECH
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.evaluation.evaluate import mouth_crops, mouth_sheet
from facecast.engine.evaluation.portrait import PortraitConfig, score_portrait
from facecast.export.backends import load_backend


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--avatar", type=Path, default=DEFAULT_AVATAR)
    p.add_argument("--audio", type=Path, default=DEFAULT_SPEECH)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=150)
    p.add_argument("--sheet", type=Path, default=None)
    args = p.parse_args()
    backend = load_backend("torch", args.model)
    cfg, pcfg = backend.cfg, PortraitConfig()
    face_backend = face.make_backend("dlib", cfg=cfg.face)
    avatar = prepare_avatar(args.avatar, backend.encode, cfg, face_backend, max_frames=1)
    audio = media.load_audio(args.audio, cfg.audio.sample_rate)[: args.max_frames * cfg.audio.samples_per_frame]
    scores, crops, driving = score_portrait(avatar, audio, float("nan"), backend, args.steps, face_backend, pcfg)
    keys = ("still_opening", "driving_opening_std", "opening_std", "render_slope", "render_corr", "detail_ratio")
    print(json.dumps({"avatar": args.avatar.name, "model": str(args.model), **{k: scores[k] for k in keys}}, indent=1))
    if args.sheet is not None:
        widest = np.sort(np.argsort(-driving, kind="stable")[: pcfg.sheet_frames])
        print(
            mouth_sheet(
                [(args.avatar.stem, mouth_crops(crops[widest], avatar.landmarks[0]))],
                args.sheet,
                frames=pcfg.sheet_frames,
            )
        )


if __name__ == "__main__":
    main()

"""Which frame the warp takes its lower face from: a sweep of the settings of ``warp.pick_sources``.

    python -m facecast.engine.evaluation.studies.warp_source_sweep --clips runs/heldout [--max-frames 100] [--json F]

Each clip becomes its own avatar (as in ``facecast eval``'s reconstruct protocol) and every frame is composited
with its true landmarks and the autoencoder's own copy of its latent as the painted interior, which is the same
under every setting: only the warp's source differs. Reported per clip and setting: the mean PSNR of the 96² mouth
box against the real frame (capped at 50 dB: with one source, the source frame itself is an exact copy) and the
temporal MSE of the mouth box ×1e4 (the real clip's own is given too: real mouths move). A few seconds per setting
once the clips are prepared (face detection, about a minute a clip). See docs/quality.md, "The warp's source
frame".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from facecast.engine.avatar import face
from facecast.engine.avatar.prepare import Avatar, prepare_avatar
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.config import FaceConfig
from facecast.engine.evaluation import metrics
from facecast.engine.evaluation.evaluate import mouth_crops
from facecast.engine.pipeline import LipSyncSession
from facecast.export.backends import load_backend

MAX_PSNR_DB = 50.0
# (candidates, switch cost): 1 candidate is the single most-closed-mouth source of the first warp prior.
SETTINGS = [(1, 0.0), (16, 0.0), (16, 40.0), (64, 0.0), (64, 40.0), (64, 100.0), (64, 200.0)]


def composite_clip(backend, cfg, avatar: Avatar) -> dict[str, float]:
    session = LipSyncSession(backend, cfg, avatar, np.zeros(cfg.a2l.speaker_dim, np.float32), landmarks="avatar")
    crops = np.stack(
        [session.compose_crop(t, avatar.latents[t][None], avatar.landmarks[t])[0] for t in range(avatar.num_frames)]
    )
    fake, real = mouth_crops(crops, avatar.landmarks), mouth_crops(avatar.crops, avatar.landmarks)
    return {
        "psnr_mouth": float(np.mean(np.minimum(metrics.psnr(real, fake), MAX_PSNR_DB))),
        "temporal_mse_x1e4": metrics.temporal_pixel_mse(fake) * 1e4,
        "real_temporal_mse_x1e4": metrics.temporal_pixel_mse(real) * 1e4,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=Path, required=True, help="a folder of talking-face videos")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--max-frames", type=int, default=100)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    backend = load_backend("torch", args.model)
    base = backend.cfg
    detector = face.make_backend("dlib", cfg=base.face)
    avatars = {}
    for video in sorted(args.clips.iterdir()):
        avatars[video.stem] = prepare_avatar(video, backend.encode, base, detector, max_frames=args.max_frames)
        print(f"prepared {video.stem}", flush=True)
    report: dict[str, dict] = {}
    for candidates, switch_cost in SETTINGS:
        face_cfg: FaceConfig = dataclasses.replace(
            base.face, warp_source_candidates=candidates, warp_source_switch_cost=switch_cost
        )
        cfg = dataclasses.replace(base, face=face_cfg)
        name = f"candidates {candidates}, switch cost {switch_cost:g}"
        clips = {clip: composite_clip(backend, cfg, avatar) for clip, avatar in avatars.items()}
        mean = {k: float(np.mean([c[k] for c in clips.values()])) for k in next(iter(clips.values()))}
        report[name] = {"clips": clips, "mean": mean}
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in mean.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

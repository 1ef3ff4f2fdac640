"""An avatar bundle in the old format (every array in avatar.npz) against the same avatar saved now (frames as a
video, crops warped at load): size, save and load time, and how far the loaded frames and crops are from the
originals.

    OMP_NUM_THREADS=1 nice -n 19 python -m facecast.engine.evaluation.studies.bundle_size OLD_BUNDLE [--crf 10]
        [--codec C --pix-fmt P] [--repeats 3] [--json F] [--speech WAV [--model MODEL_DIR]]

OLD_BUNDLE is a version 1 bundle (``facecast prepare`` or ``facecast enroll`` before the frames video); it is only
read. Load times are the median of ``--repeats`` ``Avatar.load`` calls. PSNR is over all frames (``frames``) and
over the face crops (``crops``: the crops warped from the decoded frames against the crops prepare made, which
are the old bundle's). ``warp_sources_equal``: whether the warp picks the same source frames from the new crops
(``Avatar.warp_sources`` with the default ``ModelConfig``). With ``--speech``, both avatars are driven by that
speech through a ``LipSyncSession`` on the torch backend (the model's config, seed 0) and the frames the sessions
show are compared before any video coding (``session_*``: PSNR over whole frames and over the face crops).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from facecast.engine import crop, media
from facecast.engine.avatar.frames_video import FramesVideoConfig
from facecast.engine.avatar.prepare import Avatar
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.config import ModelConfig
from facecast.engine.evaluation import metrics
from facecast.engine.system import cpu_name


def psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(dB over all frames of two uint8 (T, H, W, 3) stacks, the mean squared error pooled; the worst frame's dB)."""
    per_frame = metrics.psnr(a, b)
    mse = np.mean(255.0**2 / 10 ** (per_frame / 10))  # inf dB -> 0 error
    return (math.inf if mse == 0 else float(10 * np.log10(255.0**2 / mse))), float(per_frame.min())


def timed_loads(folder: Path, repeats: int) -> tuple[Avatar, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        avatar = Avatar.load(folder)
        times.append(time.perf_counter() - start)
    return avatar, statistics.median(times)


def session_frames(avatar: Avatar, speech: Path, model: Path) -> np.ndarray:
    """uint8 (N, H, W, 3): what a session on ``avatar`` shows for ``speech`` (torch backend, seed 0)."""
    from facecast.engine.generate import run_session
    from facecast.engine.pipeline import LipSyncSession
    from facecast.engine.speaker import speaker_embedding
    from facecast.export.backends import load_backend

    backend = load_backend("torch", model)
    audio = media.load_audio(speech, backend.cfg.audio.sample_rate)
    session = LipSyncSession(backend, backend.cfg, avatar, speaker_embedding(audio, backend.speaker_partials))
    frames: list[np.ndarray] = []
    run_session(session, audio, lambda f: frames.append(f.image))
    return np.stack(frames)


def compare_sessions(old: Avatar, new: Avatar, speech: Path, model: Path) -> dict:
    a, b = session_frames(old, speech, model), session_frames(new, speech, model)
    size = old.crops.shape[1]
    # The face region of output frame n: its avatar frame's crop (the same transform in both bundles).
    faces = [
        np.stack([crop.warp_to_crop(f, old.transforms[old.index_for(n)], size) for n, f in enumerate(x)])
        for x in (a, b)
    ]
    crops_db, worst_db = psnr(*faces)
    return {
        "session_frames": len(a),
        "session_psnr_frames_db": round(psnr(a, b)[0], 2),
        "session_psnr_crops_db": round(crops_db, 2),
        "session_psnr_crops_worst_frame_db": round(worst_db, 2),
        "session_max_abs_error_crops": int(np.abs(faces[0].astype(np.int16) - faces[1]).max()),
    }


def mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--crf", type=int, default=FramesVideoConfig().crf)
    parser.add_argument("--codec", default=FramesVideoConfig().codec)
    parser.add_argument("--pix-fmt", default=FramesVideoConfig().pix_fmt, help="e.g. yuv444p; rgb24 for libx264rgb")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--speech", type=Path, help="also compare what sessions on both show for this speech")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    args = parser.parse_args()

    old, old_load = timed_loads(args.bundle, args.repeats)
    old_npz_mb = (args.bundle / "avatar.npz").stat().st_size / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = old.save(Path(tmp) / "bundle", "-", FramesVideoConfig(args.codec, args.pix_fmt, args.crf))
        save_s = time.perf_counter() - start
        new, new_load = timed_loads(folder, args.repeats)
        sizes = {f.name: round(f.stat().st_size / 1e6, 3) for f in sorted(folder.iterdir())}
        new_mb = mb(folder)
    cfg = ModelConfig()
    crops_db, worst_db = psnr(old.crops, new.crops)
    stored = ("latents", "masked_latents", "landmarks", "transforms", "reference")
    exact = {k: bool(np.array_equal(getattr(new, k), getattr(old, k))) for k in stored}
    report = {
        "cpu": cpu_name(),
        "frames": list(old.frames.shape),
        "coding": f"{args.codec} {args.pix_fmt} crf {args.crf}",
        "old_avatar_npz_mb": round(old_npz_mb, 2),
        "new_bundle_mb": round(new_mb, 2),
        "new_files_mb": sizes,
        "save_s": round(save_s, 2),
        "old_load_s": round(old_load, 2),
        "new_load_s": round(new_load, 2),
        "psnr_frames_db": round(psnr(old.frames, new.frames)[0], 2),
        "psnr_crops_db": round(crops_db, 2),
        "psnr_crops_worst_frame_db": round(worst_db, 2),
        "max_abs_error_crops": int(np.abs(new.crops.astype(np.int16) - old.crops).max()),
        "warp_sources_equal": bool(np.array_equal(new.warp_sources(cfg), old.warp_sources(cfg))),
        "identical": exact,
    }
    if args.speech:
        report.update(compare_sessions(old, new, args.speech, args.model))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""CPU time of the per-frame work around the networks: the composite, the conditions and the paste, per frame.

    python -m facecast.streaming.benchmark.frame_cpu_timing [--backend onnxruntime --export exports/default]
        [--seconds 6] [--json F]

The bundled avatar is driven by the bundled speech through the public request API (``engine.batching``): every
frame's model answer is kept, then ``LipSyncSession.compose_crop`` (with the decoded rows already given, as a
worker gives them), ``prepare_frame`` (the ``conditions`` stage) and ``crop.paste_back`` are timed over all of those
frames, ``--repeats`` times (for a model whose sessions make no L2V call, ``runs_l2v`` False: the composite of the
warp and the mouth prior and the paste, over the frames the session made); the best repeat's mean per frame is
reported (ms), which is what the code costs with the least interference from other work on the CPU. Run it with
another checkout's interpreter to compare versions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from facecast.engine import crop, media
from facecast.engine.avatar.prepare import load_avatar
from facecast.engine.batching import A2LCall, answer_a2l, answer_frames
from facecast.engine.bundled import DEFAULT_AVATAR, DEFAULT_SPEECH
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.pipeline import LipSyncSession
from facecast.export.backends import load_backend


def captured_frames(session: LipSyncSession, audio: np.ndarray, chunk: int) -> list:
    """(job, result) of every frame of ``audio``, answered one request at a time."""
    got = []
    for start in range(0, len(audio), chunk):
        steps = session.push_audio_steps(audio[start : start + chunk])
        try:
            request = next(steps)
            while True:
                if isinstance(request, A2LCall):
                    (answer,) = answer_a2l(session.backend, [request])
                else:
                    (answer,) = answer_frames(session.backend, [request])
                    got.append((request, answer))
                request = steps.send(answer)
        except StopIteration:
            pass
    return got


def best_mean_ms(fn, items: list, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - t) / len(items))
    return best * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--export", type=Path, default=Path("exports/default"), help="export folder (onnxruntime)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (torch)")
    p.add_argument("--seconds", type=float, default=6.0, help="speech driven through the session")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    backend = load_backend(args.backend, args.export if args.backend != "torch" else args.model)
    avatar = load_avatar(DEFAULT_AVATAR, backend)
    cfg = backend.cfg
    audio = media.load_audio(DEFAULT_SPEECH, cfg.audio.sample_rate)[: int(args.seconds * cfg.audio.sample_rate)]
    session = LipSyncSession(backend, cfg, avatar, np.zeros(256, np.float32))
    chunk = 4 * cfg.audio.samples_per_frame
    # Per frame: (avatar frame, driving landmarks, L2V's latent and decoded rows, or None for a session that makes
    # no L2V call: ``LipSyncSession.runs_l2v``, the composite is then the warp and the mouth prior alone).
    if session.runs_l2v:
        answered = captured_frames(session, audio, chunk)
        items = [(j.avatar_index, j.landmarks, r.latent, r.lower_face) for j, r in answered]
    else:
        made = session.push_audio(audio) + session.finish()
        items = [(f.avatar_index, f.landmarks, None, None) for f in made]

    def compose(item: tuple) -> tuple[np.ndarray, np.ndarray]:
        a, lms, latent, lower_face = item
        return session.compose_crop(a, latent, lms, lower_face=lower_face)

    composed = [compose(item) for item in items]
    report = {
        "frames": len(items),
        "runs_l2v": session.runs_l2v,
        "compose_crop_ms": best_mean_ms(compose, items, args.repeats),
        "paste_back_ms": best_mean_ms(
            lambda i: crop.paste_back(avatar.frames[items[i][0]], *composed[i], avatar.transforms[items[i][0]]),
            list(range(len(items))),
            args.repeats,
        ),
    }
    if session.runs_l2v:
        # prepare_frame again needs frame n's landmarks: a session that keeps the avatar's (the same work per frame)
        static = LipSyncSession(backend, cfg, avatar, np.zeros(256, np.float32), landmarks="static")
        static_frames = captured_frames(static, audio, chunk)
        report["prepare_frame_ms"] = best_mean_ms(
            lambda f: static.prepare_frame(f[0].n, f[0].avatar_index), static_frames, args.repeats
        )
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

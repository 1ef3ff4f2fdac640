"""Compare the A2L motion-gain rules of enrolment (``EnrollConfig.a2l_gain_rule``) in the personal protocol.

Per clip, as ``facecast eval --protocol personal`` does: enrol on the first 70% (rule "person", so the bundle
records the gain measured on the person), then score the last 30% with the generic model, the bundle as enrolled
("person") and the same bundle at min(person, model) gain ("lower_only"). One enrolment serves both rules, so
the L2V adapter is the same and the difference is the gain's alone; when the person's gain is already the lower,
"lower_only" is the very same bundle and its scores are reused.

    OMP_NUM_THREADS=1 python3 -m facecast.engine.evaluation.studies.enroll_gain_rule CLIP.mp4 [...] \
        --enroll-minutes 3 --out DIR
    (--no-identity-check for a one-person clip whose head pose trips the two-halves shape check)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from facecast.engine.avatar import face
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.evaluation.evaluate import EvalConfig, Scorers, evaluate_clip, personal_split
from facecast.engine.training.enroll import EnrollConfig, enroll, enrolled_motion_gain
from facecast.export.backends.torch_backend import TorchBackend


def with_gain(bundle: Path, out: Path, gain: float) -> Path:
    """A copy of ``bundle`` that runs A2L at ``gain`` (a new folder: the backend caches bundles by path)."""
    shutil.copytree(bundle, out)
    meta = json.loads((out / "meta.json").read_text())
    meta["enrolment"]["a2l_motion_gain"] = gain
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


def compare(video: Path, backend: TorchBackend, ecfg: EvalConfig, enroll_cfg: EnrollConfig) -> dict:
    cfg, scorers = backend.cfg, Scorers()
    face_backend = face.make_backend("dlib", cfg=cfg.face)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="facecast_gain_rule_") as tmp:
        train_video, test_video = personal_split(video, cfg, Path(tmp))
        bundle = Path(tmp) / "person"
        report = enroll(train_video, bundle, backend.model_dir, enroll_cfg, face_backend=face_backend, log=print)
        person, model = report["person_a2l_motion_gain"], report["base_a2l_motion_gain"]
        lower = enrolled_motion_gain(person, model, "lower_only")
        result = {
            "enrolment": {k: v for k, v in report.items() if k != "config"},
            "gains": {"model": model, "person": person, "lower_only": lower},
        }
        bundles = {"generic": None, "person": bundle}
        if lower != person:
            bundles["lower_only"] = with_gain(bundle, Path(tmp) / "lower_only", lower)
        for name, b in bundles.items():
            result[name], _, _ = evaluate_clip(test_video, backend, ecfg, face_backend, scorers, b)
    result["lower_only_is_person"] = lower == person
    result.setdefault("lower_only", result["person"])
    result["seconds"] = round(time.time() - start, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", type=Path, nargs="+")
    ap.add_argument("--enroll-minutes", type=float, default=3.0)
    ap.add_argument("--max-frames", type=int, default=100)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--no-identity-check", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/gain_rule"))
    args = ap.parse_args()
    backend = TorchBackend(DEFAULT_MODEL_DIR)
    ecfg = EvalConfig(protocol="reconstruct", steps=args.steps, max_frames=args.max_frames)
    enroll_cfg = EnrollConfig(minutes=args.enroll_minutes, a2l_gain_rule="person")
    enroll_cfg = dataclasses.replace(enroll_cfg, check_identity=not args.no_identity_check)
    args.out.mkdir(parents=True, exist_ok=True)
    for video in args.clips:
        result = compare(video, backend, ecfg, enroll_cfg)
        (args.out / f"{video.stem}.json").write_text(json.dumps(result, indent=1, default=float))
        print(video.stem, json.dumps(result["gains"]))
        for rule in ("generic", "person", "lower_only"):
            scores = result[rule]["model"]
            print(f"  {rule}: mouth LMD {scores['lmd_mouth']:.4f}, psnr_mouth {scores['psnr_mouth']:.2f}")


if __name__ == "__main__":
    main()

"""Measure the figures behind engine/training/enroll.py's bad-input thresholds on ../shared/data/clips.

For each single-person clip (its first ``SECONDS``): speech fraction, share of frames with two or more faces,
share of frames with the face lost, and the two-halves checks (voice cosine, face-shape drift). Then the same
two-halves checks on spliced pairs (clip A's first half + clip B's second half: a different person).

    python3 -m facecast.engine.evaluation.studies.enroll_thresholds [--seconds 20] > thresholds.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from facecast.engine.config import ModelConfig
from facecast.engine.training.enroll import EnrollConfig, read_enrol_video, shape_drift, speaker_cosine, speech_fraction

CLIPS = Path(__file__).resolve().parents[4] / "shared" / "data" / "clips"  # ../shared/data/clips beside the checkout
SINGLE = (
    "edtalk_lieu_60s.mp4",
    "vox_lia_obama.mp4",
    "edtalk_obama_20s.mp4",
    "hdtf_radio13.mp4",
    "hdtf_wra_peterroskam0.mp4",
    "lrs3_QoT0S2vu9m4_00002.mp4",
    "mimictalk_trump_10s.mp4",
    "lectorsub_peterson.mp4",
    "retalking_1.mp4",
    "vox_00010.mp4",
    "mead_w036_happy.mp4",
    "firstimp_0ObEtA6Q8vU_004.mp4",
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = ModelConfig()
    ecfg = EnrollConfig(max_seconds=args.seconds)
    videos, single = {}, {}
    for name in SINGLE:
        v = read_enrol_video(CLIPS / name, cfg, ecfg)
        videos[name] = v
        single[name] = {
            "seconds": v.seconds,
            "speech_fraction": speech_fraction(v.audio),
            "multi_face_fraction": v.multi_face_fraction,
            "lost_fraction": v.lost_fraction,
            "speaker_cosine": speaker_cosine(v.audio),
            "shape_drift": shape_drift(v.landmarks, v.found),
        }
        print(name, json.dumps(single[name]), flush=True)
    spliced = {}
    for a, b in itertools.permutations(SINGLE[:8], 2):
        va, vb = videos[a], videos[b]
        ha, hb = len(va.frames) // 2, len(vb.frames) // 2
        audio = np.concatenate([va.audio[: ha * 640], vb.audio[hb * 640 : 2 * hb * 640]])
        lms = np.concatenate([va.landmarks[:ha], vb.landmarks[hb : 2 * hb]])
        found = np.concatenate([va.found[:ha], vb.found[hb : 2 * hb]])
        spliced[f"{a}+{b}"] = {"speaker_cosine": speaker_cosine(audio), "shape_drift": shape_drift(lms, found)}
    summary = {
        "single": {
            k: [min(c[k] for c in single.values()), max(c[k] for c in single.values())] for k in single[SINGLE[0]]
        },
        "spliced": {
            k: [min(c[k] for c in spliced.values()), max(c[k] for c in spliced.values())]
            for k in ("speaker_cosine", "shape_drift")
        },
    }
    print(json.dumps({"summary_min_max": summary, "single": single, "spliced": spliced}, indent=1))


if __name__ == "__main__":
    main()

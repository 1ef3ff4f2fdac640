"""Compare the two offline 68-point face landmark options on real clips and portraits.

Option A ("dlib"): dlib's HOG frontal face detector + the iBUG 68-point shape predictor
shipped in the PyPI package ``face_recognition_models`` (located with importlib, the
package itself is never imported because it needs pkg_resources).

Option B ("mediapipe"): MediaPipe's legacy bundled face mesh (468 points, video/tracking
mode for clips, static mode for portraits) reduced to the 68 iBUG points with a published
468->68 correspondence (see ``MP468_TO_IBUG68`` below).

Both options get exactly the same RGB uint8 image per frame: the decoded frame downscaled
(INTER_AREA) so that its longer side is at most ``--max-side`` pixels.  The two are run
interleaved frame by frame so that they see the same machine load.

Measured per clip (first ``--frames`` frames) and overall:
  * detection rate            frames with a face / frames
  * ms per frame              wall time of detection + landmarks (and process CPU time, which
                              counts every thread of the process, so multi-threaded inference
                              is not hidden)
  * jitter (jaw+mouth, nose)  mean frame-to-frame displacement of the 17 jaw + 20 mouth points
                              (and of the 9 stable nose points 27-35), divided by the
                              interocular distance (outer eye corners 36-45); only consecutive
                              frames where both have a face.  Mixes real motion with noise.
  * hf jitter                 mean |p[t] - (p[t-1] + p[t+1]) / 2| / IOD, i.e. the part of the
                              motion that is not explained by constant velocity: mostly noise.
  * agreement                 mean distance between dlib's and mediapipe's 68 points / IOD
                              (all 68, mouth 48-67, jaw 0-16, ...) on frames where both found a face.
On portraits: detection success and ms (median of --repeats runs, static mode).

Clips also get a third row, "dlib_tracked": option A run the way engine/avatar/face.py runs it on
video (HOG detector on the first frame / when lost, otherwise the shape predictor alone in the
box of the previous landmarks), since MediaPipe's video mode also skips detection while tracking.

Usage (needs dlib-bin, face_recognition_models, mediapipe, av, opencv, numpy in one env):
    python -m facecast.engine.evaluation.studies.compare_face_landmarks --clips ../shared/data/clips \
        --portraits ../shared/data/portraits --frames 100 --json /tmp/face_landmarks.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import av
import cv2
import dlib
import numpy as np

from facecast.engine.system import cpu_name

# --------------------------------------------------------------------------------------
# MediaPipe face mesh (468 / 478 points) -> iBUG 68 points.
#
# Correspondence taken from Peizhi Yan, "Mediapipe_2_Dlib_Landmarks"
# (https://github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks, file mediapipe2dlib/mp2dlib.py,
# Sep. 2024; also linked from google-ai-edge/mediapipe issue #4490).  Each iBUG point is one
# mesh vertex or the midpoint of two.  Written out here per region, 0-based iBUG order
# (the source counts 1..68).  "Right"/"left" are the subject's, as in iBUG.
# --------------------------------------------------------------------------------------
# fmt: off
MP468_TO_IBUG68: list[tuple[int, ...]] = [
    # jaw 0-16, from the subject's right ear round the chin to the left ear
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    # right brow 17-21, left brow 22-26
    (70,), (63,), (105,), (66,), (107,),
    (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30, nostrils 31-35
    (168, 6), (197, 195), (5,), (4,),
    (75,), (97,), (2,), (326,), (305,),
    # right eye 36-41, left eye 42-47
    (33,), (160,), (158,), (133,), (153,), (144,),
    (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lip 48-59
    (61,), (39,), (37,), (0,), (267,), (269,), (291,),
    (321,), (314,), (17,), (84,), (91,),
    # inner lip 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
]
# fmt: on
assert len(MP468_TO_IBUG68) == 68


def _mapping_matrix() -> np.ndarray:
    """(68, 468) averaging matrix so that ibug68 = W @ mesh468."""
    w = np.zeros((68, 468), dtype=np.float64)
    for i, src in enumerate(MP468_TO_IBUG68):
        for j in src:
            w[i, j] += 1.0 / len(src)
    return w


W_MP_TO_68 = _mapping_matrix()

# iBUG 68 index groups
JAW = list(range(0, 17))
BROWS = list(range(17, 27))
NOSE = list(range(27, 36))
EYES = list(range(36, 48))
MOUTH = list(range(48, 68))
JAW_MOUTH = JAW + MOUTH
GROUPS = {"all68": list(range(68)), "jaw": JAW, "brows": BROWS, "nose": NOSE, "eyes": EYES, "mouth": MOUTH}
R_EYE_OUTER, L_EYE_OUTER = 36, 45
OPTIONS = ("dlib", "mediapipe", "dlib_tracked")  # "dlib_tracked": option A with tracking (clips only)

VIDEO_EXT = {".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# --------------------------------------------------------------------------------------
# the two landmarkers
# --------------------------------------------------------------------------------------
def dlib_68_model_path() -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face_recognition_models is not installed (pip install face_recognition_models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise SystemExit(f"68-point model not found at {path}")
    return str(path)


class DlibLandmarker:
    name = "dlib"

    def __init__(self, upsample: int = 0):
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(dlib_68_model_path())
        self.upsample = upsample

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        rects = self.detector(rgb, self.upsample)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())  # largest face
        shape = self.predictor(rgb, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def close(self) -> None:
        pass


class DlibTracked:
    """Option A as engine/avatar/face.py runs it on video.

    Detect once, then fit the predictor in the box of the previous frame's landmarks (no detector) and
    re-detect only when the fit jumps by > 1/4 of the box.  Reported beside the per-frame numbers because
    MediaPipe's video mode tracks the same way.  Its "det" rate is a tracked rate: a tracked face is never
    declared lost unless the fit jumps."""

    name = "dlib_tracked"

    def __init__(self, base: DlibLandmarker):
        self.base = base
        self.prev: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        if self.prev is not None:
            x0, y0 = self.prev.min(0)
            x1, y1 = self.prev.max(0)
            rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
            shape = self.base.predictor(rgb, rect)
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            if np.linalg.norm(pts.mean(0) - self.prev.mean(0)) < 0.25 * (x1 - x0):
                self.prev = pts
                return pts
        self.prev = self.base(rgb)
        return self.prev

    def close(self) -> None:
        self.prev = None


class MediaPipeLandmarker:
    name = "mediapipe"

    def __init__(self, static: bool):
        # imported here: mediapipe is no facecast dependency (its own environment, docs/face_landmarks.md)
        from mediapipe.python.solutions import face_mesh as mp_face_mesh

        self.mesh = mp_face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        res = self.mesh.process(rgb)
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * w, p.y * h) for p in lm[:468]], dtype=np.float64)
        return W_MP_TO_68 @ pts

    def close(self) -> None:
        self.mesh.close()


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = max_side / max(h, w)
    if s >= 1.0:
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def iter_frames(path: Path, n: int):
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= n:
                break
            yield frame.to_ndarray(format="rgb24")


def timed(fn, img):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(img)
    return out, (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


def iod(p: np.ndarray) -> float:
    return float(np.linalg.norm(p[R_EYE_OUTER] - p[L_EYE_OUTER]))


def mean_or_none(xs):
    return float(np.mean(xs)) if len(xs) else None


class TrackStats:
    """Per-option accumulators for one clip."""

    def __init__(self):
        self.frames = 0
        self.found = 0
        self.ms: list[float] = []
        self.cpu_ms: list[float] = []
        self.iod: list[float] = []
        self.jit = {"jaw_mouth": [], "nose": []}
        self.hf = {"jaw_mouth": [], "nose": []}
        self.prev: list[np.ndarray | None] = [None, None]  # p[t-2], p[t-1]

    def add(self, pts: np.ndarray | None, ms: float, cpu_ms: float) -> None:
        self.frames += 1
        self.ms.append(ms)
        self.cpu_ms.append(cpu_ms)
        p2, p1 = self.prev
        if pts is not None:
            self.found += 1
            d = iod(pts)
            self.iod.append(d)
            if p1 is not None:
                norm = 0.5 * (d + iod(p1))
                for key, idx in (("jaw_mouth", JAW_MOUTH), ("nose", NOSE)):
                    disp = np.linalg.norm(pts[idx] - p1[idx], axis=1).mean() / norm
                    self.jit[key].append(float(disp))
                    if p2 is not None:
                        acc = np.linalg.norm(p1[idx] - 0.5 * (p2[idx] + pts[idx]), axis=1).mean() / iod(p1)
                        self.hf[key].append(float(acc))
        self.prev = [p1, pts]

    def summary(self) -> dict:
        return {
            "frames": self.frames,
            "detected": self.found,
            "det_rate": self.found / self.frames if self.frames else None,
            "ms_mean": mean_or_none(self.ms),
            "ms_median": float(np.median(self.ms)) if self.ms else None,
            "cpu_ms_mean": mean_or_none(self.cpu_ms),
            "iod_px": mean_or_none(self.iod),
            "jitter_jaw_mouth": mean_or_none(self.jit["jaw_mouth"]),
            "jitter_nose": mean_or_none(self.jit["nose"]),
            "hf_jitter_jaw_mouth": mean_or_none(self.hf["jaw_mouth"]),
            "hf_jitter_nose": mean_or_none(self.hf["nose"]),
            "_raw": {
                "ms": self.ms,
                "cpu_ms": self.cpu_ms,
                "jit": self.jit,
                "hf": self.hf,
                "found": self.found,
                "frames": self.frames,
            },
        }


def agreement(pd: np.ndarray, pm: np.ndarray) -> dict[str, float]:
    norm = 0.5 * (iod(pd) + iod(pm))
    dist = np.linalg.norm(pd - pm, axis=1) / norm
    return {k: float(dist[idx].mean()) for k, idx in GROUPS.items()}


def pool(summaries: list[dict]) -> dict:
    """Frame-weighted overall numbers from per-clip raw accumulators."""
    ms = [x for s in summaries for x in s["_raw"]["ms"]]
    cpu = [x for s in summaries for x in s["_raw"]["cpu_ms"]]
    frames = sum(s["_raw"]["frames"] for s in summaries)
    found = sum(s["_raw"]["found"] for s in summaries)
    out = {
        "frames": frames,
        "detected": found,
        "det_rate": found / frames if frames else None,
        "ms_mean": mean_or_none(ms),
        "ms_median": float(np.median(ms)) if ms else None,
        "ms_p90": float(np.percentile(ms, 90)) if ms else None,
        "cpu_ms_mean": mean_or_none(cpu),
        "clips_det_rate_below_90pct": sum(1 for s in summaries if (s["det_rate"] or 0) < 0.9),
    }
    for key in ("jaw_mouth", "nose"):
        out[f"jitter_{key}"] = mean_or_none([x for s in summaries for x in s["_raw"]["jit"][key]])
        out[f"hf_jitter_{key}"] = mean_or_none([x for s in summaries for x in s["_raw"]["hf"][key]])
    return out


# --------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------
def run_clip(path: Path, n_frames: int, max_side: int, dl: DlibLandmarker) -> dict:
    mp_lm = MediaPipeLandmarker(static=False)  # fresh tracker per clip
    tr = DlibTracked(dl)
    st = {name: TrackStats() for name in OPTIONS}
    agree: list[dict[str, float]] = []
    src_size = None
    size = None
    for t, frame in enumerate(iter_frames(path, n_frames)):
        src_size = frame.shape[1::-1]
        img = downscale(frame, max_side)
        size = img.shape[1::-1]
        # rotate the order so no option always runs first (cold cache) or last
        order = [("dlib", dl), ("mediapipe", mp_lm), ("dlib_tracked", tr)]
        order = order[t % 3 :] + order[: t % 3]
        res = {}
        for name, fn in order:
            pts, ms, cpu_ms = timed(fn, img)
            st[name].add(pts, ms, cpu_ms)
            res[name] = pts
        if res["dlib"] is not None and res["mediapipe"] is not None:
            agree.append(agreement(res["dlib"], res["mediapipe"]))
    mp_lm.close()
    return {
        "clip": path.name,
        "src_wh": list(src_size) if src_size else None,
        "wh": list(size) if size else None,
        **{name: st[name].summary() for name in OPTIONS},
        "agree_frames": len(agree),
        "agreement": {k: mean_or_none([a[k] for a in agree]) for k in GROUPS},
        "_agree_raw": agree,
    }


def run_portraits(files: list[Path], max_side: int, repeats: int, dl: DlibLandmarker) -> list[dict]:
    mp_lm = MediaPipeLandmarker(static=True)
    rows = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            rows.append({"image": f.name, "error": "unreadable"})
            continue
        img = downscale(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side)
        row = {"image": f.name, "src_wh": [bgr.shape[1], bgr.shape[0]], "wh": list(img.shape[1::-1])}
        out = {}
        for name, fn in (("dlib", dl), ("mediapipe", mp_lm)):
            times, cpus, pts = [], [], None
            for _ in range(repeats):
                pts, ms, cpu_ms = timed(fn, img)
                times.append(ms)
                cpus.append(cpu_ms)
            out[name] = pts
            row[name] = {
                "detected": pts is not None,
                "ms_median": statistics.median(times),
                "cpu_ms_median": statistics.median(cpus),
                "iod_px": iod(pts) if pts is not None else None,
            }
        row["agreement"] = (
            agreement(out["dlib"], out["mediapipe"])
            if out["dlib"] is not None and out["mediapipe"] is not None
            else None
        )
        rows.append(row)
    mp_lm.close()
    return rows


def versions() -> dict:
    v = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in (
        "dlib-bin",
        "dlib",
        "face_recognition_models",
        "mediapipe",
        "numpy",
        "protobuf",
        "opencv-python-headless",
        "opencv-contrib-python",
        "opencv-python",
        "av",
        "jax",
        "jaxlib",
    ):
        try:
            v[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    v["dlib_module"] = getattr(dlib, "__version__", None)
    v["cv2_module"] = cv2.__version__
    v["cpu"] = cpu_name()
    v["cpu_count"] = os.cpu_count()
    return v


# --------------------------------------------------------------------------------------
# printing
# --------------------------------------------------------------------------------------
def _f(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def _pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def print_report(result: dict) -> None:
    ov = result["overall"]
    print("\n== overall (clips, frame-weighted) ==")
    hdr = (
        f"{'option':<12} {'frames':>6} {'det':>6} {'ms mean':>8} {'ms p50':>7} {'ms p90':>7} {'cpu ms':>7} "
        f"{'jit J+M':>8} {'jit nose':>8} {'hf J+M':>7} {'hf nose':>8}"
    )
    print(hdr)
    for name in OPTIONS:
        o = ov[name]
        print(
            f"{name:<12} {o['frames']:>6} {_pct(o['det_rate']):>6} {_f(o['ms_mean'], '{:.1f}'):>8} "
            f"{_f(o['ms_median'], '{:.1f}'):>7} {_f(o['ms_p90'], '{:.1f}'):>7} "
            f"{_f(o['cpu_ms_mean'], '{:.1f}'):>7} {_f(o['jitter_jaw_mouth']):>8} {_f(o['jitter_nose']):>8} "
            f"{_f(o['hf_jitter_jaw_mouth']):>7} {_f(o['hf_jitter_nose']):>8}"
        )
    ag = ov["agreement"]
    print(
        f"agreement dlib<->mediapipe ({ov['agree_frames']} frames, / IOD): "
        + ", ".join(f"{k} {_f(v)}" for k, v in ag.items())
    )

    print("\n== per clip ==")
    print(
        f"{'clip':<26} {'in WxH':>10} {'IOD':>5} | {'det A':>5} {'det B':>5} | {'ms A':>6} {'ms B':>6} "
        f"{'ms At':>6} | {'jitJM A':>7} {'jitJM B':>7} {'jitJM At':>8} | {'nose A':>6} {'nose B':>6} | "
        f"{'agr68':>6} {'mouth':>6}"
    )
    for c in result["clips"]:
        a, b, at = c["dlib"], c["mediapipe"], c["dlib_tracked"]
        iod_px = a["iod_px"] or b["iod_px"]
        wh = "x".join(map(str, c["wh"])) if c["wh"] else "-"
        print(
            f"{c['clip'][:26]:<26} {wh:>10} {_f(iod_px, '{:.0f}'):>5} | {_pct(a['det_rate']):>5} "
            f"{_pct(b['det_rate']):>5} | {_f(a['ms_mean'], '{:.1f}'):>6} {_f(b['ms_mean'], '{:.1f}'):>6} "
            f"{_f(at['ms_mean'], '{:.1f}'):>6} | {_f(a['jitter_jaw_mouth']):>7} "
            f"{_f(b['jitter_jaw_mouth']):>7} {_f(at['jitter_jaw_mouth']):>8} | {_f(a['jitter_nose']):>6} "
            f"{_f(b['jitter_nose']):>6} | {_f(c['agreement']['all68']):>6} {_f(c['agreement']['mouth']):>6}"
        )

    if result["portraits"]:
        print("\n== portraits (static mode, median of repeats) ==")
        print(
            f"{'image':<26} {'in WxH':>10} | {'det A':>5} {'det B':>5} | {'ms A':>6} {'ms B':>6} | "
            f"{'agr68':>6} {'mouth':>6}"
        )
        for r in result["portraits"]:
            if "error" in r:
                print(f"{r['image']:<26} {r['error']}")
                continue
            a, b, ag = r["dlib"], r["mediapipe"], r["agreement"] or {}
            print(
                f"{r['image'][:26]:<26} {'x'.join(map(str, r['wh'])):>10} | "
                f"{'yes' if a['detected'] else 'NO':>5} {'yes' if b['detected'] else 'NO':>5} | "
                f"{a['ms_median']:>6.1f} {b['ms_median']:>6.1f} | "
                f"{_f(ag.get('all68')):>6} {_f(ag.get('mouth')):>6}"
            )
        ps = result["portraits_summary"]
        print(
            "portraits: "
            + "; ".join(
                f"{n} {ps[n]['detected']}/{ps[n]['images']} found, {ps[n]['ms_mean']:.1f} ms mean"
                for n in ("dlib", "mediapipe")
            )
        )
    print(
        "\nA = dlib HOG + 68-pt shape predictor on every frame, B = mediapipe face mesh -> 68 (video mode);"
        " dlib_tracked = A with the detector only on the first/lost frames.\n"
        "jitter/agreement are divided by the interocular distance (outer eye corners 36-45);"
        " agreement is A vs B."
    )


# --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=Path, required=True, help="folder of talking-face videos")
    ap.add_argument("--portraits", type=Path, default=None, help="folder of still portraits")
    ap.add_argument("--frames", type=int, default=100, help="first N frames of each clip")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--max-side", type=int, default=640, help="downscale so the longer side is <= this")
    ap.add_argument(
        "--dlib-upsample",
        type=int,
        default=0,
        help="upsampling passes of dlib's HOG detector (0 = as is; 1 finds faces down to ~40 px but costs ~4x)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats per portrait")
    ap.add_argument("--limit-clips", type=int, default=0, help="only the first K clips (0 = all)")
    args = ap.parse_args(argv)

    clips = sorted(p for p in args.clips.iterdir() if p.suffix.lower() in VIDEO_EXT)
    if args.limit_clips:
        clips = clips[: args.limit_clips]
    portraits = sorted(p for p in args.portraits.iterdir() if p.suffix.lower() in IMAGE_EXT) if args.portraits else []

    dl = DlibLandmarker(upsample=args.dlib_upsample)
    # warm up both (model load / graph init outside the timings)
    warm = np.zeros((480, 640, 3), np.uint8)
    dl(warm)
    w = MediaPipeLandmarker(static=True)
    w(warm)
    w.close()

    t_start = time.time()
    load_before = os.getloadavg()
    clip_rows = []
    for i, path in enumerate(clips, 1):
        row = run_clip(path, args.frames, args.max_side, dl)
        clip_rows.append(row)
        print(
            f"[{i}/{len(clips)}] {path.name}: dlib {_pct(row['dlib']['det_rate'])} "
            f"{_f(row['dlib']['ms_mean'], '{:.1f}')} ms, mediapipe {_pct(row['mediapipe']['det_rate'])} "
            f"{_f(row['mediapipe']['ms_mean'], '{:.1f}')} ms",
            file=sys.stderr,
            flush=True,
        )
    portrait_rows = run_portraits(portraits, args.max_side, args.repeats, dl)

    all_agree = [a for c in clip_rows for a in c["_agree_raw"]]
    overall = {name: pool([c[name] for c in clip_rows]) for name in OPTIONS}
    overall["agree_frames"] = len(all_agree)
    overall["agreement"] = {k: mean_or_none([a[k] for a in all_agree]) for k in GROUPS}
    overall["agreement_median"] = {
        k: (float(np.median([a[k] for a in all_agree])) if all_agree else None) for k in GROUPS
    }
    ok = [r for r in portrait_rows if "error" not in r]
    portraits_summary = {
        name: {
            "images": len(ok),
            "detected": sum(1 for r in ok if r[name]["detected"]),
            "ms_mean": mean_or_none([r[name]["ms_median"] for r in ok]) or 0.0,
        }
        for name in ("dlib", "mediapipe")
    }

    for c in clip_rows:  # drop raw per-frame lists from the JSON
        c.pop("_agree_raw")
        for name in OPTIONS:
            c[name].pop("_raw")
    result = {
        "settings": {
            "frames": args.frames,
            "max_side": args.max_side,
            "dlib_upsample": args.dlib_upsample,
            "portrait_repeats": args.repeats,
            "mediapipe_clips": "static_image_mode=False",
            "mediapipe_portraits": "static_image_mode=True",
            "mapping": "PeizhiYan/Mediapipe_2_Dlib_Landmarks",
            "argv": sys.argv,
        },
        "versions": versions(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "elapsed_s": time.time() - t_start,
        "overall": overall,
        "clips": clip_rows,
        "portraits": portrait_rows,
        "portraits_summary": portraits_summary,
    }
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

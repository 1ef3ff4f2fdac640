"""``facecast eval``: generated vs. real frames on held-out talking-face clips, with baselines in the same run.

Protocols
- ``reconstruct`` (papers 000/001, Wav2Lip-style): the clip itself is the video avatar, so pose and upper face
  are real; the lower face is masked and regenerated from the clip's own audio.
- ``one-shot``: the clip's first frame is the avatar and the clip's audio drives it. Head motion then differs
  from the real video, so frame-wise PSNR/SSIM/LMD also measure pose mismatch, not only the mouth.
- ``personal`` (``facecast enroll``): ``facecast enroll`` on the clip's first 70%, then ``reconstruct`` on the
  last 30% (frames and speech the enrolment never saw), with the enrolled and the generic model side by side.

Systems, side by side
- ``model``: facecast (A2L landmarks -> L2V).
- ``static``: the same pipeline with the mouth and jaw landmarks left at the avatar's reference shape (no
  audio-driven motion): what doing nothing scores.
- ``oracle`` (reconstruct only): L2V driven by each real frame's own landmarks: how good the frames get with a
  perfect A2L, which separates A2L's error from L2V's.
- ``topline``: the autoencoder's reconstruction of the real lower face (the best the decoder allows; reconstruct
  protocol only).
- personal protocol: ``model`` and ``oracle`` are the *enrolled* model (what this user would run), ``generic`` and
  ``generic_oracle`` the same runs with the base model.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import media
from ..audio import check_speech
from ..avatar import face
from ..avatar.prepare import Avatar, check_backend, prepare_avatar
from ..backend import Backend
from ..config import InferenceConfig, ModelConfig
from ..errors import FacecastError, InputError
from ..generate import run_session
from ..pipeline import LipSyncSession
from ..speaker import speaker_embedding
from ..training.dataset import find_videos
from ..training.enroll import EnrollConfig, enroll
from . import metrics

SYSTEMS = ("model", "static", "oracle", "topline")
ALL_SYSTEMS = ("model", "generic", "static", "oracle", "generic_oracle", "topline")  # display order
PROTOCOLS = ("reconstruct", "one-shot", "personal")
PERSONAL_ENROL_FRACTION = 0.7  # personal protocol: enrol on the clip's first 70%, score the rest
SEGMENT_CRF = 12  # the personal protocol's two clip segments are re-encoded this close to lossless
MOUTH_BOX_PX = 96  # side of the square mouth crop (in the 256² face crop) that mouth metrics use

# Sheets (PNG): white label panel on the left of each row, blocks of rows per clip separated by a white gap.
SHEET_GAP_PX = 6
# Mouth sheet: each mouth pixel becomes a 3x3 block (96² -> 288²), so blur and lost teeth are visible at a glance;
# nearest-neighbour on purpose, an interpolating resize would add blur of its own.
MOUTH_SHEET_SCALE = 3
MOUTH_SHEET_FRAMES = 4  # per clip
MOUTH_LABEL_PX = 220  # label panel width, fits a clip name like "mimictalk_may_5s" at MOUTH_FONT_SCALE
MOUTH_FONT_SCALE = 0.7
LINE_PX_PER_FONT_SCALE = 30  # label line spacing: Hershey Simplex capitals are ~22 px tall at scale 1


@dataclass(frozen=True)
class EvalConfig:
    protocol: str = "reconstruct"
    steps: int = 2
    max_frames: int = 250  # per clip (10 s at 25 fps)
    sync_max_offset_frames: int = 5
    contact_frames: int = 4  # per clip in the contact sheet
    mouth_sheet_frames: int = MOUTH_SHEET_FRAMES  # per clip in the mouth sheet (--mouth-sheet)
    enroll: EnrollConfig = EnrollConfig()  # personal protocol: the enrolment's budget (tests use a tiny one)


@dataclass
class Scorers:
    """Optional learned metrics, present only when the user gives local weights."""

    syncnet: object | None = None  # engine.syncnet.SyncNetScorer
    lpips: object | None = None  # engine.perceptual.LPIPS
    fid: object | None = None  # engine.perceptual.FrechetDistance
    sync_expert: object | None = None  # engine.evaluation.sync_expert.SyncExpertOnAudio (facecast train sync)


def mouth_boxes(lms: np.ndarray, size: int = MOUTH_BOX_PX, crop_px: int = 256) -> np.ndarray:
    """(T, 68, 2) -> (T, 2) top-left corners of a size² box centred on each frame's mouth, inside the crop."""
    centre = lms[:, 48:68].mean(1)
    return np.clip(np.round(centre - size / 2), 0, crop_px - size).astype(int)


def cut_boxes(images: np.ndarray, corners: np.ndarray, size: int = MOUTH_BOX_PX) -> np.ndarray:
    """(T, H, W, 3) images and (T, 2) top-left (x, y) corners -> (T, size, size, 3) crops."""
    return np.stack([img[y : y + size, x : x + size] for img, (x, y) in zip(images, corners, strict=True)])


def mouth_crops(crops: np.ndarray, landmarks: np.ndarray, size: int = MOUTH_BOX_PX) -> np.ndarray:
    """The size² mouth box of each face crop: (T, H, H, 3) crops -> (T, size, size, 3).

    ``landmarks`` are (T, 68, 2) in crop pixels, or one (68, 2) set used for every frame (a portrait avatar's
    reference landmarks, whose crop does not move).
    """
    lms = np.asarray(landmarks)
    if lms.ndim == 2:
        lms = np.repeat(lms[None], len(crops), axis=0)
    return cut_boxes(crops, mouth_boxes(lms, size, crop_px=crops.shape[1]), size)


def detect_all(crops: np.ndarray, backend: face.LandmarkBackend, fallback: np.ndarray) -> np.ndarray:
    """Landmarks on each crop with the engine's detector; a frame where it finds nothing keeps ``fallback``."""
    out = fallback.copy()
    for t, c in enumerate(crops):
        found = backend.detect(c)
        if found:
            out[t] = min(found, key=lambda f: float(np.abs(f - fallback[t]).mean()))
    return out


def score_system(
    fake: np.ndarray,
    real: np.ndarray,
    real_lms: np.ndarray,
    fake_lms: np.ndarray,
    audio: np.ndarray,
    cfg: EvalConfig,
    scorers: Scorers,
) -> dict[str, float]:
    boxes = mouth_boxes(real_lms)  # the real mouth's place in both: a misplaced generated mouth scores low
    fake_mouth, real_mouth = cut_boxes(fake, boxes), cut_boxes(real, boxes)
    envelope = metrics.audio_envelope(audio, len(fake))
    corr0, offset, corr_best = metrics.sync_correlation(
        metrics.mouth_opening(fake_lms), envelope, cfg.sync_max_offset_frames
    )
    fake_detail = float(metrics.laplacian_variance(fake_mouth).mean())  # grey levels²
    real_detail = float(metrics.laplacian_variance(real_mouth).mean())
    out = {
        "psnr_face": metrics.clip_psnr(real, fake),
        "ssim_face": metrics.clip_ssim(real, fake),
        "psnr_mouth": metrics.clip_psnr(real_mouth, fake_mouth),
        "ssim_mouth": metrics.clip_ssim(real_mouth, fake_mouth),
        "lmd_mouth": float(metrics.landmark_distance(fake_lms, real_lms, metrics.MOUTH).mean()),
        "lmd_face": float(metrics.landmark_distance(fake_lms, real_lms).mean()),
        "pixel_mse_t": metrics.temporal_pixel_mse(fake_mouth),
        "pixel_mse_t_gap": metrics.temporal_gap(fake_mouth, real_mouth),
        "sync_corr": corr0,
        "sync_corr_best": corr_best,
        "sync_offset_frames": float(offset),
        "opening_std": metrics.opening_std(fake_lms),
        "motion_ratio": metrics.motion_ratio(fake_lms, real_lms),
        "mouth_laplacian_var": fake_detail,
        # NaN (left out of the means) when the real mouth crop is flat: no detail to match.
        "detail_ratio": fake_detail / real_detail if real_detail >= metrics.FLAT_LAPLACIAN_VAR else math.nan,
    }
    if scorers.syncnet is not None:
        s = scorers.syncnet.score(fake, audio)
        out.update(lse_c=float(s["lse_c"]), lse_d=float(s["lse_d"]), lse_offset_frames=float(s["offset_frames"]))
    if scorers.sync_expert is not None:
        out.update(expert_scores(scorers.sync_expert, fake, fake_lms, audio))
    if scorers.lpips is not None:
        from .perceptual import tlp

        out["lpips_face"] = float(scorers.lpips(real, fake).mean())
        out["tlp"] = tlp(scorers.lpips, fake, real)
    return out


def expert_scores(expert: object, crops: np.ndarray, lms: np.ndarray, audio: np.ndarray) -> dict[str, float]:
    """The sync expert's offset (frames, positive = mouth lags), confidence and min distance, its mouth strips cut
    at ``lms`` (landmarks detected on these very crops)."""
    s = expert.score(crops, lms, audio)
    return {
        "expert_offset_frames": float(s["offset_frames"]),
        "expert_confidence": float(s["confidence"]),
        "expert_min_dist": float(s["min_dist"]),
        "expert_dist_at_0": float(s["dist_at_0"]),
    }


def one_shot(avatar: Avatar) -> Avatar:
    """The clip's first frame alone, as a portrait avatar."""
    keep = slice(0, 1)
    return dataclasses.replace(
        avatar,
        frames=avatar.frames[keep],
        transforms=avatar.transforms[keep],
        crops=avatar.crops[keep],
        landmarks=avatar.landmarks[keep],
        latents=avatar.latents[keep] if avatar.latents is not None else None,
        masked_latents=avatar.masked_latents[keep] if avatar.masked_latents is not None else None,
        reference=avatar.landmarks[0],
        identity_index=0,
    )


def generated_crops(session: LipSyncSession, audio: np.ndarray, n: int) -> np.ndarray:
    crops: list[np.ndarray] = []
    run_session(session, audio, lambda f: crops.append(f.crop))
    return np.stack(crops[:n])


def topline_crops(session: LipSyncSession, real: Avatar, n: int) -> np.ndarray:
    """The autoencoder's own reconstruction of the real lower face, composited like generated frames."""
    return np.stack(
        [session.compose_crop(t, real.latents[t][None], real.landmarks[t], warp_prior=False)[0] for t in range(n)]
    )


def evaluate_clip(
    video: Path,
    backend: Backend,
    ecfg: EvalConfig,
    face_backend: face.LandmarkBackend,
    scorers: Scorers,
    enrolment: Path | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray], np.ndarray]:
    """Scores per system (and "real"), the 256² crops per system (and "real"), and the (T, 2) mouth-box corners.
    ``enrolment``: an enrolled bundle whose weights the clip's avatar runs (``avatar.check_backend``; None: the
    model's own)."""
    cfg = backend.cfg
    weights = check_backend(backend, enrolment)  # before the clip is prepared: a backend that cannot, fails fast
    audio = media.load_audio(video, cfg.audio.sample_rate)
    check_speech(audio, cfg.audio, str(video))
    clip = prepare_avatar(video, backend.encode, cfg, face_backend, max_frames=ecfg.max_frames)
    n = min(clip.num_frames, len(audio) // cfg.audio.samples_per_frame)
    if n < 10:
        raise FacecastError(f"{video} is shorter than 10 frames with both face and audio; nothing to measure.")
    audio = audio[: n * cfg.audio.samples_per_frame]
    avatar = clip if ecfg.protocol == "reconstruct" else one_shot(clip)
    avatar.enrolment = weights
    spk = speaker_embedding(audio, backend.speaker_partials)
    inference = InferenceConfig(steps=ecfg.steps)
    real = clip.crops[:n]
    real_lms = detect_all(real, face_backend, clip.landmarks[:n])
    systems: dict[str, np.ndarray] = {}
    runs = [("model", "audio"), ("static", "static")]
    if ecfg.protocol == "reconstruct":
        runs.append(("oracle", "avatar"))
    for name, source in runs:
        session = LipSyncSession(backend, cfg, avatar, spk, inference, landmarks=source)
        systems[name] = generated_crops(session, audio, n)
    if ecfg.protocol == "reconstruct":
        systems["topline"] = topline_crops(LipSyncSession(backend, cfg, avatar, spk, inference), clip, n)
    scores = {}
    for name, crops in systems.items():
        fake_lms = detect_all(crops, face_backend, clip.landmarks[:n])
        scores[name] = score_system(crops, real, real_lms, fake_lms, audio, ecfg, scorers)
    corners = mouth_boxes(real_lms)
    real_mouth = cut_boxes(real, corners)
    real_corr, real_offset, real_corr_best = metrics.sync_correlation(
        metrics.mouth_opening(real_lms), metrics.audio_envelope(audio, n), ecfg.sync_max_offset_frames
    )
    # A recording's own audio-to-mouth offset is rarely 0 (speakers anticipate sounds; files carry A/V skew):
    # a generated mouth is in sync when its offset matches the real one's.
    for name in systems:
        scores[name]["sync_offset_vs_real_frames"] = scores[name]["sync_offset_frames"] - real_offset
    scores["real"] = {
        "sync_corr": real_corr,
        "sync_corr_best": real_corr_best,
        "sync_offset_frames": float(real_offset),
        "pixel_mse_t": metrics.temporal_pixel_mse(real_mouth),
        "opening_std": metrics.opening_std(real_lms),
        "mouth_laplacian_var": float(metrics.laplacian_variance(real_mouth).mean()),
    }
    if scorers.sync_expert is not None:
        scores["real"].update(expert_scores(scorers.sync_expert, real, real_lms, audio))
    systems["real"] = real
    return scores, systems, corners


def _sheet_row(label: str, tiles: Sequence[np.ndarray], label_px: int, font_scale: float) -> np.ndarray:
    """A white panel ``label_px`` wide with ``label`` in black (one line per "\\n"), then the tiles left to right."""
    import cv2

    height = tiles[0].shape[0]
    panel = np.full((height, label_px, 3), 255, np.uint8)
    lines = label.split("\n")
    line_px = round(LINE_PX_PER_FONT_SCALE * font_scale)
    for i, text in enumerate(lines):
        y = height // 2 + round((i - (len(lines) - 1) / 2) * line_px)  # the lines centred on the row
        cv2.putText(panel, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([panel, *tiles], axis=1)


def _write_sheet(rows: list[np.ndarray | None], path: Path) -> Path:
    """Stack RGB row images top to bottom and write them as a PNG; a ``None`` row is a white gap."""
    import cv2

    width = max(r.shape[1] for r in rows if r is not None)
    gap = np.full((SHEET_GAP_PX, width, 3), 255, np.uint8)
    sheet = np.concatenate([gap if r is None else r for r in rows], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet[..., ::-1]):  # cv2 wants BGR
        raise FacecastError(f"could not write the sheet {path}; give a writable path ending in .png")
    return path


def _evenly_spaced(n_frames: int, frames: int) -> np.ndarray:
    """``frames`` frame indices spread from the first to the last of ``n_frames`` (fewer if the clip is shorter)."""
    return np.linspace(0, n_frames - 1, min(frames, n_frames)).round().astype(int)


def contact_sheet(rows: list[tuple[str, dict[str, np.ndarray]]], path: Path, frames: int, thumb_px: int = 128) -> Path:
    """One block per clip: a row per system (real first), ``frames`` evenly spaced thumbnails each."""
    import cv2

    out: list[np.ndarray | None] = []
    for _, systems in rows:
        idx = _evenly_spaced(len(systems["real"]), frames)
        for s in ["real"] + [s for s in ALL_SYSTEMS if s in systems]:
            tiles = [cv2.resize(systems[s][i], (thumb_px, thumb_px), interpolation=cv2.INTER_AREA) for i in idx]
            out.append(_sheet_row(s, tiles, thumb_px // 2 * 3, 0.5))
        out.append(None)
    return _write_sheet(out, path)


def _mouth_rows(rows: Sequence[tuple[str, np.ndarray]], frames: int, scale: int) -> list[np.ndarray]:
    """Row images for labelled (T, h, w, 3) uint8 mouth stacks, the same evenly spaced frames in every row."""
    if not rows:
        raise InputError("a mouth sheet needs at least one (label, crops) row.")
    if frames < 1 or scale < 1:
        raise InputError(f"frames and scale must be >= 1, got frames={frames}, scale={scale}.")
    stacks = [np.asarray(crops) for _, crops in rows]
    for (label, _), stack in zip(rows, stacks, strict=True):
        if stack.dtype != np.uint8 or stack.ndim != 4 or stack.shape[-1] != 3 or len(stack) == 0:
            raise InputError(
                f"mouth sheet row {label!r} must be a non-empty (T, h, w, 3) uint8 RGB stack, "
                f"got {stack.dtype} {stack.shape}."
            )
    if len({s.shape[1:] for s in stacks}) > 1:
        raise InputError(
            f"mouth sheet rows differ in crop size: {[s.shape[1:3] for s in stacks]}; cut all at one size "
            "(mouth_crops does)."
        )
    idx = _evenly_spaced(min(len(s) for s in stacks), frames)  # shortest stack: the same frames in every row
    return [
        _sheet_row(
            label, [stack[i].repeat(scale, axis=0).repeat(scale, axis=1) for i in idx], MOUTH_LABEL_PX, MOUTH_FONT_SCALE
        )
        for (label, _), stack in zip(rows, stacks, strict=True)
    ]


def mouth_sheet(
    rows: Sequence[tuple[str, np.ndarray]],
    path: Path,
    frames: int = MOUTH_SHEET_FRAMES,
    scale: int = MOUTH_SHEET_SCALE,
) -> Path:
    """Write a PNG of labelled mouth-crop stacks: one row each, ``frames`` evenly spaced tiles enlarged ``scale``x.

    ``rows``: (label, (T, h, w, 3) uint8 RGB) pairs in display order (real first when there is one); every stack
    has the same crop size, and the tiles come from the same frame indices in every row. A label may have
    several lines ("model\\nclip_name"). For a generated-only sheet, e.g. the bundled astronaut::

        mouths = mouth_crops(generated_crops, avatar.landmarks[0])  # (T, 96, 96, 3)
        mouth_sheet([("astronaut", mouths)], Path("astronaut_mouth.png"))
    """
    return _write_sheet(_mouth_rows(rows, frames, scale), path)


def eval_mouth_sheet(clips: list[tuple[str, dict[str, np.ndarray]]], path: Path, frames: int) -> Path:
    """``facecast eval --mouth-sheet``: one block per clip, a row per system with real first, tiles 3x enlarged.

    ``clips``: (clip name, {system or "real": (T, 96, 96, 3) mouth crops}) pairs, all cut at the real mouth.
    """
    out: list[np.ndarray | None] = []
    for clip, mouths in clips:
        order = [s for s in ("real", *ALL_SYSTEMS) if s in mouths]
        out += _mouth_rows([(f"{s}\n{clip}", mouths[s]) for s in order], frames, MOUTH_SHEET_SCALE)
        out.append(None)
    return _write_sheet(out, path)


def evaluate(
    clips_dir: Path,
    backend: Backend,
    ecfg: EvalConfig = EvalConfig(),
    scorers: Scorers | None = None,
    out_json: Path | None = None,
    sheet_png: Path | None = None,
    progress: Callable[[str], None] | None = None,
    mouth_png: Path | None = None,
) -> dict:
    """Score every clip in ``clips_dir`` (or one video); write the JSON and the sheets whose paths are given."""
    cfg = backend.cfg
    if ecfg.protocol not in PROTOCOLS:
        raise FacecastError(f"unknown protocol {ecfg.protocol!r}: use one of {', '.join(PROTOCOLS)}")
    clips_dir = Path(clips_dir)
    videos = [clips_dir] if clips_dir.is_file() else find_videos(clips_dir)
    if not videos:
        raise FacecastError(f"no video clips found in {clips_dir}")
    scorers = scorers or Scorers()
    face_backend = face.make_backend("dlib", cfg=cfg.face)
    per_clip, skipped, sheet_rows, mouth_rows, enrolments = {}, {}, [], [], {}
    for video in videos:
        if progress:
            progress(video.name)
        try:
            if ecfg.protocol == "personal":
                scores, systems, corners, enrolments[video.stem] = evaluate_personal_clip(
                    video, backend, ecfg, face_backend, scorers
                )
            else:
                scores, systems, corners = evaluate_clip(video, backend, ecfg, face_backend, scorers)
        except FacecastError as e:  # a clip without a face or audio is reported, never fatal
            skipped[video.name] = str(e)
            continue
        per_clip[video.stem] = scores
        sheet_rows.append((video.stem, systems))
        if mouth_png is not None:  # all frames' mouths (~7 MB per system and 250 frames); the sheet samples them
            mouth_rows.append((video.stem, {s: cut_boxes(crops, corners) for s, crops in systems.items()}))
    if not per_clip:
        raise FacecastError(f"every clip was skipped: {json.dumps(skipped, indent=1)}")
    mean = {s: metrics.summarize([c[s] for c in per_clip.values() if s in c]) for s in (*ALL_SYSTEMS, "real")}
    if scorers.fid is not None:  # FID compares distributions, so it is taken over all clips' frames at once
        real_all = np.concatenate([systems["real"] for _, systems in sheet_rows])
        for s in ALL_SYSTEMS:
            if all(s in systems for _, systems in sheet_rows):
                mean[s]["fid"] = float(scorers.fid(real_all, np.concatenate([sy[s] for _, sy in sheet_rows])))
    report = {
        "protocol": ecfg.protocol,
        "steps": ecfg.steps,
        "backend": getattr(backend, "name", "?"),
        "clips": per_clip,
        "mean": {k: v for k, v in mean.items() if v.get("n_clips")},
        "skipped": skipped,
        "notes": _notes(ecfg, scorers),
    }
    if ecfg.protocol == "personal":
        report["enrolment"] = enrolments
        report["enrolled_vs_generic"] = {name: _personal_ratios(c) for name, c in per_clip.items()}
    if sheet_png is not None:
        report["contact_sheet"] = str(contact_sheet(sheet_rows, Path(sheet_png), ecfg.contact_frames))
    if mouth_png is not None:
        report["mouth_sheet"] = str(eval_mouth_sheet(mouth_rows, Path(mouth_png), ecfg.mouth_sheet_frames))
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(json_safe(report), indent=2))
    return report


def json_safe(value: object) -> object:
    """NaN/inf floats -> None (null), recursively: json.dumps would write NaN, which strict JSON readers reject."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _notes(ecfg: EvalConfig, scorers: Scorers) -> list[str]:
    notes = [
        "psnr/ssim on the 256² aligned face crop and a 96² mouth crop; lmd normalised by the interocular "
        "distance, landmarks from the engine's detector (dlib) on generated and real crops alike",
        "sync_corr: Pearson correlation of inner-lip opening with the audio RMS envelope at offset 0; "
        f"sync_corr_best and sync_offset_frames: the best over ±{ecfg.sync_max_offset_frames} frames "
        "(positive = mouth lags audio); sync_offset_vs_real_frames: that offset minus the real video's own "
        "(in sync = 0)",
        "motion_ratio: std over the clip of the generated inner-lip opening (inner-lip gap / interocular distance, "
        "dlib on the generated crops) over the same std of the real clip (opening_std holds both); target "
        "0.7-1.3: below, the mouth under-articulates, above, it exaggerates or jitters; null for a clip whose real "
        f"mouth is still (std < {metrics.STILL_MOUTH_OPENING_STD} interocular), which the means leave out",
        f"detail_ratio: mean variance of the Laplacian of the grey {MOUTH_BOX_PX}² mouth crop, generated over "
        "real (mouth_laplacian_var holds both, grey levels²); target >= 0.7: lower means a blurred mouth (lip "
        "edges and teeth lost), which PSNR/SSIM barely penalise; noise and artefacts also raise it, so above 1 "
        "is not better",
    ]
    if ecfg.protocol == "personal":
        notes.append(
            f"personal: enrolled on each clip's first {PERSONAL_ENROL_FRACTION:.0%}, scored on the rest; model and "
            "oracle are the enrolled model, generic and generic_oracle the base model; enrolled_vs_generic holds "
            "lmd_mouth enrolled/generic (target <= 0.7) and psnr_mouth enrolled - generic (target >= +3 dB)"
        )
    if ecfg.protocol == "one-shot":
        notes.append("one-shot: head motion differs from the real video, so frame-wise metrics include pose error")
    if scorers.syncnet is None:
        notes.append("LSE-C/LSE-D not computed: pass --syncnet-weights syncnet_v2.model")
    if scorers.sync_expert is not None:
        notes.append(
            "expert_*: our sync expert (facecast train sync) on 5-frame windows over offsets -15..15: "
            "expert_offset_frames (positive = mouth lags audio), expert_confidence = median - min of the mean "
            "distance curve (LSE-C style), expert_min_dist its minimum (LSE-D style, unit embeddings, 0..2), "
            "expert_dist_at_0 its value at offset 0"
        )
    if scorers.lpips is None:
        notes.append("LPIPS/tLP not computed: pass --lpips-backbone and --lpips-linear")
    if scorers.fid is None:
        notes.append("FID not computed: pass --fid-inception (a local TorchScript Inception)")
    return notes


def evaluate_landmarks(
    dataset: Path, a2l_predict: Callable, cfg: ModelConfig, clips: list[str], encode: Callable | None = None
) -> dict:
    """A2L alone on prepared clips: mouth LMD of predicted vs real pose-free landmarks, against ``static``.

    ``a2l_predict(features (T, dim), speaker (256,), reference (68, 2)) -> displacements (T, 37, 2)``,
    aligned to frames (lookahead already removed). The features are what a live session computes
    (``whisper.a2l_features``: normalised log-mel, or Whisper tokens from ``encode``, the backend's speech
    encoder). The reference is the clip's mean pose-free landmarks, as ``facecast prepare`` makes it for a video
    avatar; ``static`` is that reference, unmoved.
    """
    from ..landmarks import DRIVEN, register_to
    from ..training.dataset import load_clips
    from ..whisper import a2l_features

    per_clip = {}
    for clip in load_clips(dataset, clips):
        real = register_to(clip.landmarks, clip.landmarks[0])
        reference = real.mean(0)
        disp = a2l_predict(a2l_features(clip.audio, cfg, encode), clip.speaker, reference)[: len(real)]
        real = real[: len(disp)]
        static = np.repeat(reference[None], len(real), 0)
        pred = static.copy()
        pred[:, DRIVEN] += disp
        per_clip[clip.name] = {
            "lmd_mouth_model": float(metrics.landmark_distance(pred, real, metrics.MOUTH).mean()),
            "lmd_mouth_static": float(metrics.landmark_distance(static, real, metrics.MOUTH).mean()),
            "opening_corr": metrics.pearson(metrics.mouth_opening(pred), metrics.mouth_opening(real)),
            "motion_ratio": metrics.motion_ratio(pred, real),
        }
    return {"clips": per_clip, "mean": metrics.summarize(list(per_clip.values()))}


def _personal_ratios(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    model, generic = scores["model"], scores["generic"]
    return {
        "lmd_mouth_ratio": model["lmd_mouth"] / max(generic["lmd_mouth"], 1e-9),
        "psnr_mouth_gain_db": model["psnr_mouth"] - generic["psnr_mouth"],
        "oracle_lmd_mouth_ratio": scores["oracle"]["lmd_mouth"] / max(scores["generic_oracle"]["lmd_mouth"], 1e-9),
        "oracle_psnr_mouth_gain_db": scores["oracle"]["psnr_mouth"] - scores["generic_oracle"]["psnr_mouth"],
    }


def _write_segment(path: Path, frames: list[np.ndarray], audio: np.ndarray) -> Path:
    h, w = frames[0].shape[:2]
    writer = media.Mp4Writer(path, w, h, crf=SEGMENT_CRF)
    for f in frames:
        writer.write(f)
    return writer.close(audio)


def personal_split(video: Path, cfg: ModelConfig, folder: Path) -> tuple[Path, Path]:
    """The personal protocol's two parts of ``video``, written to ``folder``: (the first
    ``PERSONAL_ENROL_FRACTION``, to enrol on; the rest, to score)."""
    audio = media.load_audio(video, cfg.audio.sample_rate)
    check_speech(audio, cfg.audio, str(video))
    spf = cfg.audio.samples_per_frame
    frames = list(media.iter_video_frames(video, cfg.audio.fps, max_frames=len(audio) // spf))
    n = min(len(frames), len(audio) // spf)
    cut = round(n * PERSONAL_ENROL_FRACTION)
    train_video = _write_segment(Path(folder) / "enrol.mp4", frames[:cut], audio[: cut * spf])
    return train_video, _write_segment(Path(folder) / "test.mp4", frames[cut:n], audio[cut * spf : n * spf])


def evaluate_personal_clip(
    video: Path,
    backend: Backend,
    ecfg: EvalConfig,
    face_backend: face.LandmarkBackend,
    scorers: Scorers,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray], np.ndarray, dict]:
    """Enrol on the clip's first 70%, then score the last 30% with the enrolled and the generic model.

    Returns what ``evaluate_clip`` returns plus the enrolment's summary (time, steps, bundle size)."""
    cfg = backend.cfg
    import tempfile

    model_dir = getattr(backend, "model_dir", None)
    if getattr(backend, "load_enrolment", None) is None or model_dir is None:
        raise FacecastError(
            "--protocol personal fine-tunes the model, which needs the model folder: use --backend torch"
        )
    recon = dataclasses.replace(ecfg, protocol="reconstruct")
    with tempfile.TemporaryDirectory(prefix="facecast_personal_") as tmp:
        train_video, test_video = personal_split(video, cfg, Path(tmp))
        bundle = Path(tmp) / "bundle"
        enrolment = enroll(train_video, bundle, model_dir, ecfg.enroll, face_backend=face_backend, log=lambda _: None)
        generic, _, _ = evaluate_clip(test_video, backend, recon, face_backend, scorers)
        scores, systems, corners = evaluate_clip(test_video, backend, recon, face_backend, scorers, bundle)
    scores["generic"], scores["generic_oracle"] = generic["model"], generic["oracle"]
    return scores, systems, corners, {k: v for k, v in enrolment.items() if k != "config"}

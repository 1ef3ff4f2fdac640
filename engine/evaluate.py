"""``facecast eval``: generated vs. real frames on held-out talking-face clips, with baselines in the same run.

Protocols
- ``reconstruct`` (papers 000/001, Wav2Lip-style): the clip itself is the video avatar, so pose and upper face
  are real; the lower face is masked and regenerated from the clip's own audio.
- ``one-shot``: the clip's first frame is the avatar and the clip's audio drives it. Head motion then differs
  from the real video, so frame-wise PSNR/SSIM/LMD also measure pose mismatch, not only the mouth.

Systems, side by side
- ``model``: facecast (A2L landmarks -> L2V).
- ``static``: the same pipeline with the mouth and jaw landmarks left at the avatar's reference shape (no
  audio-driven motion): what doing nothing scores.
- ``oracle`` (reconstruct only): L2V driven by each real frame's own landmarks: how good the frames get with a
  perfect A2L, which separates A2L's error from L2V's.
- ``topline``: the autoencoder's reconstruction of the real lower face (the best the decoder allows; reconstruct
  protocol only).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import face, media, metrics
from .audio import check_speech
from .avatar import Avatar, prepare_avatar
from .backend import Backend
from .config import InferenceConfig, ModelConfig
from .dataset import find_videos
from .errors import FacecastError
from .generate import run_session
from .pipeline import LipSyncSession
from .speaker import speaker_embedding

SYSTEMS = ("model", "static", "oracle", "topline")
MOUTH_BOX_PX = 96  # side of the square mouth crop (in the 256² face crop) that mouth metrics use


@dataclass(frozen=True)
class EvalConfig:
    protocol: str = "reconstruct"
    steps: int = 2
    max_frames: int = 250  # per clip (10 s at 25 fps)
    sync_max_offset_frames: int = 5
    contact_frames: int = 4  # per clip in the contact sheet


@dataclass
class Scorers:
    """Optional learned metrics, present only when the user gives local weights."""

    syncnet: object | None = None  # engine.syncnet.SyncNetScorer
    lpips: object | None = None  # engine.perceptual.LPIPS
    fid: object | None = None  # engine.perceptual.FrechetDistance


def mouth_boxes(lms: np.ndarray, size: int = MOUTH_BOX_PX, crop_px: int = 256) -> np.ndarray:
    """(T, 68, 2) -> (T, 2) top-left corners of a size² box centred on each frame's mouth, inside the crop."""
    centre = lms[:, 48:68].mean(1)
    return np.clip(np.round(centre - size / 2), 0, crop_px - size).astype(int)


def cut_boxes(images: np.ndarray, corners: np.ndarray, size: int = MOUTH_BOX_PX) -> np.ndarray:
    return np.stack([img[y : y + size, x : x + size] for img, (x, y) in zip(images, corners, strict=True)])


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
    boxes = mouth_boxes(real_lms)
    fake_mouth, real_mouth = cut_boxes(fake, boxes), cut_boxes(real, boxes)
    envelope = metrics.audio_envelope(audio, len(fake))
    corr0, offset, corr_best = metrics.sync_correlation(
        metrics.mouth_opening(fake_lms), envelope, cfg.sync_max_offset_frames
    )
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
    }
    if scorers.syncnet is not None:
        s = scorers.syncnet.score(fake, audio)
        out.update(lse_c=float(s["lse_c"]), lse_d=float(s["lse_d"]), lse_offset_frames=float(s["offset_frames"]))
    if scorers.lpips is not None:
        from .perceptual import tlp

        out["lpips_face"] = float(scorers.lpips(real, fake).mean())
        out["tlp"] = tlp(scorers.lpips, fake, real)
    return out


def one_shot(avatar: Avatar) -> Avatar:
    """The clip's first frame alone, as a portrait avatar."""
    keep = slice(0, 1)
    return dataclasses.replace(
        avatar,
        frames=avatar.frames[keep],
        transforms=avatar.transforms[keep],
        crops=avatar.crops[keep],
        landmarks=avatar.landmarks[keep],
        latents=avatar.latents[keep],
        masked_latents=avatar.masked_latents[keep],
        reference=avatar.landmarks[0],
    )


def generated_crops(session: LipSyncSession, audio: np.ndarray, n: int) -> np.ndarray:
    crops: list[np.ndarray] = []
    run_session(session, audio, lambda f: crops.append(f.crop))
    return np.stack(crops[:n])


def topline_crops(session: LipSyncSession, real: Avatar, n: int) -> np.ndarray:
    """The autoencoder's own reconstruction of the real lower face, composited like generated frames."""
    return np.stack([session.compose_crop(t, real.latents[t][None], real.landmarks[t])[0] for t in range(n)])


def evaluate_clip(
    video: Path,
    backend: Backend,
    cfg: ModelConfig,
    ecfg: EvalConfig,
    face_backend: face.LandmarkBackend,
    scorers: Scorers,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    audio = media.load_audio(video, cfg.audio.sample_rate)
    check_speech(audio, cfg.audio, str(video))
    clip = prepare_avatar(video, backend.encode, cfg, face_backend, max_frames=ecfg.max_frames)
    n = min(clip.num_frames, len(audio) // cfg.audio.samples_per_frame)
    if n < 10:
        raise FacecastError(f"{video} is shorter than 10 frames with both face and audio; nothing to measure.")
    audio = audio[: n * cfg.audio.samples_per_frame]
    avatar = clip if ecfg.protocol == "reconstruct" else one_shot(clip)
    spk = speaker_embedding(audio)
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
    scores["real"] = {
        "sync_corr": metrics.sync_correlation(
            metrics.mouth_opening(real_lms), metrics.audio_envelope(audio, n), ecfg.sync_max_offset_frames
        )[0],
        "pixel_mse_t": metrics.temporal_pixel_mse(cut_boxes(real, mouth_boxes(real_lms))),
    }
    systems["real"] = real
    return scores, systems


def contact_sheet(rows: list[tuple[str, dict[str, np.ndarray]]], path: Path, frames: int, thumb_px: int = 128) -> Path:
    """One block per clip: a row per system (real first), ``frames`` evenly spaced thumbnails each."""
    import cv2

    blocks = []
    for _, systems in rows:
        order = ["real"] + [s for s in SYSTEMS if s in systems]
        n = len(systems["real"])
        idx = np.linspace(0, n - 1, frames).round().astype(int)
        for s in order:
            row = [cv2.resize(systems[s][i], (thumb_px, thumb_px), interpolation=cv2.INTER_AREA) for i in idx]
            label = np.full((thumb_px, thumb_px // 2 * 3, 3), 255, np.uint8)
            cv2.putText(label, s, (4, thumb_px // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            blocks.append(np.concatenate([label, *row], axis=1))
        blocks.append(np.full((6, blocks[-1].shape[1], 3), 255, np.uint8))
    sheet = np.concatenate(blocks, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet[..., ::-1])
    return path


def evaluate(
    clips_dir: Path,
    backend: Backend,
    cfg: ModelConfig,
    ecfg: EvalConfig = EvalConfig(),
    scorers: Scorers | None = None,
    out_json: Path | None = None,
    sheet_png: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    if ecfg.protocol not in ("reconstruct", "one-shot"):
        raise FacecastError(f"unknown protocol {ecfg.protocol!r}: use reconstruct or one-shot")
    clips_dir = Path(clips_dir)
    videos = [clips_dir] if clips_dir.is_file() else find_videos(clips_dir)
    if not videos:
        raise FacecastError(f"no video clips found in {clips_dir}")
    scorers = scorers or Scorers()
    face_backend = face.make_backend("dlib", cfg=cfg.face)
    per_clip, skipped, sheet_rows = {}, {}, []
    for video in videos:
        if progress:
            progress(video.name)
        try:
            scores, systems = evaluate_clip(video, backend, cfg, ecfg, face_backend, scorers)
        except FacecastError as e:  # a clip without a face or audio is reported, never fatal
            skipped[video.name] = str(e)
            continue
        per_clip[video.stem] = scores
        sheet_rows.append((video.stem, systems))
    if not per_clip:
        raise FacecastError(f"every clip was skipped: {json.dumps(skipped, indent=1)}")
    mean = {s: metrics.summarize([c[s] for c in per_clip.values() if s in c]) for s in (*SYSTEMS, "real")}
    if scorers.fid is not None:  # FID compares distributions, so it is taken over all clips' frames at once
        real_all = np.concatenate([systems["real"] for _, systems in sheet_rows])
        for s in SYSTEMS:
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
    if sheet_png is not None:
        report["contact_sheet"] = str(contact_sheet(sheet_rows, Path(sheet_png), ecfg.contact_frames))
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(report, indent=2))
    return report


def _notes(ecfg: EvalConfig, scorers: Scorers) -> list[str]:
    notes = [
        "psnr/ssim on the 256² aligned face crop and a 96² mouth crop; lmd normalised by the interocular "
        "distance, landmarks from the engine's detector (dlib) on generated and real crops alike",
        "sync_corr: Pearson correlation of inner-lip opening with the audio RMS envelope at offset 0; "
        f"sync_corr_best and sync_offset_frames: the best over ±{ecfg.sync_max_offset_frames} frames "
        "(positive = mouth lags audio)",
    ]
    if ecfg.protocol == "one-shot":
        notes.append("one-shot: head motion differs from the real video, so frame-wise metrics include pose error")
    if scorers.syncnet is None:
        notes.append("LSE-C/LSE-D not computed: pass --syncnet-weights syncnet_v2.model")
    if scorers.lpips is None:
        notes.append("LPIPS/tLP not computed: pass --lpips-backbone and --lpips-linear")
    if scorers.fid is None:
        notes.append("FID not computed: pass --fid-inception (a local TorchScript Inception)")
    return notes


def evaluate_landmarks(dataset: Path, a2l_predict: Callable, cfg: ModelConfig, clips: list[str]) -> dict:
    """A2L alone on prepared clips: mouth LMD of predicted vs real pose-free landmarks, against ``static``.

    ``a2l_predict(normalised_mel (T, 320), speaker (256,), reference (68, 2)) -> displacements (T, 37, 2)``,
    aligned to frames (lookahead already removed). The reference is the clip's mean pose-free landmarks, as
    ``facecast prepare`` makes it for a video avatar; ``static`` is that reference, unmoved.
    """
    from .audio import mel_per_video_frame, normalised_log_mel
    from .dataset import load_clips
    from .landmarks import DRIVEN, register_to

    per_clip = {}
    for clip in load_clips(dataset, clips):
        real = register_to(clip.landmarks, clip.landmarks[0])
        reference = real.mean(0)
        mel = mel_per_video_frame(normalised_log_mel(clip.audio, cfg.audio), cfg.audio)
        disp = a2l_predict(mel, clip.speaker, reference)[: len(real)]
        real = real[: len(disp)]
        static = np.repeat(reference[None], len(real), 0)
        pred = static.copy()
        pred[:, DRIVEN] += disp
        per_clip[clip.name] = {
            "lmd_mouth_model": float(metrics.landmark_distance(pred, real, metrics.MOUTH).mean()),
            "lmd_mouth_static": float(metrics.landmark_distance(static, real, metrics.MOUTH).mean()),
            "opening_corr": metrics.pearson(metrics.mouth_opening(pred), metrics.mouth_opening(real)),
        }
    return {"clips": per_clip, "mean": metrics.summarize(list(per_clip.values()))}

"""``facecast eval --protocol portrait``: closed-mouth stills driven by other people's speech, as users run facecast.

The other protocols take frames of talking clips as the avatar, and those are rarely shut; the most common avatar
is a photo with a closed mouth. Here every avatar is a still whose mouth is closed (opening below
``PortraitConfig.closed_opening`` of the interocular distance): each image of ``--portraits`` and the first frame
of each clip of ``--clips``. Avatar i speaks with the audio of clip i + 1 (never its own), so both the face and
the speech are unseen together.

There is no real video of these faces talking, so nothing is compared pixel for pixel. What is measured:
- **render fidelity**: per frame, the driving landmarks' inner-lip opening (what A2L asks for) against the opening
  the landmark detector finds on the rendered crop (what the picture shows): ``render_slope`` (least squares,
  rendered on driving; 1 = the picture opens as far as asked) and ``render_corr``;
- **motion**: ``opening_std`` of the rendered mouth, against ``real_opening_std``, the std of the real talker whose
  speech drives it (dlib on that clip's own frames): ``motion_vs_real``;
- **detail**: the Laplacian variance of the rendered mouth crop over the still's own (``detail_ratio``);
- ``sync_corr``: the rendered opening against the speech's loudness, as in the other protocols.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import media
from ..audio import check_speech
from ..avatar import face
from ..avatar.prepare import Avatar, prepare_avatar
from ..backend import Backend
from ..config import InferenceConfig
from ..errors import FacecastError
from ..generate import run_session
from ..landmarks import mouth_opening
from ..pipeline import LipSyncSession
from ..speaker import speaker_embedding
from ..training.dataset import find_videos
from . import metrics
from .evaluate import mouth_crops, mouth_sheet

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass(frozen=True)
class PortraitConfig:
    closed_opening: float = 0.03  # interocular distances: a still whose mouth opens less counts as closed
    min_detected: float = 0.5  # a run where the detector finds the face on fewer rendered frames is not scored
    sheet_frames: int = 8  # the frames A2L opens widest, per avatar, in the mouth sheet


def render_fidelity(driving: np.ndarray, rendered: np.ndarray) -> tuple[float, float]:
    """(slope, correlation) of the rendered opening on the driving one, per frame (T,) each, NaN frames dropped."""
    ok = np.isfinite(driving) & np.isfinite(rendered)
    d, r = driving[ok], rendered[ok]
    if len(d) < 3 or d.std() < 1e-6:
        return float("nan"), float("nan")
    return float(np.polyfit(d, r, 1)[0]), float(np.corrcoef(d, r)[0, 1])


def closed_avatars(
    portraits: list[Path],
    clips: list[Path],
    backend: Backend,
    pcfg: PortraitConfig,
    face_backend: face.LandmarkBackend,
    skipped: dict[str, str],
) -> list[tuple[str, Avatar]]:
    """(name, one-frame avatar) for every still whose mouth is closed; the rest go to ``skipped`` with why."""
    cfg = backend.cfg
    out = []
    for path in [*portraits, *clips]:
        try:
            avatar = prepare_avatar(path, backend.encode, cfg, face_backend, max_frames=1)
        except FacecastError as e:
            skipped[path.name] = str(e)
            continue
        o = float(mouth_opening(avatar.landmarks[0]))
        if o >= pcfg.closed_opening:
            skipped[path.name] = f"mouth open in the still ({o:.3f} interocular >= {pcfg.closed_opening}): not scored"
            continue
        out.append((path.stem if path in portraits else f"{path.stem}_first_frame", avatar))
    return out


def _detected_opening(crops: np.ndarray, face_backend: face.LandmarkBackend) -> np.ndarray:
    """The detector's opening per crop (T,), NaN where it finds no face."""
    out = np.full(len(crops), np.nan)
    for t, c in enumerate(crops):
        found = face_backend.detect(c)
        if found:
            out[t] = float(mouth_opening(max(found, key=lambda f: float(np.ptp(f[:, 0])))))
    return out


def score_portrait(
    avatar: Avatar,
    audio: np.ndarray,
    real_std: float,
    backend: Backend,
    steps: int,
    face_backend: face.LandmarkBackend,
    pcfg: PortraitConfig,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Scores of one still driven by ``audio``, its rendered crops (T, 256, 256, 3) and driving openings (T,)."""
    session = LipSyncSession(
        backend, backend.cfg, avatar, speaker_embedding(audio, backend.speaker_partials), InferenceConfig(steps=steps)
    )
    frames = []
    run_session(session, audio, frames.append)
    crops = np.stack([f.crop for f in frames])
    driving = mouth_opening(np.stack([f.landmarks for f in frames]))
    rendered = _detected_opening(crops, face_backend)
    found = float(np.isfinite(rendered).mean())
    slope, corr = render_fidelity(driving, rendered) if found >= pcfg.min_detected else (float("nan"),) * 2
    still_mouth = float(metrics.laplacian_variance(mouth_crops(avatar.crops[:1], avatar.landmarks[0])).mean())
    mouth_detail = float(metrics.laplacian_variance(mouth_crops(crops, avatar.landmarks[0])).mean())
    envelope = metrics.audio_envelope(audio, len(crops))
    sync, _, _ = metrics.sync_correlation(np.nan_to_num(rendered, nan=float(np.nanmean(rendered))), envelope)
    rendered_std = float(np.nanstd(rendered))
    scores = {
        "frames": float(len(crops)),
        "detected_fraction": found,
        "still_opening": float(mouth_opening(avatar.landmarks[0])),
        "driving_opening_std": float(driving.std()),
        "opening_std": rendered_std,
        "real_opening_std": real_std,
        "motion_vs_real": rendered_std / real_std if real_std > metrics.STILL_MOUTH_OPENING_STD else float("nan"),
        "render_slope": slope,
        "render_corr": corr,
        "mouth_laplacian_var": mouth_detail,
        "detail_ratio": mouth_detail / still_mouth if still_mouth >= metrics.FLAT_LAPLACIAN_VAR else float("nan"),
        "sync_corr": sync,
    }
    return scores, crops, driving


def evaluate_portraits(
    clips_dir: Path,
    portraits_dir: Path | None,
    backend: Backend,
    steps: int,
    max_frames: int,
    pcfg: PortraitConfig = PortraitConfig(),
    mouth_png: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The portrait protocol's report (per avatar and mean); with ``mouth_png``, the sheet of the widest frames."""
    cfg = backend.cfg
    clips = [Path(clips_dir)] if Path(clips_dir).is_file() else find_videos(Path(clips_dir))
    portraits = (
        sorted(p for p in Path(portraits_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if (portraits_dir is not None)
        else []
    )
    if len(clips) < 2 and not portraits:
        raise FacecastError(
            f"the portrait protocol needs 2 or more clips in {clips_dir} (or --portraits): one "
            "clip's speech drives another's face"
        )
    face_backend = face.make_backend("dlib", cfg=cfg.face)
    skipped: dict[str, str] = {}
    speech = []  # (clip, audio, the real talker's opening std, real mouths (T, 96, 96, 3), real openings (T,))
    for clip in clips:
        if progress:
            progress(f"speech {clip.name}")
        try:
            audio = media.load_audio(clip, cfg.audio.sample_rate)
            check_speech(audio, cfg.audio, str(clip))
            real = prepare_avatar(clip, backend.encode, cfg, face_backend, max_frames=max_frames)
        except FacecastError as e:
            skipped[clip.name] = str(e)
            continue
        n = min(real.num_frames, len(audio) // cfg.audio.samples_per_frame)
        real_open = mouth_opening(real.landmarks[:n])
        speech.append(
            (
                clip,
                audio[: n * cfg.audio.samples_per_frame],
                float(real_open.std()),
                mouth_crops(real.crops[:n], real.landmarks[:n]),
                real_open,
            )
        )
    if not speech:
        raise FacecastError(f"no clip in {clips_dir} has both speech and a face: {skipped}")
    avatars = closed_avatars(portraits, [s[0] for s in speech], backend, pcfg, face_backend, skipped)
    per_avatar, rows = {}, []
    for i, (name, avatar) in enumerate(avatars):
        clip, audio, real_std, _, _ = speech[(i + 1) % len(speech)]
        if name == f"{clip.stem}_first_frame":  # never a clip's own speech (one clip and portraits: wraps to it)
            clip, audio, real_std, _, _ = speech[(i + 2) % len(speech)]
        if progress:
            progress(f"{name} <- {clip.name}")
        scores, crops, driving = score_portrait(avatar, audio, real_std, backend, steps, face_backend, pcfg)
        scores["speech"] = clip.name
        per_avatar[name] = scores
        widest = np.sort(np.argsort(-driving, kind="stable")[: pcfg.sheet_frames])
        rows.append((f"{name}\n<- {clip.stem}", mouth_crops(crops[widest], avatar.landmarks[0])))
    if not per_avatar:
        raise FacecastError(f"no closed-mouth still to score: {skipped}")
    report = {
        "protocol": "portrait",
        "steps": steps,
        "backend": getattr(backend, "name", "?"),
        "avatars": per_avatar,
        "mean": metrics.summarize([{k: v for k, v in s.items() if k != "speech"} for s in per_avatar.values()]),
        "skipped": skipped,
        "notes": [
            "render_slope / render_corr: per frame, the opening the detector finds on the rendered crop against the "
            "driving landmarks' opening (inner-lip gap / interocular); targets >= 0.8 each on closed-mouth stills",
            "motion_vs_real: rendered opening std over the std of the real talker whose speech drives it (>= 0.7)",
            "detail_ratio: Laplacian variance of the rendered 96² mouth crop over the still's own (>= 0.7)",
        ],
    }
    if mouth_png is not None:
        # Real open mouths beside them: the widest frames of the driving clips themselves.
        real_rows = []
        for clip, _, _, mouths, real_open in speech[: max(1, min(len(speech), 4))]:
            widest = np.sort(np.argsort(-real_open, kind="stable")[: pcfg.sheet_frames])
            real_rows.append((f"real: {clip.stem}", mouths[widest]))
        report["mouth_sheet"] = str(mouth_sheet([*rows, *real_rows], Path(mouth_png), frames=pcfg.sheet_frames))
    return report

"""``facecast prepare-data``: a folder of talking-face videos -> aligned crops, landmarks, audio, speaker embeddings.

Layout of a prepared dataset (one folder per clip, any folder of videos with speech works, HDTF/LRS2/VoxCeleb
style included):
    DATASET/<clip>/crops.npy      uint8 (T, 256, 256, 3)  aligned face crops at 25 fps
    DATASET/<clip>/landmarks.npy  float32 (T, 68, 2)      landmarks in crop pixels
    DATASET/<clip>/audio.npy      float32 (samples,)      16 kHz mono, cut to T * 640 samples
    DATASET/<clip>/speaker.npy    float32 (256,)          Resemblyzer embedding of the clip's voice
    DATASET/<clip>/meta.json      source, frames, speaker, found-face ratio
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import crop, face, media
from .audio import check_speech
from .config import ModelConfig
from .errors import FacecastError
from .speaker import speaker_embedding

VIDEO_SUFFIXES = {".mp4", ".mpg", ".mpeg", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
MIN_FOUND_RATIO = 0.9  # clips where the face is lost more often are skipped: their crops would be wrong


def find_videos(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)


def clip_name(video: Path, root: Path) -> str:
    return "__".join(video.relative_to(root).with_suffix("").parts)


def prepare_clip(
    video: Path, out: Path, cfg: ModelConfig, backend: face.LandmarkBackend, max_frames: int | None = None
) -> dict:
    audio = media.load_audio(video, cfg.audio.sample_rate)
    check_speech(audio, cfg.audio, str(video))
    frames = list(media.iter_video_frames(video, cfg.audio.fps, max_frames=max_frames))
    n = min(len(frames), len(audio) // cfg.audio.samples_per_frame)
    frames = frames[:n]
    lms, found = face.video_landmarks(frames, backend, cfg.face, str(video))
    transforms = crop.smooth_transforms(
        np.stack([crop.crop_transform(lm, cfg.face) for lm in lms]), cfg.face.smooth_frames
    )
    crops = np.stack([crop.warp_to_crop(f, m, cfg.face.crop_px) for f, m in zip(frames, transforms, strict=True)])
    lms_crop = np.stack([crop.to_crop_coords(lm, m) for lm, m in zip(lms, transforms, strict=True)])
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "crops.npy", crops)
    np.save(out / "landmarks.npy", lms_crop)
    np.save(out / "found.npy", found)
    np.save(out / "audio.npy", audio[: n * cfg.audio.samples_per_frame])
    np.save(out / "speaker.npy", speaker_embedding(audio))
    meta = {"source": str(video), "frames": int(n), "found_ratio": float(found.mean())}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def prepare_dataset(
    video_dir: Path, out_dir: Path, cfg: ModelConfig = ModelConfig(), max_frames: int | None = None
) -> dict:
    videos = find_videos(video_dir)
    if not videos:
        raise FacecastError(f"no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) found under {video_dir}.")
    backend = face.make_backend("dlib", cfg=cfg.face)
    report: dict[str, dict] = {}
    for video in tqdm(videos, desc="prepare-data", unit="clip"):
        name = clip_name(video, Path(video_dir))
        try:
            meta = prepare_clip(video, Path(out_dir) / name, cfg, backend, max_frames)
        except FacecastError as e:  # one bad clip must not lose the others
            tqdm.write(f"skipped {video.name}: {e}")
            report[name] = {"skipped": str(e)}
            continue
        if meta["found_ratio"] < MIN_FOUND_RATIO:
            tqdm.write(f"note {video.name}: face found in only {meta['found_ratio']:.0%} of frames")
        report[name] = meta
    cfg.save(Path(out_dir) / "config.json")
    (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=2))
    return report


@dataclass
class Clip:
    """A prepared clip, memory-mapped."""

    name: str
    crops: np.ndarray
    landmarks: np.ndarray
    audio: np.ndarray
    speaker: np.ndarray
    found: np.ndarray

    @property
    def frames(self) -> int:
        return len(self.landmarks)


def load_clips(dataset: Path, names: list[str] | None = None) -> list[Clip]:
    dataset = Path(dataset)
    dirs = sorted(d for d in dataset.iterdir() if (d / "meta.json").is_file())
    if names is not None:
        dirs = [d for d in dirs if d.name in names]
    if not dirs:
        raise FacecastError(f"no prepared clips in {dataset}: run `facecast prepare-data VIDEO_DIR --out {dataset}`.")
    return [
        Clip(
            d.name,
            np.load(d / "crops.npy", mmap_mode="r"),
            np.load(d / "landmarks.npy"),
            np.load(d / "audio.npy"),
            np.load(d / "speaker.npy"),
            np.load(d / "found.npy"),
        )
        for d in dirs
    ]

"""``facecast prepare-data``: a folder of talking-face videos -> aligned crops, landmarks, audio, speaker embeddings.

Layout of a prepared dataset (one folder per clip, any folder of videos with speech works, HDTF/LRS2/VoxCeleb
style included):
    DATASET/<clip>/crops.npy      uint8 (T, 256, 256, 3)  aligned face crops at 25 fps
    DATASET/<clip>/landmarks.npy  float32 (T, 68, 2)      landmarks in crop pixels
    DATASET/<clip>/audio.npy      float32 (samples,)      16 kHz mono, cut to T * 640 samples
    DATASET/<clip>/speaker.npy    float32 (256,)          Resemblyzer embedding of the clip's voice
    DATASET/<clip>/meta.json      source, frames, speaker, found-face ratio

``facecast pack-data`` makes a compact copy for another machine (a GPU host): per clip ``crops.mp4`` (H.264,
about 40 dB PSNR against the crops at a few hundred bytes a frame, instead of 196 kB) and ``arrays.npz``
(landmarks, found, 16-bit audio, speaker). ``load_clips`` reads either layout; reading a pack needs OpenCV
only, not PyAV, dlib or Resemblyzer, which such a host may lack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..config import ModelConfig
from ..errors import FacecastError

if TYPE_CHECKING:
    from ..avatar.face import LandmarkBackend

VIDEO_SUFFIXES = {".mp4", ".mpg", ".mpeg", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
MIN_FOUND_RATIO = 0.9  # clips where the face is lost more often are skipped: their crops would be wrong


def find_videos(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)


def clip_name(video: Path, root: Path) -> str:
    return "__".join(video.relative_to(root).with_suffix("").parts)


def prepare_clip(
    video: Path, out: Path, cfg: ModelConfig, backend: LandmarkBackend, max_frames: int | None = None
) -> dict:
    # Imported here: reading a prepared dataset (below) must not need PyAV, dlib or Resemblyzer.
    from .. import media
    from ..audio import check_speech
    from ..avatar import face
    from ..avatar.prepare import aligned_crops
    from ..speaker import speaker_embedding

    audio = media.load_audio(video, cfg.audio.sample_rate)
    check_speech(audio, cfg.audio, str(video))
    frames = list(media.iter_video_frames(video, cfg.audio.fps, max_frames=max_frames))
    n = min(len(frames), len(audio) // cfg.audio.samples_per_frame)
    frames = frames[:n]
    lms, found = face.video_landmarks(frames, backend, cfg.face, str(video))
    _, crops, lms_crop = aligned_crops(frames, lms, cfg)  # as an avatar is prepared
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
    from ..avatar import face

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
    """A prepared dataset's clips (``prepare-data``'s layout or a ``pack-data`` pack), optionally only ``names``."""
    dataset = Path(dataset)
    dirs = sorted(d for d in dataset.iterdir() if (d / "meta.json").is_file()) if dataset.is_dir() else []
    if names is not None:
        dirs = [d for d in dirs if d.name in names]
    if not dirs:
        raise FacecastError(f"no prepared clips in {dataset}: run `facecast prepare-data VIDEO_DIR --out {dataset}`.")
    return [_load_packed(d) if (d / PACKED_CROPS).is_file() else _load_prepared(d) for d in dirs]


def _load_prepared(d: Path) -> Clip:
    return Clip(
        d.name,
        np.load(d / "crops.npy", mmap_mode="r"),
        np.load(d / "landmarks.npy"),
        np.load(d / "audio.npy"),
        np.load(d / "speaker.npy"),
        np.load(d / "found.npy"),
    )


# ---------------------------------------------------------------------------------------------- packs

PACKED_CROPS = "crops.mp4"
PACKED_ARRAYS = "arrays.npz"
PACK_CRF = 20  # H.264 quality: ~40 dB PSNR on face crops, well above what the 16-channel decoder gives back
PCM16_SCALE = 32767.0


def pack_dataset(dataset: Path, out: Path, skip: tuple[str, ...] = (), max_frames: int | None = None) -> dict:
    """Write a compact copy of ``dataset`` to ``out``, leaving out the clips in ``skip`` (e.g. held-out speakers)
    and cutting each clip to ``max_frames``. Returns {clip: frames}."""
    import av

    out = Path(out)
    written: dict[str, int] = {}
    for clip in tqdm(load_clips(dataset), desc="pack-data", unit="clip"):
        if clip.name in skip:
            continue
        n = clip.frames if max_frames is None else min(clip.frames, max_frames)
        folder = out / clip.name
        folder.mkdir(parents=True, exist_ok=True)
        with av.open(str(folder / PACKED_CROPS), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height = clip.crops.shape[2], clip.crops.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(PACK_CRF), "preset": "slow"}
            for image in clip.crops[:n]:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        samples = n * len(clip.audio) // clip.frames
        np.savez_compressed(
            folder / PACKED_ARRAYS,
            landmarks=clip.landmarks[:n],
            found=clip.found[:n],
            audio_pcm16=(np.clip(clip.audio[:samples], -1, 1) * PCM16_SCALE).astype(np.int16),
            speaker=clip.speaker,
        )
        (folder / "meta.json").write_text(json.dumps({"frames": int(n), "packed_from": str(dataset)}))
        written[clip.name] = int(n)
    ModelConfig.load(Path(dataset) / "config.json").save(out / "config.json")
    return written


def _load_packed(d: Path) -> Clip:
    import cv2  # OpenCV's own FFmpeg reads H.264: no PyAV needed on the machine that trains

    capture = cv2.VideoCapture(str(d / PACKED_CROPS))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(bgr[..., ::-1])
    capture.release()
    with np.load(d / PACKED_ARRAYS) as z:
        lms, found, pcm, speaker = z["landmarks"], z["found"], z["audio_pcm16"], z["speaker"]
    if len(frames) != len(lms):
        raise FacecastError(f"{d / PACKED_CROPS} decodes to {len(frames)} frames, expected {len(lms)}: pack it again.")
    audio = pcm.astype(np.float32) / PCM16_SCALE
    return Clip(d.name, np.ascontiguousarray(np.stack(frames)), lms, audio, speaker, found)

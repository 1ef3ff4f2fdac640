"""Reading and writing media with PyAV: audio to 16 kHz mono, video frames on a 25 fps grid, H.264 + AAC mp4."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .config import SAMPLE_RATE
from .errors import AudioError, InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def is_image(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}. Check the path.")
    if path.stat().st_size == 0:
        raise InputError(f"{what} file is empty: {path}.")
    return path


def load_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio (or the audio track of a video) to mono float32 at ``sample_rate``. Shape (samples,)."""
    path = _require_file(path, "audio")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path} has no audio track: give a file with speech in it.")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(audio=0):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise AudioError(f"cannot decode audio from {path} ({e}). Convert it to WAV/MP3/M4A and retry.") from e
    if not chunks:
        raise AudioError(f"{path} holds no audio samples: give a file with speech in it.")
    return np.concatenate(chunks).astype(np.float32)


@dataclass
class VideoInfo:
    fps: float
    frames: int
    width: int
    height: int
    has_audio: bool


def probe_video(path: Path) -> VideoInfo:
    path = _require_file(path, "video")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise InputError(f"{path} has no video track: give an image or a video of a face.")
            s = c.streams.video[0]
            fps = float(s.average_rate or s.guessed_rate or 25)
            n = s.frames or int(round(float(c.duration or 0) / 1e6 * fps))
            return VideoInfo(fps, n, s.codec_context.width, s.codec_context.height, bool(c.streams.audio))
    except av.error.FFmpegError as e:
        raise InputError(f"cannot open video {path} ({e}). Is it a video file?") from e


def iter_video_frames(path: Path, fps: int = 25, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 RGB frames (H, W, 3) resampled to ``fps`` by picking the frame shown at each tick."""
    path = _require_file(path, "video")
    tick = 0
    last = None
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in c.decode(stream):
                if frame.time is None:
                    continue
                img = frame.to_ndarray(format="rgb24")
                # Emit every tick whose time falls before this frame's start with the frame shown then.
                while last is not None and tick / fps < frame.time - 1e-6:
                    yield last
                    tick += 1
                    if max_frames is not None and tick >= max_frames:
                        return
                last = img
            if last is not None:
                end = float(c.duration or 0) / 1e6 if c.duration else (tick + 1) / fps
                while tick == 0 or tick / fps < end - 1e-6:
                    yield last
                    tick += 1
                    if max_frames is not None and tick >= max_frames:
                        return
    except av.error.FFmpegError as e:
        raise InputError(f"cannot decode video {path} ({e}).") from e


def load_image(path: Path) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3)."""
    path = _require_file(path, "image")
    try:
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, StopIteration) as e:
        raise InputError(f"cannot read image {path} ({e}). Give a PNG or JPEG.") from e


class Mp4Writer:
    """Writes H.264 video + AAC audio; the file appears under its final name only when closed cleanly.

    Writing goes to ``<name>.partial.mp4`` and is renamed on ``close()``, so an interrupted run never leaves a
    file that looks finished.
    """

    def __init__(
        self, path: Path, width: int, height: int, fps: int = 25, crf: int = 20, with_audio: bool = True
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.stem + ".partial.mp4")
        self.fps = fps
        self.container = av.open(str(self.tmp), mode="w")
        self.video = self.container.add_stream("libx264", rate=fps)
        self.video.width, self.video.height = width - width % 2, height - height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(crf), "preset": "veryfast"}
        # The mp4 header is written with the first packet, so the audio stream must exist before it.
        self.audio = self.container.add_stream("aac", rate=48_000) if with_audio else None
        if self.audio is not None:
            self.audio.layout = "mono"
        self.frames_written = 0

    def write(self, frame_rgb: np.ndarray) -> None:
        h, w = self.video.height, self.video.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb[:h, :w]), format="rgb24")
        frame.pts = self.frames_written
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.frames_written += 1

    def close(self, audio_16k: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE) -> Path:
        for packet in self.video.encode():
            self.container.mux(packet)
        if self.audio is not None and audio_16k is not None and len(audio_16k):
            self._write_audio(audio_16k, sample_rate)
        self.container.close()
        os.replace(self.tmp, self.path)
        return self.path

    def _write_audio(self, audio: np.ndarray, sample_rate: int) -> None:
        stream = self.audio
        # Cut the audio to the video's length so the two tracks end together.
        n = int(round(self.frames_written / self.fps * sample_rate))
        audio = audio[:n]
        frame = av.AudioFrame.from_ndarray(audio.astype(np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = 0
        for f in av.AudioResampler(format="fltp", layout="mono", rate=48_000).resample(frame):
            for packet in stream.encode(f):
                self.container.mux(packet)
        for packet in stream.encode(None):
            self.container.mux(packet)

    def abort(self) -> None:
        try:
            self.container.close()
        finally:
            self.tmp.unlink(missing_ok=True)

"""An avatar bundle's full-resolution frames as a video file beside ``avatar.npz``.

The frames (uint8 T×H×W×3, what generated faces are pasted into) were nearly all of a video avatar's bundle: 92 MB
of a 135.6 MB bundle for 250 frames of 640×360, zlib-compressed. As H.264 4:4:4 10-bit at CRF 10 they take 2.3 MB,
and decode to within invisible differences of the originals (docs/enroll.md, "Bundle size").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..errors import InputError

FRAMES_VIDEO_FILE = "frames.mp4"  # in a bundle whose avatar has at least FramesVideoConfig.min_frames frames
# Frames are coded padded to a multiple of this width, the right edge repeated; the reader cuts them back. With
# rows whose bytes do not fill the converted picture's row stride (2 bytes a sample; strides are aligned to 16 bytes
# here, up to 64 with other builds), swscale leaves the stride's tail uninitialised and x264 reads it: the same
# frames then code differently from run to run, now and then 90 grey levels off (67-pixel-wide frames, 1 run in 10).
WIDTH_MULTIPLE = 32


def _padded_width(width: int) -> int:
    return width + (-width % WIDTH_MULTIPLE)


@dataclass(frozen=True)
class FramesVideoConfig:
    """How ``Avatar.save`` encodes the frames. Chosen by measurement on a 250-frame 640×360 clip (docs/enroll.md,
    ``engine/evaluation/studies/bundle_size.py``): at 8 bits the RGB->YUV round trip alone is only 54 dB PSNR,
    before any coding; at 10 bits it is lossless, and CRF 10 gives +1 dB for 16% fewer bytes than 8-bit, and 46.8 dB
    in 2.3 MB where ``libx264rgb`` needs 3.0 MB for 46.6 dB."""

    codec: str = "libx264"
    pix_fmt: str = "yuv444p10le"  # 4:4:4: no chroma subsampling (lips and teeth keep their colour edges)
    # 10: every frame's face crop >= 45 dB PSNR on the clip above (46.8 dB over all), 2.3 MB; 12: 1.7 MB but the
    # worst frame at 43.9 dB; 8: 3.1 MB for +0.9 dB. The latents (13 MB) are most of the bundle either way.
    crf: int = 10
    preset: str = "medium"
    # Fewer frames than this (a portrait) stay in avatar.npz, exact: its one frame is under every output frame and
    # its bundle is small already (2.85 MB for an 845×1920 portrait; 0.34 MB as a one-frame video, at 45 dB).
    min_frames: int = 2


def _bundle_error(path: Path, problem: str) -> InputError:
    return InputError(
        f"avatar bundle {path.parent}: its frames video {path.name} {problem}: prepare it again "
        f"(`facecast prepare --avatar VIDEO --out {path.parent}`, or `facecast enroll` for an enrolled bundle)."
    )


def write_frames_video(path: Path, frames: np.ndarray, cfg: FramesVideoConfig = FramesVideoConfig()) -> Path:
    """Encode uint8 (T, H, W, 3) RGB frames to ``path`` (mp4); written under a temporary name and renamed, so an
    interrupted save never leaves a truncated video under the bundle's name."""
    path = Path(path)
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    _, height, width, _ = frames.shape
    pad = _padded_width(width) - width
    with av.open(str(partial), "w", format="mp4") as container:
        # The rate is nominal: frames are read back by their order, never by time.
        stream = container.add_stream(cfg.codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width + pad, height, cfg.pix_fmt
        stream.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        for i, frame in enumerate(frames):
            padded = np.pad(frame, ((0, 0), (0, pad), (0, 0)), mode="edge") if pad else np.ascontiguousarray(frame)
            picture = av.VideoFrame.from_ndarray(padded, format="rgb24").reformat(format=cfg.pix_fmt)
            picture.pts = i
            container.mux(stream.encode(picture))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    partial.replace(path)
    return path


def read_frames_video(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """Decode a bundle's frames video to uint8 (T, H, W, 3) RGB; ``shape`` is the (T, H, W) meta.json records
    (the video's frames are ``WIDTH_MULTIPLE``-padded on the right).
    A missing, unreadable or short video is an ``InputError`` that says to prepare the bundle again."""
    path = Path(path)
    if not path.is_file():
        raise _bundle_error(path, "is missing")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _bundle_error(path, "has no video track")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except av.error.FFmpegError as e:
        raise _bundle_error(path, f"cannot be decoded ({e})") from e
    count, height, width = shape
    if len(frames) != count or any(f.shape[:2] != (height, _padded_width(width)) for f in frames[:1]):
        got = f"{len(frames)} frames of {frames[0].shape[1]}×{frames[0].shape[0]}" if frames else "no frames"
        raise _bundle_error(path, f"holds {got}, not the {count} of {width}×{height} its meta.json records")
    return np.stack(frames)[:, :, :width]

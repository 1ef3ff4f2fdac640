"""LSE-D / LSE-C lip-sync scores with SyncNet (Chung & Zisserman, "Out of time", ACCV 2016 workshops).

This re-implements the computation of the public ``syncnet_python`` evaluation that Wav2Lip and most
talking-head papers report, so numbers are comparable with published tables:

* audio: 13 MFCCs at 100 Hz from 16 kHz audio (python_speech_features defaults, or an equivalent numpy
  fallback), on int16-scaled samples as the original reads them from a wav file; one audio window is
  20 MFCC frames = 0.2 s = 5 video frames;
* video: windows of 5 consecutive 224x224 face crops, BGR channel order as the original gets from OpenCV,
  raw 0..255 values, laid out as a 3-D convolution input (N, 3 channels, 5 frames, 224, 224);
* window i of video is compared with audio windows i-15 .. i+15 (``VSHIFT``; audio beyond either end is a
  zero embedding, as in the original); the distance curve is averaged over windows, then
  LSE-D = min of the curve, LSE-C = median(curve) - min(curve), offset = VSHIFT - argmin.

The offset sign matches ``metrics.sync_correlation``: positive means the mouth lags the audio (video frame i
best matches the audio of frame i - offset).

Weights: the ``syncnet_v2.model`` state dict published with syncnet_python (its ``download_model.sh``).
Nothing is downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ..errors import DependencyError, FaceError, InputError, WeightsError

CROP_PX = 224
WINDOW_FRAMES = 5  # video frames per SyncNet window (0.2 s)
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
MFCC_WINDOW = WINDOW_FRAMES * MFCC_PER_FRAME  # 20
N_MFCC = 13
VSHIFT = 15  # offsets searched, in video frames, each side
EMBED_DIM = 1024
WEIGHTS_HINT = (
    "pass --syncnet-weights PATH pointing to syncnet_v2.model, the SyncNet v2 state dict published with "
    "github.com/joonson/syncnet_python (its download_model.sh fetches it); facecast never downloads weights."
)


# ---------------------------------------------------------------------------------------------------------
# Network (parameter names follow the published state dict: netcnnaud.*, netfcaud.*, netcnnlip.*, netfclip.*)


def _conv2d_block(c_in: int, c_out: int, kernel: tuple[int, int], padding: tuple[int, int]) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=1, padding=padding), nn.BatchNorm2d(c_out), nn.ReLU()]


def _conv3d_block(
    c_in: int,
    c_out: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int] = (1, 1, 1),
    padding: tuple[int, int, int] = (0, 0, 0),
) -> list[nn.Module]:
    return [nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding), nn.BatchNorm3d(c_out), nn.ReLU()]


def _fc_head(dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim_out))


class SyncNetV2(nn.Module):
    """Two-stream SyncNet: MFCC window (N, 1, 13, 20) and face window (N, 3, 5, 224, 224) -> (N, 1024) each.

    Module indices inside each Sequential matter: they are the state-dict key names of the public weights.
    """

    def __init__(self, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        # Audio: 13x20 MFCC patch; pooling only along time first, then a (5, 4) conv collapses it to 1x1.
        self.netcnnaud = nn.Sequential(
            *_conv2d_block(1, 64, (3, 3), (1, 1)),
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),  # identity, kept so later indices line up
            *_conv2d_block(64, 192, (3, 3), (1, 1)),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
            *_conv2d_block(192, 384, (3, 3), (1, 1)),
            *_conv2d_block(384, 256, (3, 3), (1, 1)),
            *_conv2d_block(256, 256, (3, 3), (1, 1)),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
            *_conv2d_block(256, 512, (5, 4), (0, 0)),
        )
        self.netfcaud = _fc_head(embed_dim)
        # Video: the first 3-D conv spans all 5 frames, everything after it is per-frame 2-D in effect.
        self.netcnnlip = nn.Sequential(
            *_conv3d_block(3, 96, (5, 7, 7), stride=(1, 2, 2)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3d_block(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv3d_block(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_block(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_block(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3d_block(256, 512, (1, 6, 6)),
        )
        self.netfclip = _fc_head(embed_dim)

    def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, embed_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_video(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 face windows -> (N, embed_dim)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


# ---------------------------------------------------------------------------------------------------------
# Audio features


def mfcc_16k(audio_16k: np.ndarray) -> np.ndarray:
    """13 MFCCs at 100 Hz, shape (n_mfcc_frames, 13), from float audio in [-1, 1] at 16 kHz.

    Samples are rescaled to the int16 range first because the original reads 16-bit wav files; with
    ``appendEnergy`` the first coefficient is the log frame energy, which depends on that scale.
    """
    audio = np.asarray(audio_16k, dtype=np.float64)
    if audio.ndim != 1:
        raise InputError(f"audio must be mono 1-D samples at 16 kHz, got shape {audio.shape}; downmix first.")
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767)
    return np.asarray(_speech_features().mfcc(pcm, SAMPLE_RATE), dtype=np.float64)


def _speech_features():  # the python_speech_features module
    try:
        import python_speech_features
    except ImportError as e:
        raise DependencyError(
            "LSE-C/LSE-D need python_speech_features for SyncNet's MFCCs: pip install 'facecast[eval]'."
        ) from e
    return python_speech_features


# ---------------------------------------------------------------------------------------------------------
# Offset search


def offset_distances(video_emb: torch.Tensor, audio_emb: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """Distances (N, 2*vshift+1): column k compares video window i with audio window i + k - vshift.

    Audio windows outside 0..N-1 are zero vectors, as in the original (it zero-pads the audio embeddings).
    """
    if video_emb.shape != audio_emb.shape or video_emb.ndim != 2:
        raise InputError(
            f"video and audio embeddings must both be (N, D), got {tuple(video_emb.shape)} "
            f"and {tuple(audio_emb.shape)}."
        )
    n = video_emb.shape[0]
    padded = nn.functional.pad(audio_emb, (0, 0, vshift, vshift))  # (N + 2 vshift, D)
    cols = [nn.functional.pairwise_distance(video_emb, padded[k : k + n]) for k in range(2 * vshift + 1)]
    return torch.stack(cols, dim=1)


def sync_scores(dists: torch.Tensor, vshift: int = VSHIFT) -> dict[str, float | int | list[float]]:
    """LSE-D, LSE-C and offset from the (N, 2*vshift+1) distance matrix of ``offset_distances``."""
    mean_curve = dists.mean(dim=0)  # (2 vshift + 1,)
    min_val, min_idx = torch.min(mean_curve, dim=0)
    # torch.median returns the lower middle value; the curve has an odd length so this is the true median.
    conf = torch.median(mean_curve) - min_val
    return {
        "lse_d": float(min_val),
        "lse_c": float(conf),
        "offset_frames": int(vshift - int(min_idx)),
        "mean_dists": [float(v) for v in mean_curve],
    }


# ---------------------------------------------------------------------------------------------------------
# Face crops as the syncnet_python pipeline makes them


def crop_faces(frames_rgb: np.ndarray, boxes_xyxy: np.ndarray, crop_scale: float = 0.4) -> np.ndarray:
    """224x224 face crops (T, 224, 224, 3) uint8 framed the way syncnet_python's ``crop_video`` frames them.

    ``boxes_xyxy`` (T, 4) are face boxes in pixels (x0, y0, x1, y1) per frame. Box half-size and centre are
    median-filtered over 13 frames; the square crop of side 2 s (1 + crop_scale) (s = half the larger box
    side) starts s above the box centre and reaches down past the chin; outside the frame is grey 110.
    SyncNet was trained on this framing, so scores from differently framed crops are not comparable.
    """
    import cv2
    from scipy.signal import medfilt

    frames = np.asarray(frames_rgb)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be a (T, H, W, 3) uint8 RGB stack, got {frames.dtype} {frames.shape}.")
    if boxes.shape != (frames.shape[0], 4):
        raise InputError(f"boxes must be (T, 4) = (x0, y0, x1, y1) per frame; got {boxes.shape} for T={len(frames)}.")
    # The original's 13-frame median; shorter clips use the largest odd window that fits, since medfilt
    # zero-pads and a window wider than the clip would drag the box towards 0.
    kernel = min(13, (frames.shape[0] - 1) // 2 * 2 + 1)
    half = medfilt(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2, kernel)
    cy = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, kernel)
    cx = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, kernel)
    out = np.empty((frames.shape[0], CROP_PX, CROP_PX, 3), np.uint8)
    for t, frame in enumerate(frames):
        s = half[t]
        pad = int(s * (1 + 2 * crop_scale))
        padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=110)
        my, mx = cy[t] + pad, cx[t] + pad
        face = padded[
            int(my - s) : int(my + s * (1 + 2 * crop_scale)),
            int(mx - s * (1 + crop_scale)) : int(mx + s * (1 + crop_scale)),
        ]
        if face.size == 0:
            raise FaceError(f"face box in frame {t} is empty ({boxes[t].tolist()}); check the face track.")
        out[t] = cv2.resize(face, (CROP_PX, CROP_PX), interpolation=cv2.INTER_LINEAR)
    return out


# ---------------------------------------------------------------------------------------------------------
# Scorer


class SyncNetScorer:
    """Runs SyncNet on a clip of face crops plus its audio and reports LSE-C / LSE-D.

    Build with ``from_file`` (real weights) or ``random_init`` (tests only; the scores are meaningless).
    """

    def __init__(self, net: SyncNetV2, device: str | torch.device = "cpu", batch_size: int = 20) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.batch_size = batch_size

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> SyncNetScorer:
        """Load the syncnet_v2.model state dict; WeightsError if it is missing or not SyncNet v2, DependencyError
        (before any clip is generated) if python_speech_features is missing."""
        _speech_features()
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"SyncNet weights not found at {path}; {WEIGHTS_HINT}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds here (pickle, zip, unpickler policy)
            raise WeightsError(
                f"could not read SyncNet weights {path} as a torch state dict ({type(exc).__name__}: {exc}); "
                f"{WEIGHTS_HINT}"
            ) from exc
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path} is not a SyncNet state dict (expected name -> tensor); {WEIGHTS_HINT}")
        net = SyncNetV2()
        state = dict(state)
        # The published file predates BatchNorm's num_batches_tracked buffer; it is unused in eval mode.
        for key, buf in net.state_dict().items():
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = torch.zeros_like(buf)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            missing = sorted(set(net.state_dict()) - set(state))
            unexpected = sorted(set(state) - set(net.state_dict()))
            raise WeightsError(
                f"{path} does not match the SyncNet v2 architecture (missing keys: {missing[:5]}, "
                f"unexpected keys: {unexpected[:5]}, or shape mismatches); {WEIGHTS_HINT}"
            ) from exc
        return cls(net, device=device)

    @classmethod
    def random_init(cls, seed: int = 0, device: str | torch.device = "cpu") -> SyncNetScorer:
        """Randomly initialised network, for tests of shapes and plumbing only."""
        with torch.random.fork_rng(devices=[]):  # do not disturb the caller's CPU random stream
            torch.manual_seed(seed)
            net = SyncNetV2()
        return cls(net, device=device)

    def _video_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 RGB -> (T, 3, 224, 224) uint8 BGR, resized like the original crop pipeline."""
        import cv2  # project dependency; same bilinear resize the syncnet_python crop step uses

        out = np.empty((frames.shape[0], CROP_PX, CROP_PX, 3), dtype=np.uint8)
        for t, frame in enumerate(frames):
            if frame.shape[:2] != (CROP_PX, CROP_PX):
                frame = cv2.resize(frame, (CROP_PX, CROP_PX), interpolation=cv2.INTER_LINEAR)
            out[t] = frame[:, :, ::-1]  # RGB -> BGR: the network was trained on OpenCV-decoded frames
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    @torch.no_grad()
    def embed(self, frames_uint8: np.ndarray, audio_16k: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Video and audio embeddings (N_windows, 1024) each, N_windows = min(T, len(audio) // 640) - 5."""
        frames = np.asarray(frames_uint8)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(
                f"SyncNet needs face crops as a (T, H, W, 3) uint8 RGB stack, got {frames.dtype} {frames.shape}."
            )
        audio = np.asarray(audio_16k)
        if audio.ndim != 1:
            raise InputError(f"audio must be mono 1-D samples at 16 kHz, got shape {audio.shape}; downmix first.")
        n_frames = min(frames.shape[0], audio.shape[0] // SAMPLES_PER_FRAME)
        # The original stops one window early (range(0, n - 5)); kept so window counts match published runs.
        n_windows = n_frames - WINDOW_FRAMES
        if n_windows < 1:
            raise InputError(
                f"SyncNet needs at least {WINDOW_FRAMES + 1} frames ({(WINDOW_FRAMES + 1) / FPS:.2f} s) "
                f"of both video and audio; got {frames.shape[0]} frames and {audio.shape[0]} samples "
                f"({audio.shape[0] / SAMPLE_RATE:.2f} s). Score a longer clip."
            )

        mfcc = torch.from_numpy(mfcc_16k(audio).T.astype(np.float32))  # (13, n_mfcc)
        video = self._video_tensor(frames[:n_frames])  # (T, 3, 224, 224) uint8; float only per batch
        vid_emb, aud_emb = [], []
        for start in range(0, n_windows, self.batch_size):
            idx = range(start, min(n_windows, start + self.batch_size))
            # (B, 5, 3, H, W) -> (B, 3, 5, H, W): channels first, the 5 frames as the 3-D conv's depth.
            v = torch.stack([video[i : i + WINDOW_FRAMES] for i in idx]).permute(0, 2, 1, 3, 4)
            a = torch.stack([mfcc[:, i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + MFCC_WINDOW] for i in idx])
            vid_emb.append(self.net.forward_video(v.to(self.device, torch.float32)).cpu())
            aud_emb.append(self.net.forward_audio(a.unsqueeze(1).to(self.device)).cpu())
        return torch.cat(vid_emb), torch.cat(aud_emb)

    def score(self, frames_uint8: np.ndarray, audio_16k: np.ndarray) -> dict[str, float | int | list[float]]:
        """LSE-C / LSE-D of face crops (T, H, W, 3) uint8 RGB with their 16 kHz mono audio.

        Crops are resized to 224x224; frame them like ``crop_faces`` for numbers comparable with papers.

        Returns ``lse_c`` (higher = better sync), ``lse_d`` (lower = better), ``offset_frames`` (positive =
        mouth lags audio), ``n_windows`` and ``mean_dists`` (31 values; ``mean_dists[k]`` is the mean
        distance at offset ``15 - k``).
        """
        vid_emb, aud_emb = self.embed(frames_uint8, audio_16k)
        out = sync_scores(offset_distances(vid_emb, aud_emb, VSHIFT), VSHIFT)
        out["n_windows"] = int(vid_emb.shape[0])
        return out

"""The small protocol the engine calls to run its networks; ``export`` implements it (torch, onnxruntime, TensorRT).

Everything crosses it as float32 numpy arrays, so a backend needs nothing from torch, and neither does the engine
around it: with an export folder (onnxruntime, TensorRT) the process never imports torch or diffusers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .config import ModelConfig

if TYPE_CHECKING:
    from .mouth_prior import MouthPrior

# Which fitted weights a model call runs: an enrolled bundle (``facecast enroll``: its A2L and L2V adapter), or None
# for the loaded model's own. It belongs to the avatar (``Avatar.enrolment``) and travels with each call, so one
# backend serves enrolled and plain sessions side by side. A call on the model's own weights passes no ``weights``
# at all: a backend that cannot run enrolments (it has no ``load_enrolment``, and ``avatar.check_backend`` refuses
# enrolled avatars on it) implements the plain signatures below.
Weights = Path | None


def weights_keyword(weights: Weights) -> dict[str, Weights]:
    """The keyword a backend call names its weights with: none for the model's own (``Weights``)."""
    return {} if weights is None else {"weights": weights}


class Backend(Protocol):
    name: str
    cfg: ModelConfig  # the config the networks were built with (the model's, or the export's copy of it)
    # checkpoint.file_hash of the autoencoder the networks came from: avatar bundles (whose latents that encoder
    # made) are keyed by it, so a bundle prepared with one backend fits every backend of the same model.
    autoencoder_hash: str
    # The learned mouth prior beside the weights (``mouth_prior.load_mouth_prior``); None for older models.
    mouth_prior: MouthPrior | None

    def a2l(
        self,
        mel_frames: np.ndarray,
        speaker: np.ndarray,
        reference_px: np.ndarray,
        state: np.ndarray,
        weights: Weights = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """mel_frames (1, T, 320) log-mel or (1, T, 768) Whisper tokens (``A2LConfig.audio_features``),
        speaker (1, 256), reference_px (1, 68, 2), state (layers, 1, hidden)
        -> displacements (1, T, 37, 2) in crop pixels, new state. ``weights``: see ``Weights``."""
        ...

    def speech_encoder(self, mel: np.ndarray) -> np.ndarray:
        """Whisper's first encoder blocks (``engine/whisper.py``), for models whose A2L hears them: Whisper log-mel
        of live windows (B, 80, F) -> the tokens A2L reads (B, ``SpeechEncoderConfig.output_tokens``, 384)."""
        ...

    def denoise(
        self,
        noisy: np.ndarray,
        timestep: np.ndarray,
        masked: np.ndarray,
        identity: np.ndarray,
        previous: np.ndarray,
        heatmaps: np.ndarray,
        driven_px: np.ndarray,
        mel_window: np.ndarray,
        weights: Weights = None,
    ) -> np.ndarray:
        """One L2V call: latents (B, C, 32, 32), timestep (B,) int64, heatmaps (B, 3, 32, 32),
        driven_px (B, 37, 2), mel_window (B, 5, 320) -> predicted clean latent (B, C, 32, 32). Every frame of one
        call runs the same ``weights`` (see ``Weights``)."""
        ...

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(B, C, h, 32) latents -> (B, 3, 8h, 256) images in [-1, 1]."""
        ...

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) images in [-1, 1] -> (B, C, H/8, W/8) latents."""
        ...

    def speaker_partials(self, mels: np.ndarray) -> np.ndarray:
        """Resemblyzer's voice network (``speaker.py``): (N, 160, 40) mel partials -> (N, 256) unit-norm
        partial embeddings."""
        ...

    def a2l_state_shape(self) -> tuple[int, ...]: ...

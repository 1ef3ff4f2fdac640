"""The reference backend: the trained torch modules, eager, on CPU (or CUDA with fp16 when asked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facecast.engine import checkpoint
from facecast.engine.avatar.adapters import enrolled_a2l, l2v_hash, merged_l2v
from facecast.engine.avatar.prepare import has_adapter, model_hash
from facecast.engine.backend import Weights
from facecast.engine.config import ModelConfig
from facecast.engine.errors import WeightsError
from facecast.engine.mouth_prior import MouthPrior, load_mouth_prior
from facecast.engine.speaker import resemblyzer_partials
from facecast.engine.whisper import load_speech_encoder


class TorchBackend:
    name = "torch"

    def __init__(self, model_dir: Path, device: str = "cpu", fp16: bool = False) -> None:
        self.cfg: ModelConfig = checkpoint.load_config(model_dir)
        self.device = torch.device(device)
        self.dtype = torch.float16 if fp16 and self.device.type == "cuda" else torch.float32
        parts = {p: checkpoint.load_part(model_dir, p, self.cfg).to(self.device, self.dtype) for p in checkpoint.PARTS}
        self.codec, self.a2l_net, self.l2v = parts["autoencoder"], parts["a2l"], parts["l2v"]
        self.model_dir = Path(model_dir)
        # Whisper's first encoder blocks, when A2L hears them (A2LConfig.audio_features):
        # it runs where the other networks run.
        self.speech_net = (
            load_speech_encoder(self.model_dir, self.cfg.speech).to(self.device, self.dtype)
            if self.cfg.a2l.audio_features == "whisper"
            else None
        )
        self.autoencoder_hash: str = model_hash(self.model_dir)
        self.mouth_prior: MouthPrior | None = load_mouth_prior(self.model_dir)
        # (A2L, L2V) per enrolled bundle, next to the model's own (``a2l_net``, ``l2v``, which never change)
        self._enrolled: dict[Path, tuple[torch.nn.Module, torch.nn.Module]] = {}

    def load_enrolment(self, bundle: Path) -> None:
        """Make calls with ``weights=bundle`` run its L2V (the model's L2V with the bundle's adapter merged, a copy)
        and A2L (its own, or a copy of the model's at the person's motion gain). The model's own weights, the calls
        that name other weights, and the files are never changed. Loads once per bundle."""
        key = Path(bundle).resolve()
        if key not in self._enrolled:
            # A bundle enrolled on a model that shows no L2V picture has no adapter: the model's own L2V.
            l2v = self.l2v
            if has_adapter(key):
                l2v = merged_l2v(self.l2v, key, l2v_hash(self.model_dir)).to(self.device, self.dtype)
            a2l = enrolled_a2l(key, self.cfg, self.a2l_net)
            self._enrolled[key] = (self.a2l_net if a2l is None else a2l.to(self.device, self.dtype), l2v)

    def networks(self, weights: Weights = None) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(A2L, L2V) that calls naming ``weights`` run (loaded on first use, should ``load_enrolment`` not have
        run: a session must never fall back to another person's weights)."""
        if weights is None:
            return self.a2l_net, self.l2v
        key = Path(weights).resolve()
        if key not in self._enrolled:
            self.load_enrolment(key)
        return self._enrolled[key]

    def _t(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return t if not t.is_floating_point() else t.to(self.dtype)

    @staticmethod
    def _np(x: torch.Tensor) -> np.ndarray:
        return x.float().cpu().numpy()

    @torch.inference_mode()
    def a2l(self, mel_frames, speaker, reference_px, state, weights=None):  # see engine.backend.Backend
        a2l = self.networks(weights)[0]
        disp, state = a2l(self._t(mel_frames), self._t(speaker), self._t(reference_px), self._t(state))
        return self._np(disp), self._np(state)

    @torch.inference_mode()
    def speech_encoder(self, mel: np.ndarray) -> np.ndarray:  # see engine.backend.Backend
        if self.speech_net is None:
            raise WeightsError(f"{self.model_dir}'s A2L hears log-mel: it has no speech encoder to run")
        return self._np(self.speech_net(self._t(mel)))

    @torch.inference_mode()
    def denoise(self, noisy, timestep, masked, identity, previous, heatmaps, driven_px, mel_window, weights=None):
        out = self.networks(weights)[1](
            self._t(noisy),
            self._t(timestep),
            self._t(masked),
            self._t(identity),
            self._t(previous),
            self._t(heatmaps),
            self._t(driven_px),
            self._t(mel_window),
        )
        return self._np(out)

    @torch.inference_mode()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        return self._np(self.codec.decode(self._t(latents)))

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> np.ndarray:
        return self._np(self.codec.encode(self._t(images)))

    def speaker_partials(self, mels: np.ndarray) -> np.ndarray:
        return resemblyzer_partials()(mels)

    def a2l_state_shape(self) -> tuple[int, ...]:
        return (self.cfg.a2l.layers, 1, self.cfg.a2l.state_width)

"""Optional learned metrics: LPIPS (AlexNet), tLP, and FID. They need weight files the user supplies.

Nothing is downloaded: every loader takes local paths and raises WeightsError naming the flag to pass and
where such a file comes from.

* LPIPS v0.1 (Zhang et al. 2018), AlexNet variant: torchvision's ImageNet AlexNet ``features`` (file
  ``alexnet-owt-7be5be79.pth``) plus the five 1x1 linear heads of the ``lpips`` package (``weights/v0.1/
  alex.pth``). Images are mapped to [-1, 1], shifted/scaled by the LPIPS constants, the five ReLU outputs
  are unit-normalised across channels, squared differences are weighted by the heads, averaged over space
  and summed over layers.
* tLP (TecoGAN, Chu et al. 2020): per consecutive pair, |LPIPS(fake_t-1, fake_t) - LPIPS(real_t-1, real_t)|,
  averaged; 0 when the fake changes perceptually as much as the real between frames.
* FID: 2048-d pool features of a TorchScript Inception (``inception-2015-12-05.pt`` from the StyleGAN2-ADA /
  StyleGAN3 metrics, called as ``model(uint8 NCHW, return_features=True)``), then the Frechet distance of
  the two Gaussians.

Why by hand and not ``lpips`` / ``pytorch-fid`` / torchmetrics (torch-fidelity): all of them import torchvision,
whose wheels pin one torch version each, and none matches the pinned torch==2.13.0 CPU build, so they cannot be
installed beside it (checked for issue 12). The code here follows their definitions and loads the same weight
files; swap them in when a torchvision for the pinned torch exists.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError, WeightsError

LPIPS_CHANNELS = (64, 192, 384, 256, 256)  # AlexNet relu1..relu5
# LPIPS v0.1 input normalisation, applied after mapping uint8 to [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_MIN_PX = 32  # below this AlexNet's pools run out of pixels
# Indices into torchvision's ``alexnet().features`` after which LPIPS taps relu1..relu5.
_ALEX_TAPS = (1, 4, 7, 9, 11)

LPIPS_HINT = (
    "pass --lpips-backbone PATH (torchvision's ImageNet AlexNet, alexnet-owt-7be5be79.pth, e.g. from "
    "~/.cache/torch/hub/checkpoints after torchvision.models.alexnet(weights='IMAGENET1K_V1')) and "
    "--lpips-linear PATH (alex.pth from the lpips package, lpips/weights/v0.1/alex.pth); "
    "facecast never downloads weights."
)
FID_HINT = (
    "pass --fid-inception PATH pointing to a TorchScript Inception feature extractor such as "
    "inception-2015-12-05.pt (the file the StyleGAN2-ADA/StyleGAN3 metrics use, published on NVIDIA's "
    "stylegan2-ada-pytorch pretrained site); facecast never downloads weights."
)


# ---------------------------------------------------------------------------------------------------------
# Shared helpers


def _image_stack(x: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W, 3) uint8; a single HWC image becomes N = 1."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise InputError(f"{name} must be uint8 RGB images, HWC or NHWC, got {x.dtype} {x.shape}.")
    if x.shape[0] == 0:
        raise InputError(f"{name} is empty (0 images); nothing to measure.")
    return x


def _load_state(path: Path, what: str, hint: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{what} weights not found at {path}; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds here (pickle, zip, unpickler policy)
        raise WeightsError(
            f"could not read {path} as a torch state dict ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict of tensors, so it cannot be the {what} weights; {hint}")
    return dict(state)


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str, hint: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        expected = set(module.state_dict())
        missing = sorted(expected - set(state))[:5]
        unexpected = sorted(set(state) - expected)[:5]
        raise WeightsError(
            f"{path} does not match the {what} architecture (missing keys: {missing}, unexpected keys: "
            f"{unexpected}, or shape mismatches); {hint}"
        ) from exc


# ---------------------------------------------------------------------------------------------------------
# LPIPS


class _LinearHead(nn.Module):
    """One LPIPS head; ``model.0`` is a no-op dropout (eval) so the conv is ``model.1``, as in alex.pth."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPSNet(nn.Module):
    """AlexNet trunk (``features.*`` keys as in torchvision) + heads ``lin0..lin4`` (keys as in lpips)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # unused by LPIPS; keeps torchvision's indexing
        )
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (_LinearHead(c) for c in LPIPS_CHANNELS)
        # Not persistent: neither published file carries them.
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def heads(self) -> list[_LinearHead]:
        return [self.lin0, self.lin1, self.lin2, self.lin3, self.lin4]

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """relu1..relu5 activations of (N, 3, H, W) images already normalised for LPIPS."""
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _ALEX_TAPS:
                outs.append(x)
                if i == _ALEX_TAPS[-1]:
                    break
        return outs

    def forward(self, a_uint8_nchw: torch.Tensor, b_uint8_nchw: torch.Tensor) -> torch.Tensor:
        """(N,) LPIPS distances of two uint8 (N, 3, H, W) batches."""
        xa = ((a_uint8_nchw.float() / 127.5 - 1.0) - self.shift) / self.scale
        xb = ((b_uint8_nchw.float() / 127.5 - 1.0) - self.shift) / self.scale
        total = torch.zeros(xa.shape[0], device=xa.device)
        for fa, fb, head in zip(self.taps(xa), self.taps(xb), self.heads(), strict=True):
            # Unit length across channels per position; the 1e-10 matches lpips and avoids 0/0 on dead units.
            fa = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fb = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + head((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return total


class LPIPS:
    """Callable LPIPS: ``lpips(a, b)`` on uint8 (N, H, W, 3) stacks (or single images) -> (N,) distances."""

    def __init__(self, net: LPIPSNet, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.batch_size = batch_size

    @classmethod
    def from_files(
        cls, backbone_path: str | Path, linear_path: str | Path, device: str | torch.device = "cpu"
    ) -> LPIPS:
        """Load torchvision AlexNet weights (only ``features.*`` is used) and the lpips ``alex.pth`` heads."""
        backbone_path, linear_path = Path(backbone_path), Path(linear_path)
        backbone = _load_state(backbone_path, "LPIPS AlexNet backbone", LPIPS_HINT)
        linear = _load_state(linear_path, "LPIPS linear-head", LPIPS_HINT)
        net = LPIPSNet()
        # The torchvision file also holds the classifier, which LPIPS does not use.
        features = {k.removeprefix("features."): v for k, v in backbone.items() if k.startswith("features.")}
        _load_strict(net.features, features, backbone_path, "AlexNet features", LPIPS_HINT)
        heads = nn.ModuleDict({f"lin{i}": h for i, h in enumerate(net.heads())})
        _load_strict(heads, linear, linear_path, "LPIPS AlexNet linear-head (lin0..lin4)", LPIPS_HINT)
        return cls(net, device=device)

    @classmethod
    def random_init(cls, seed: int = 0, device: str | torch.device = "cpu") -> LPIPS:
        """Random trunk and non-negative random heads (published heads are non-negative too); tests only."""
        with torch.random.fork_rng(devices=[]):  # the caller's CPU random stream is left as it was
            torch.manual_seed(seed)
            net = LPIPSNet()
            with torch.no_grad():
                for head in net.heads():
                    head.model[1].weight.abs_()
        return cls(net, device=device)

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = _image_stack(a, "first images"), _image_stack(b, "second images")
        if a.shape != b.shape:
            raise InputError(f"LPIPS needs two stacks of the same shape, got {a.shape} and {b.shape}.")
        if min(a.shape[1:3]) < LPIPS_MIN_PX:
            raise InputError(f"LPIPS needs images of at least {LPIPS_MIN_PX}x{LPIPS_MIN_PX}, got {a.shape[1:3]}.")
        out = []
        for s in range(0, a.shape[0], self.batch_size):
            ta = torch.from_numpy(np.ascontiguousarray(a[s : s + self.batch_size])).permute(0, 3, 1, 2)
            tb = torch.from_numpy(np.ascontiguousarray(b[s : s + self.batch_size])).permute(0, 3, 1, 2)
            out.append(self.net(ta.to(self.device), tb.to(self.device)).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


def temporal_lpips(lpips: Callable[[np.ndarray, np.ndarray], np.ndarray], frames: np.ndarray) -> np.ndarray:
    """LPIPS between consecutive frames, (T - 1,): how much the video changes perceptually per step."""
    frames = _image_stack(frames, "frames")
    if frames.shape[0] < 2:
        raise InputError("temporal LPIPS needs at least 2 frames, got 1.")
    return lpips(frames[:-1], frames[1:])


def tlp(lpips: Callable[[np.ndarray, np.ndarray], np.ndarray], fake: np.ndarray, real: np.ndarray) -> float:
    """tLP (TecoGAN): mean over consecutive pairs of |LPIPS step of fake - of real|; lower is better."""
    fake, real = _image_stack(fake, "fake frames"), _image_stack(real, "real frames")
    if fake.shape[0] != real.shape[0]:
        raise InputError(
            f"tLP pairs frames one to one; fake has {fake.shape[0]} frames, real {real.shape[0]}. Trim both."
        )
    return float(np.mean(np.abs(temporal_lpips(lpips, fake) - temporal_lpips(lpips, real))))


# ---------------------------------------------------------------------------------------------------------
# FID


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) between two Gaussians."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise InputError(
            f"Frechet distance needs means (D,) and covariances (D, D) of one D, got {mu1.shape}, "
            f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}."
        )
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        # Singular products (fewer samples than dimensions) can fail; a tiny ridge makes sqrtm well defined.
        ridge = np.eye(d) * 1e-6
        covmean = linalg.sqrtm((sigma1 + ridge) @ (sigma2 + ridge))
    # Round-off gives sqrtm a small imaginary part; the true root of a product of PSD matrices has real trace.
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features, as FID uses them."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise InputError(f"FID statistics need (N >= 2, D) features, got shape {feats.shape}.")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


class FrechetDistance:
    """FID with a user-supplied TorchScript Inception: ``fid(real_frames, fake_frames) -> float``.

    FID is biased at small N; papers use thousands of frames, so compare numbers only at equal N.
    """

    def __init__(self, model: torch.jit.ScriptModule, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size

    @classmethod
    def from_torchscript(cls, path: str | Path, device: str | torch.device = "cpu") -> FrechetDistance:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"FID Inception model not found at {path}; {FID_HINT}")
        try:
            with warnings.catch_warnings():
                # The published Inception is TorchScript; torch's deprecation notice is not actionable here.
                warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*jit.*")
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch.jit raises RuntimeError and friends for non-TorchScript files
            raise WeightsError(
                f"{path} is not a loadable TorchScript model ({type(exc).__name__}: {exc}); {FID_HINT}"
            ) from exc
        return cls(model, device=device)

    @torch.no_grad()
    def features(self, frames: np.ndarray) -> np.ndarray:
        """(N, 2048) float64 pool features of uint8 (N, H, W, 3) frames (the model resizes internally)."""
        frames = _image_stack(frames, "frames")
        out = []
        for s in range(0, frames.shape[0], self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[s : s + self.batch_size])).permute(0, 3, 1, 2)
            try:
                feats = self.model(batch.to(self.device), return_features=True)
            except Exception as exc:  # a TorchScript model with another calling convention
                raise WeightsError(
                    f"the FID model rejected uint8 NCHW input with return_features=True ({exc}); {FID_HINT}"
                ) from exc
            if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
                raise WeightsError(f"the FID model did not return (N, D) features; {FID_HINT}")
            out.append(feats.double().cpu().numpy())
        return np.concatenate(out)

    def statistics(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature mean (D,) and covariance (D, D) of uint8 (N, H, W, 3) frames."""
        return gaussian_stats(self.features(frames))

    def __call__(self, real_frames: np.ndarray, fake_frames: np.ndarray) -> float:
        return frechet_distance(*self.statistics(real_frames), *self.statistics(fake_frames))

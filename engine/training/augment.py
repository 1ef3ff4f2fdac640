"""Augmented copies of a training clip's speech for the Whisper A2L (``TrainConfig.a2l_aug_*``).

Whisper features are computed once per clip (``train.cached_a2l_features``): the log-mel A2L's per-batch
augmentations cannot reach them. Instead each training clip gets ``a2l_aug_copies`` other versions of its *audio*,
each run through the same ``SpeechFeatureStream`` as the clean one (so A2L trains on exactly what a live session
computes for that audio) and cached beside the clean features.

Every change keeps the clip's length and time axis, so the clip's landmarks stay the targets frame for frame:

- another voice: the pitch scaled by a factor drawn in [1 / (1 + ``pitch``), 1 + ``pitch``] and, independently, the
  formants (the spectral envelope: a vocal tract of another length) by one in [1 / (1 + ``formant``), 1 +
  ``formant``]. The pitch shift is librosa's (a phase-vocoder time stretch, then resampling back to the clip's
  length: the whole spectrum moves); the envelope is then warped in the STFT (cepstrally smoothed log magnitude,
  the phase kept) by formant / pitch, so the two factors are independent. No tempo change: that would need the
  landmarks retimed.
- a room: with probability ``reverb``, a synthetic impulse response (direct path at lag 0, then an exponentially
  decaying noise tail, RT60 0.15-0.5 s): nothing moves earlier, offsets get a tail as in a real room.
- a microphone's noise: with probability ``noise``, coloured Gaussian noise (spectral slope 0 to -1.5, white to
  nearly brown) at an SNR drawn in ``snr_db`` against the clip's RMS.

The draws are seeded by (``a2l_aug_seed``, copy index, clip name), so a copy is the same audio in every run and the
cached features stay valid.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..config import SAMPLE_RATE

STFT_FFT, STFT_HOP = 512, 128  # 32 ms / 8 ms: fine enough in time that no onset moves by a video frame (40 ms)
LIFTER = 24  # cepstral coefficients kept for the envelope (pitch periods are >= 40 samples at 16 kHz, 400 Hz)
RT60_S = (0.15, 0.5)
NOISE_SLOPE = (0.0, 1.5)


@dataclass(frozen=True)
class AudioAugment:
    """One augmentation recipe (from ``TrainConfig``: ``augment_recipe``). All off: the audio comes back as it is."""

    pitch: float = 0.0
    formant: float = 0.0
    reverb: float = 0.0
    noise: float = 0.0
    snr_db: tuple[float, float] = (10.0, 30.0)
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.pitch or self.formant or self.reverb or self.noise)

    def rng(self, copy: int, clip_name: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, copy, zlib.crc32(clip_name.encode())])


def _log_uniform(rng: np.random.Generator, spread: float) -> float:
    return float(np.exp(rng.uniform(-np.log1p(spread), np.log1p(spread)))) if spread else 1.0


def _stft(x: np.ndarray) -> np.ndarray:
    import librosa

    return librosa.stft(x, n_fft=STFT_FFT, hop_length=STFT_HOP)


def warp_envelope(audio: np.ndarray, factor: float) -> np.ndarray:
    """Move the spectral envelope (formants) by ``factor`` (> 1: up, a shorter vocal tract), keeping the harmonics
    (pitch), the phase and the length: each STFT frame's magnitude times warped envelope / envelope."""
    import librosa

    if factor == 1.0:
        return audio
    spec = _stft(audio)
    log_mag = np.log(np.abs(spec) + 1e-8)  # (bins, frames)
    cep = np.fft.irfft(log_mag, axis=0)
    cep[LIFTER:-LIFTER] = 0.0
    env = np.fft.rfft(cep, axis=0).real[: spec.shape[0]]  # smoothed log magnitude
    bins = np.arange(spec.shape[0], dtype=np.float64)
    src = np.clip(bins / factor, 0, bins[-1])
    warped = np.stack([np.interp(src, bins, e) for e in env.T], axis=1)
    gain = np.exp(np.clip(warped - env, -10.0, 10.0))
    out = librosa.istft(spec * gain, hop_length=STFT_HOP, n_fft=STFT_FFT, length=len(audio))
    return out.astype(np.float32)


def shift_pitch(audio: np.ndarray, factor: float) -> np.ndarray:
    """The whole spectrum (pitch and formants) scaled by ``factor``, the length and time axis kept."""
    import librosa

    if factor == 1.0:
        return audio
    out = librosa.effects.pitch_shift(
        audio, sr=SAMPLE_RATE, n_steps=12 * np.log2(factor), n_fft=STFT_FFT, hop_length=STFT_HOP
    )
    return librosa.util.fix_length(out, size=len(audio)).astype(np.float32)


def room(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: direct path at lag 0 plus an exponentially decaying noise tail; the RMS kept."""
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(*RT60_S)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    ir = rng.normal(0, 1, len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir *= rng.uniform(0.2, 0.6) / np.sqrt(np.sum(ir**2))  # tail energy against the direct path's 1
    ir[0] = 1.0
    out = fftconvolve(audio, ir)[: len(audio)]
    return (out * _rms(audio) / max(_rms(out), 1e-9)).astype(np.float32)


def add_noise(audio: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """Coloured Gaussian noise (power ~ f^-slope) at an SNR drawn from ``snr_db`` against the clip's RMS."""
    white = np.fft.rfft(rng.normal(0, 1, len(audio)))
    f = np.maximum(np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE), 20.0)
    noise = np.fft.irfft(white * f ** (-rng.uniform(*NOISE_SLOPE) / 2), n=len(audio))
    snr = rng.uniform(*snr_db)
    noise *= _rms(audio) / max(_rms(noise), 1e-12) * 10 ** (-snr / 20)
    return (audio + noise).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def augment_audio(audio: np.ndarray, recipe: AudioAugment, rng: np.random.Generator) -> np.ndarray:
    """One augmented version of ``audio`` (16 kHz float32), same length and time axis. The draws come in a fixed
    order, whatever is on, so a recipe's copy depends only on its seed."""
    audio = np.asarray(audio, np.float32)
    pitch, formant = _log_uniform(rng, recipe.pitch), _log_uniform(rng, recipe.formant)
    use_room, use_noise = rng.random() < recipe.reverb, rng.random() < recipe.noise
    room_rng, noise_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 2))
    out = shift_pitch(audio, pitch)
    out = warp_envelope(out, formant / pitch)
    if use_room:
        out = room(out, room_rng)
    if use_noise:
        out = add_noise(out, noise_rng, recipe.snr_db)
    # no clipping beyond what a microphone would do: Whisper's log-mel is level-normalised per window anyway
    return np.clip(out, -1.0, 1.0).astype(np.float32)

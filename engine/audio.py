"""Log-mel features on the 25 fps grid, offline and as a stateful stream that gives the same numbers.

Mel frame m is the window of ``win_samples`` that *ends* at sample ``hop_samples * (m + 1)``: a causal layout,
so video frame n (samples [640n, 640(n+1))) owns mel frames 4n .. 4n+3 and needs no audio from later frames.
The signal is taken as zero before its start.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .config import AudioConfig
from .errors import AudioError


@lru_cache(maxsize=8)
def mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float = 0.0, fmax_hz: float | None = None, htk: bool = False
) -> np.ndarray:
    """Triangular mel filters with Slaney's equal-area norm, (n_mels, n_fft // 2 + 1) float32, read-only and made
    once per setting (every session's log-mel, Whisper's windows, each speaker embedding ask again): what
    ``librosa.filters.mel(..., htk=htk, norm="slaney")`` gives (tests/test_audio.py checks it to 1e-6).

    Written out because importing librosa takes 0.6-1.1 s, which every fresh process (a server, a bench) paid
    before its first frame: the log-mel here, Whisper's and Resemblyzer's speaker mels all need only this."""
    fmax_hz = sample_rate / 2 if fmax_hz is None else fmax_hz
    if htk:

        def hz_to_mel(f: np.ndarray) -> np.ndarray:
            return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)

        def mel_to_hz(m: np.ndarray) -> np.ndarray:
            return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)

    else:  # Slaney: linear below 1 kHz, logarithmic above
        f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0

        def hz_to_mel(f: np.ndarray) -> np.ndarray:
            f = np.asarray(f, np.float64)
            log = min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep
            return np.where(f >= min_log_hz, log, f / f_sp)

        def mel_to_hz(m: np.ndarray) -> np.ndarray:
            m = np.asarray(m, np.float64)
            return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2))
    gaps = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None]
    lower = -ramps[:-2] / gaps[:-1, None]
    upper = ramps[2:] / gaps[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)  # shared by every caller through the cache
    return weights


def mel_filterbank(cfg: AudioConfig) -> np.ndarray:
    """The log-mel's filters: HTK mel scale, Slaney's equal-area norm, (n_mels, n_fft // 2 + 1)."""
    return mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin_hz, cfg.fmax_hz, htk=True)


def centred_power_spectrum(x: np.ndarray, n_fft: int, hop: int, pad_mode: str) -> np.ndarray:
    """|STFT|² of each row of ``x`` (B, samples) with a periodic Hann window, frames centred on multiples of
    ``hop`` (the signal padded by n_fft // 2 each side, ``pad_mode`` as numpy's): (B, 1 + samples // hop, bins)."""
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    half = n_fft // 2
    padded = np.pad(x, ((0, 0), (half, half)), mode=pad_mode)
    frames = 1 + x.shape[1] // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    return (np.abs(np.fft.rfft(padded[:, idx] * window, axis=-1)) ** 2).astype(np.float32)


class MelExtractor:
    """Stateful log-mel extractor: ``push(chunk)`` returns the mel frames completed by that chunk.

    Any split of the same signal into chunks gives the same frames as one ``push`` of the whole.
    """

    def __init__(self, cfg: AudioConfig = AudioConfig()) -> None:
        self.cfg = cfg
        self.window = np.hanning(cfg.win_samples + 2)[1:-1].astype(np.float32)
        self.filters = mel_filterbank(cfg)
        self.reset()

    def reset(self) -> None:
        # Zeros stand for the signal before its start, so the first windows are complete.
        self._buffer = np.zeros(self.cfg.win_samples - self.cfg.hop_samples, np.float32)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """chunk: float32 samples at 16 kHz, any length. Returns (new_mel_frames, n_mels)."""
        cfg = self.cfg
        self._buffer = np.concatenate([self._buffer, np.asarray(chunk, np.float32).reshape(-1)])
        n = (len(self._buffer) - cfg.win_samples) // cfg.hop_samples + 1
        if n <= 0:
            return np.zeros((0, cfg.n_mels), np.float32)
        idx = np.arange(cfg.win_samples)[None, :] + cfg.hop_samples * np.arange(n)[:, None]
        frames = self._buffer[idx] * self.window
        power = np.abs(np.fft.rfft(frames, n=cfg.n_fft, axis=1)) ** 2
        mel = np.log(np.maximum(power @ self.filters.T, cfg.log_floor)).astype(np.float32)
        self._buffer = self._buffer[n * cfg.hop_samples :]
        return mel


def log_mel(audio_16k: np.ndarray, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Offline log-mel of a whole signal: (mel_frames, n_mels), mel_frames = samples // hop."""
    return MelExtractor(cfg).push(audio_16k)


def mel_per_video_frame(mel: np.ndarray, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Group mel frames by video frame: (mel_frames, n_mels) -> (video_frames, mels_per_frame * n_mels)."""
    k = cfg.mels_per_frame
    n = len(mel) // k
    return mel[: n * k].reshape(n, k * mel.shape[1])


def check_speech(audio_16k: np.ndarray, cfg: AudioConfig = AudioConfig(), name: str = "audio") -> None:
    """Refuse audio that cannot drive a face: empty, non-finite, or silent throughout."""
    if audio_16k.size < cfg.samples_per_frame:
        raise AudioError(f"{name} is shorter than one video frame (40 ms): give at least a second of speech.")
    if not np.all(np.isfinite(audio_16k)):
        raise AudioError(f"{name} contains NaN or infinite samples: re-export it as plain PCM.")
    rms = float(np.sqrt(np.mean(np.square(audio_16k, dtype=np.float64))))
    if rms < cfg.silence_rms:
        raise AudioError(
            f"{name} is silent (RMS {rms:.2e}): nothing to lip-sync. Check the microphone or the file's volume."
        )


class RunningMeanNormaliser:
    """Subtracts a causal running mean per mel band: a plain average over the first ``frames`` mel frames, then
    an exponential average with that time constant. Stateful, so any chunking gives the same output."""

    def __init__(self, cfg: AudioConfig = AudioConfig()) -> None:
        self.frames = cfg.running_mean_frames
        self.reset()

    def reset(self) -> None:
        self._mean: np.ndarray | None = None
        self._count = 0

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        """mel (n, n_mels) -> normalised (n, n_mels)."""
        if self.frames <= 0 or len(mel) == 0:
            return mel
        out = np.empty_like(mel)
        mean = self._mean if self._mean is not None else np.zeros(mel.shape[1], np.float64)
        for i, m in enumerate(mel):
            self._count += 1
            mean = mean + (m - mean) / min(self._count, self.frames)
            out[i] = m - mean
        self._mean = mean
        return out


def normalised_log_mel(audio_16k: np.ndarray, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Offline log-mel with the running-mean normalisation A2L uses: (mel_frames, n_mels)."""
    return RunningMeanNormaliser(cfg)(log_mel(audio_16k, cfg))

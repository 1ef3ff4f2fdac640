"""Log-mel features on the 25 fps grid, offline and as a stateful stream that gives the same numbers.

Mel frame m is the window of ``win_samples`` that *ends* at sample ``hop_samples * (m + 1)``: a causal layout,
so video frame n (samples [640n, 640(n+1))) owns mel frames 4n .. 4n+3 and needs no audio from later frames.
The signal is taken as zero before its start.
"""

from __future__ import annotations

import numpy as np

from .config import AudioConfig
from .errors import AudioError


def mel_filterbank(cfg: AudioConfig) -> np.ndarray:
    """Triangular mel filters on the HTK mel scale with Slaney's equal-area norm, shape (n_mels, n_fft // 2 + 1).

    librosa is imported here, not with the module: it takes a second or more to import, and the runtime needs it
    only once a session makes features (Resemblyzer's speaker mels import it too)."""
    import librosa.filters

    return librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin_hz, fmax=cfg.fmax_hz,
        htk=True, norm="slaney", dtype=np.float32,
    )  # fmt: skip


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

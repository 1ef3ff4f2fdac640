"""Audio sources for the live engine. Each one opens a buffer on the engine and writes 16 kHz mono float32 into it.

- FileSource: a file at real-time pace (optionally looped), scheduled on frame counters so it never drifts.
- MicrophoneSource: the local microphone through PortAudio; the audio callback runs on PortAudio's thread and
  hands each chunk to the event loop with ``call_soon_threadsafe`` (buffers are touched from the loop only).
- consume_track: a WebRTC audio track (the browser's microphone), resampled to 16 kHz mono.
- PushDecoder: PCM pushed by a client over the WebSocket, validated and resampled; the server owns the socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from facecast.engine.config import SAMPLE_RATE
from facecast.engine.errors import AudioError, InputError
from facecast.engine.media import load_audio
from facecast.engine.system import require_portaudio

from ..config import PushConfig
from .clock import FrameClock
from .engine import LiveEngine
from .mixer import SourceBuffer


class FileSource:
    """Plays a file into the engine one 40 ms block per tick of its own frame clock, like a live talker would."""

    def __init__(self, engine: LiveEngine, path: Path, loop: bool = True) -> None:
        self.engine, self.path, self.loop = engine, Path(path), loop

    async def run(self) -> None:
        audio = await asyncio.to_thread(load_audio, self.path, SAMPLE_RATE)
        spf = self.engine.spf
        clock = self.engine.clock
        # Not a live device: its buffer is never trimmed, the pacing below keeps it at the jitter buffer's size.
        buf = self.engine.open_source(f"file {self.path.name}", live=False)
        try:
            frames = FrameClock(clock.now(), self.engine.cfg.audio.fps)
            k = 0
            while True:
                for start in range(0, len(audio), spf):
                    await clock.sleep_until(frames.time_of(k))
                    buf.write(audio[start : start + spf])
                    k += 1
                if not self.loop:
                    break
            while buf.buffered_samples:  # let the tail play out before the source goes away
                await clock.sleep_until(frames.time_of(k))
                k += 1
        finally:
            self.engine.close_source(buf)


class MicrophoneSource:
    """This machine's microphone. ``stream_factory`` is sounddevice.InputStream (tests pass a stand-in)."""

    BLOCK_SAMPLES = 320  # 20 ms callbacks: small enough for the 60 ms jitter buffer

    def __init__(self, engine: LiveEngine, device: int | str | None = None, stream_factory: Any = None) -> None:
        self.engine, self.device, self.stream_factory = engine, device, stream_factory
        self.status_errors = 0  # PortAudio input overflows reported to the callback

    def _open(self, callback: Callable[..., None]) -> Any:
        factory = self.stream_factory
        if factory is None:
            require_portaudio()
            import sounddevice as sd

            factory = sd.InputStream
        try:
            return factory(
                samplerate=SAMPLE_RATE,
                channels=1,
                dtype="float32",
                blocksize=self.BLOCK_SAMPLES,
                device=self.device,
                callback=callback,
            )
        except Exception as e:  # sounddevice raises PortAudioError or ValueError for a missing/unusable device
            raise InputError(
                f"cannot open the microphone ({e}): plug one in, pick another with --mic-device, "
                "or use --audio-file or the page's microphone button instead."
            ) from e

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        buf = self.engine.open_source("microphone", live=True)

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status:
                self.status_errors += 1
            try:
                loop.call_soon_threadsafe(buf.write, indata[:, 0].copy())
            except RuntimeError:  # the loop closed while the stream was stopping
                pass

        try:
            stream = self._open(callback)
            with stream:
                await asyncio.Event().wait()  # until cancelled; the callback does the work
        finally:
            self.engine.close_source(buf)


async def consume_track(engine: LiveEngine, track: MediaStreamTrack, name: str = "browser microphone") -> None:
    """Feed a WebRTC audio track (48 kHz Opus from a browser) into the engine until it ends."""
    buf = engine.open_source(name, live=True)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    try:
        while True:
            frame = await track.recv()
            for out in resampler.resample(frame):
                buf.write(out.to_ndarray().reshape(-1))
    except MediaStreamError:
        pass
    finally:
        engine.close_source(buf)


INTERRUPT_MESSAGE = {"interrupt": True}


class PcmTo16k:
    """int16 mono PCM at ``rate`` -> float32 16 kHz in [-1, 1], chunk by chunk (FFmpeg's resampler keeps its state
    across chunks, so they join without seams). Shared by /push and the voice-agent adapters."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = self._new()

    def _new(self) -> av.AudioResampler | None:
        return None if self.rate == SAMPLE_RATE else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._resampler is None:
            return samples.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, "<i2")[None], format="s16", layout="mono")
        frame.sample_rate = self.rate
        return self._joined(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The end of a segment: the samples the resampler's filter still holds (then it starts afresh)."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        tail = self._joined(self._resampler.resample(None))
        self._resampler = self._new()
        return tail

    @staticmethod
    def _joined(frames: list[av.AudioFrame]) -> np.ndarray:
        out = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(out) if out else np.zeros(0, np.float32)


class PushDecoder:
    """One push client's protocol: optional JSON header ``{"sample_rate": 24000}``, then binary int16 little-endian
    mono PCM (16 kHz unless the header said otherwise); at any time the text message ``{"interrupt": true}`` (the
    TTS was cut off: drop what is waiting). Raises AudioError/InputError with what to change."""

    def __init__(self, buf: SourceBuffer, config: PushConfig) -> None:
        self.buf, self.config = buf, config
        self.rate = SAMPLE_RATE
        self.started = False
        self._to_16k = PcmTo16k(SAMPLE_RATE)

    @staticmethod
    def is_interrupt(text: str) -> bool:
        try:
            return json.loads(text) == INTERRUPT_MESSAGE
        except ValueError:
            return False

    def header(self, text: str) -> None:
        if self.started:
            raise InputError("the JSON header must come before the first audio message: send it once, first.")
        try:
            head = json.loads(text)
            rate = int(head["sample_rate"]) if isinstance(head, dict) else None
        except (ValueError, KeyError, TypeError):
            rate = None
        if rate is None:
            raise InputError(
                'a text message must be the JSON header {"sample_rate": N} or {"interrupt": true}; '
                "send audio as binary."
            )
        if not self.config.min_rate_hz <= rate <= self.config.max_rate_hz:
            raise AudioError(
                f"sample_rate {rate} Hz is out of range: send {self.config.min_rate_hz}-{self.config.max_rate_hz} Hz."
            )
        self.rate = rate
        self._to_16k = PcmTo16k(rate)

    def pcm(self, data: bytes) -> None:
        self.started = True
        if len(data) % 2:
            raise AudioError(
                f"a binary message of {len(data)} bytes is not int16 PCM: send whole little-endian int16 samples."
            )
        if not data:
            return
        samples = np.frombuffer(data, "<i2")
        audio = self._to_16k(samples)
        ahead_s = (self.buf.buffered_samples + audio.size) / SAMPLE_RATE
        if ahead_s > self.config.max_ahead_s:
            raise AudioError(
                f"audio arrives faster than real time ({ahead_s:.1f} s waiting to play, at most "
                f"{self.config.max_ahead_s:g} s allowed): send {self.rate} Hz PCM at its real-time pace."
            )
        self.buf.write(audio)

"""What the voice-agent adapters (LiveKit Agents, Pipecat) share: one loaded model for every session of a process,
the agent's speech into the engine, and which output frames carry sound.

A framework's TTS sends its speech in segments (a turn), ahead of real time, at its own rate; it wants the sound
back paired with pictures, to know when a segment has been played, and to cut it off (barge-in).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

import numpy as np

from facecast.engine.checkpoint import DEFAULT_MODEL_DIR

from ..config import LiveConfig
from ..live.engine import LiveEngine, OutputFrame
from ..live.mixer import SourceBuffer
from ..live.sources import PcmTo16k


class AgentSpeech:
    """One agent's speech into one engine source: int16 PCM at any rate and channel count, segment ends marked."""

    def __init__(self, engine: LiveEngine, name: str) -> None:
        self.engine, self.name = engine, name
        self._buf: SourceBuffer | None = None
        self._to_16k: PcmTo16k | None = None

    @property
    def buffer(self) -> SourceBuffer:
        if self._buf is None:
            # Not live: a TTS sends faster than real time and all of it must play (never trimmed).
            self._buf = self.engine.open_source(self.name, live=False)
        return self._buf

    def write(self, pcm: bytes, sample_rate: int, channels: int) -> None:
        """Interleaved int16 little-endian PCM; several channels are averaged to mono."""
        if self._to_16k is None or self._to_16k.rate != sample_rate:
            self._to_16k = PcmTo16k(sample_rate)
        frames = np.frombuffer(pcm, "<i2").reshape(-1, channels)
        mono = frames[:, 0] if channels == 1 else frames.mean(axis=1).astype(np.int16)
        self.buffer.write(self._to_16k(mono))

    def end_segment(self, label: Hashable) -> None:
        """The segment is whole: the resampler's tail goes in, and ``label`` comes back on the OutputFrame that
        holds its last sound (OutputFrame.marks)."""
        if self._to_16k is not None:
            self.buffer.write(self._to_16k.flush())
        self.buffer.mark_end(label)

    def interrupt(self) -> list[Hashable]:
        """Barge-in on the engine; the resampler's held samples belong to the cut speech and go too. Returns the
        segment labels that will now never be reached."""
        if self._to_16k is not None:
            self._to_16k = PcmTo16k(self._to_16k.rate)
        return self.engine.interrupt()

    def close(self) -> None:
        if self._buf is not None:
            self.engine.close_source(self._buf)
            self._buf = None


class SoundGate:
    """Which output frames go out with their sound: from a segment's first audible frame through the one holding
    its end mark. Idle frames carry none, so the framework sees sound (bot speaking, playback position) only while
    the avatar speaks."""

    def __init__(self) -> None:
        self.speaking = False

    def step(self, out: OutputFrame) -> bool:
        """Whether ``out`` is sent with its sound; call once per output frame, in order."""
        self.speaking |= out.audible
        with_sound = self.speaking
        if out.marks:
            self.speaking = False
        return with_sound

    def cut(self) -> None:
        self.speaking = False


class AvatarEngines:
    """One loaded model and prepared avatar per process, a LiveEngine per session: sessions share the weights
    (and, on a GPU, its memory) while each keeps its own state (audio, utterance, speaker, clock). ``load()`` is
    the share of ``max_sessions`` in use, for a framework's load-based dispatch."""

    def __init__(
        self,
        avatar: Path,
        model: Path = DEFAULT_MODEL_DIR,
        backend: str = "torch",
        device: str = "cpu",
        live: LiveConfig | None = None,
        max_sessions: int = 1,
    ) -> None:
        from facecast.engine.avatar.prepare import load_avatar
        from facecast.export.backends import load_backend

        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.backend = load_backend(backend, Path(model), device=device)
        self.avatar = load_avatar(Path(avatar), self.backend)
        self.live = live or LiveConfig()
        self.max_sessions = max_sessions
        self._engines: list[LiveEngine] = []

    def new_engine(self) -> LiveEngine:
        engine = LiveEngine(self.backend, self.avatar, self.live)
        self._engines.append(engine)
        return engine

    def release(self, engine: LiveEngine) -> None:
        """Forget a finished session (call after ``engine.stop()``)."""
        if engine in self._engines:
            self._engines.remove(engine)

    @property
    def active(self) -> int:
        return sum(e.running for e in self._engines)

    def load(self) -> float:
        """0 (idle) .. 1 (full): running sessions over ``max_sessions``."""
        return min(1.0, self.active / self.max_sessions)

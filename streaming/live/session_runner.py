"""The live engine's model-thread side: its LipSyncSession, fed one 40 ms block per job, and the speaker embedding
that session hears. Every job goes through ``ModelJobs`` (in order, on the engine's lane of the model worker), so
the session needs no locks; a block of an older epoch (before a barge-in or an avatar change) costs no compute."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from facecast.engine.avatar.prepare import Avatar
from facecast.engine.backend import Backend
from facecast.engine.batching import Steps
from facecast.engine.config import InferenceConfig, ModelConfig
from facecast.engine.pipeline import LipSyncSession

from .model_jobs import ModelJobs
from .outputs import Outputs
from .render_policy import RenderPolicy
from .speaker_tracker import SpeakerTracker


class SessionRunner:
    def __init__(
        self,
        backend: Backend,
        cfg: ModelConfig,
        inference: InferenceConfig,
        avatar: Avatar,
        jobs: ModelJobs,
        speaker: SpeakerTracker,
        speaker_fn: Callable[[np.ndarray], np.ndarray],
        outputs: Outputs,
    ) -> None:
        self.backend, self.cfg, self.inference = backend, cfg, inference
        self.jobs, self.speaker, self.speaker_fn, self.outputs = jobs, speaker, speaker_fn, outputs
        self.session = self.new_session(avatar, None)
        self.paired_blocks_left = 0  # blocks still to be encoded in pairs of frames (pair_speech)
        # Frames per encoder call while paired; None where there is no speech encoder, or where it already runs at
        # its sparsest (its graph returns no more frames than the model's own max_every_frames).
        pair = 2 * cfg.speech.every_frames
        hears_whisper = cfg.a2l.audio_features == "whisper"
        self.speech_pair_frames = pair if hears_whisper and pair <= backend.cfg.speech.max_every_frames else None

    def new_session(self, avatar: Avatar, policy: RenderPolicy | None) -> LipSyncSession:
        """A session on the engine's frame clock; ``policy`` None renders every frame (before the engine starts)."""
        embedding = self.speaker.embedding
        return LipSyncSession(self.backend, self.cfg, avatar, embedding, self.inference, render_policy=policy)

    # ------------------------------------------------------------------------------------------ event loop side

    def submit_block(self, block: np.ndarray, begin: int | None, end: bool) -> None:
        """Block k into the session (``begin``: k, when it opens an utterance; ``end``: it closes one), and into
        the speaker embedding while the talker's voice is still being collected."""
        group = self._speech_group_frames()
        self.jobs.submit(self.feed, self.jobs.epoch, block, begin, end, group)
        speech = self.speaker.collect(block)
        if speech is not None:
            self.jobs.submit(self.embed_speaker, speech)

    def pair_speech(self, blocks: int) -> None:
        """Encode the speech of the next ``blocks`` blocks in pairs of frames, one encoder call for two: half the
        encoder's work, the one cost per frame that skipping a picture does not save (``LiveConfig.
        pair_speech_frames``). Nothing for a model without a speech encoder, or one already at its sparsest."""
        self.paired_blocks_left = max(self.paired_blocks_left, blocks)

    def _speech_group_frames(self) -> int | None:
        if self.paired_blocks_left <= 0 or self.speech_pair_frames is None:
            return None
        self.paired_blocks_left -= 1
        self.jobs.counters.paired_blocks += 1
        return self.speech_pair_frames

    def reset_speaker(self) -> None:
        """Forget the talker's voice: the next ``speaker_seconds`` of speech set a new embedding."""
        self.speaker.forget()
        zeros = np.zeros_like(self.speaker.embedding)
        if self.jobs.lane is None:
            self.set_speaker(zeros)
        else:
            self.jobs.submit(self.set_speaker, zeros)

    async def switch_to(self, session: LipSyncSession) -> None:
        """From the next job on, ``session`` (on another avatar) is fed, with the current speaker embedding."""

        def swap() -> None:
            session.speaker = self.speaker.embedding[None].copy()
            self.session = session

        await self.jobs.call(swap)

    # ------------------------------------------------------------------------------------------ model thread

    def feed(
        self, epoch: int, block: np.ndarray, begin: int | None, end: bool, speech_group_frames: int | None = None
    ) -> Steps:
        """Model thread: one 40 ms block into the session; returns (epoch, the frames it completed). Its model
        calls are requests the worker batches with other sessions' (engine.batching)."""
        if epoch != self.jobs.epoch:
            return epoch, []  # dropped by interrupt() or an avatar change while it waited: no compute for it
        session = self.session
        if begin is not None:
            session.begin(begin)
        frames = yield from session.push_audio_steps(block, speech_group_frames)
        if end:
            frames += yield from session.finish_steps()
        for o in self.outputs.observers:
            o.frames_made(frames)
        return epoch, frames

    def embed_speaker(self, audio_16k: np.ndarray) -> None:
        self.set_speaker(self.speaker_fn(audio_16k))

    def set_speaker(self, embedding: np.ndarray) -> None:
        """Model thread: every frame after this uses the new embedding (the session's GRU state is kept)."""
        self.speaker.embedding = np.asarray(embedding, np.float32).reshape(-1)
        self.session.speaker = self.speaker.embedding[None].copy()

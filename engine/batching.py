"""Model calls of many sessions as one batch: what a session asks the networks for, and the driver that answers.

A session's per-frame work is written once, as a generator of ``ModelCall`` requests (``LipSyncSession``'s
``*_steps`` methods): it prepares its inputs, yields a ``SpeechCall``, an ``A2LCall`` or a ``FrameJob``, gets the
model's answer back and finishes the frame itself. ``run_calls`` answers the requests of any number of such
generators together, one batched backend call per kind of request and per DDIM step, so one session alone
(``run_alone``) and K sessions on a shared worker run the same code. Every session's state (GRU state, previous
latent, avatar) stays in the session; only the arrays of one call are stacked.

A request that fails (one session's bad input) is retried alone, so its error reaches that session's generator
and the others get their answers as if it had not been there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backend import Backend, Weights, weights_keyword
from .config import ModelConfig
from .latents import to_uint8_images
from .sampler import DDIMSchedule, sample_latents


@dataclass
class A2LCall:
    """One session's A2L step over T new video frames of mel features."""

    mel_frames: np.ndarray  # (1, T, 320) normalised log-mel, 4 mel frames per video frame
    speaker: np.ndarray  # (1, 256)
    reference_px: np.ndarray  # (1, 68, 2)
    state: np.ndarray  # (layers, 1, hidden) GRU state
    weights: Weights = None  # the session's avatar's enrolment (None: the model's own A2L)

    @property
    def key(self) -> tuple[Any, ...]:
        return ("a2l", self.mel_frames.shape[1], self.weights)  # calls over the same frames and weights stack


@dataclass
class SpeechCall:
    """One session's speech-encoder windows (``whisper.SpeechFeatureStream``); the answer is their tokens."""

    mel: np.ndarray  # (windows, 80, F) Whisper log-mel, F the live window's log-mel frames (speech and pad)

    @property
    def key(self) -> tuple[Any, ...]:
        return ("speech", self.mel.shape[2])  # windows of one length stack (live windows all have one length)


@dataclass
class FrameJob:
    """One frame's L2V denoising and decoding, prepared by its session; all arrays have batch 1."""

    n: int  # the session's frame index
    avatar_index: int
    landmarks: np.ndarray  # (68, 2) driving landmarks in crop pixels
    noise: np.ndarray  # (1, C, 32, 32) the DDIM start: masked latent above ``row``, seeded noise below
    masked: np.ndarray  # (1, C, 32, 32)
    identity: np.ndarray  # (1, C, 32, 32)
    previous: np.ndarray  # (1, C, 32, 32) the previous generated latent (pose prior)
    heatmaps: np.ndarray  # (1, 3, 32, 32)
    driven_px: np.ndarray  # (1, 37, 2)
    mel_window: np.ndarray  # (1, 5, 320)
    schedule: DDIMSchedule
    row: int  # first latent row that is regenerated
    timings_ms: dict[str, float] = field(default_factory=dict)
    deadline: float | None = None  # clock time by which the frame must be ready to be shown (None: no deadline)
    weights: Weights = None  # the session's avatar's enrolment (None: the model's own L2V)

    @property
    def key(self) -> tuple[Any, ...]:
        return ("frame", self.schedule, self.row, self.weights)  # jobs on the same timesteps, mask and weights stack


@dataclass
class FrameResult:
    latent: np.ndarray  # (1, C, 32, 32) the generated latent
    lower_face: np.ndarray  # uint8 (h, 256, 3): the decoded rows from decode_top_row(row) down
    timings_ms: dict[str, float]  # unet, decode: the whole batched call's time (what the frame waited for)
    batch: int  # frames in that call


ModelCall = SpeechCall | A2LCall | FrameJob
NOT_RENDERED = None  # the answer to a FrameJob that the driver left out (``run_calls``' ``choose``): no frame
Choose = Callable[[list[int], list[FrameJob]], list[int]]
Steps = Generator[ModelCall, Any, Any]  # yields requests, is sent their answers, returns its result


def decode_top_row(cfg: ModelConfig, row: int) -> int:
    """First latent row decoded for a mask starting at ``row``: a margin above it gives the decoder context."""
    return max(0, row - cfg.l2v.decode_margin_rows)


def decode_lower_faces(backend: Backend, latents: np.ndarray, row: int) -> np.ndarray:
    """(B, C, 32, 32) latents -> uint8 (B, h, 256, 3) images of the rows from ``decode_top_row(row)`` down."""
    return to_uint8_images(backend.decode(np.ascontiguousarray(latents[:, :, decode_top_row(backend.cfg, row) :])))


def _stack(arrays: list[np.ndarray], axis: int = 0) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=axis)


def answer_a2l(backend: Backend, calls: list[A2LCall]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One A2L call for all ``calls`` (same T and weights); per call: displacements (1, T, 37, 2), its new state."""
    disp, state = backend.a2l(
        _stack([c.mel_frames for c in calls]),
        _stack([c.speaker for c in calls]),
        _stack([c.reference_px for c in calls]),
        _stack([c.state for c in calls], axis=1),
        **weights_keyword(calls[0].weights),
    )
    return [(disp[i : i + 1], np.ascontiguousarray(state[:, i : i + 1])) for i in range(len(calls))]


def answer_speech(backend: Backend, calls: list[SpeechCall]) -> list[np.ndarray]:
    """One speech-encoder call for the windows of all ``calls``; per call: its windows' tokens."""
    tokens = backend.speech_encoder(_stack([c.mel for c in calls]))
    ends = np.cumsum([len(c.mel) for c in calls])
    return [tokens[end - len(c.mel) : end] for c, end in zip(calls, ends, strict=True)]


def answer_frames(backend: Backend, jobs: list[FrameJob]) -> list[FrameResult]:
    """Every DDIM step of all ``jobs`` (same schedule, row and weights) as one denoise call, then one decode call."""
    s, row = jobs[0].schedule, jobs[0].row
    t = time.perf_counter()
    conditions = [_stack([getattr(j, k) for j in jobs]) for k in ("identity", "previous", "heatmaps", "driven_px")]
    x = sample_latents(
        backend,
        s,
        _stack([j.noise for j in jobs]),
        _stack([j.masked for j in jobs]),
        row,
        conditions,
        _stack([j.mel_window for j in jobs]),
        jobs[0].weights,
    )
    unet_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    lower = decode_lower_faces(backend, x, row)
    timings = {"unet": unet_ms, "decode": (time.perf_counter() - t) * 1e3}
    return [FrameResult(x[i : i + 1], lower[i], dict(timings), len(jobs)) for i in range(len(jobs))]


def answer(backend: Backend, calls: list[ModelCall]) -> list[Any]:
    """The answers to ``calls`` (all of one ``key``), in order."""
    if isinstance(calls[0], SpeechCall):
        return answer_speech(backend, calls)  # type: ignore[arg-type]
    if isinstance(calls[0], A2LCall):
        return answer_a2l(backend, calls)  # type: ignore[arg-type]
    return answer_frames(backend, calls)  # type: ignore[arg-type]


@dataclass
class Outcome:
    """What one generator ended with: its return value, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None


def _advance(gen: Steps, send: Any = None, error: BaseException | None = None) -> tuple[ModelCall | None, Outcome]:
    try:
        request = gen.throw(error) if error is not None else gen.send(send)
    except StopIteration as stop:
        return None, Outcome(stop.value)
    except Exception as e:  # noqa: BLE001 - the session's own error: it goes to that session only
        return None, Outcome(error=e)
    return request, Outcome()


def _advance_all(
    gens: list[Steps], sends: dict[int, tuple[Any, BaseException | None]], pool: Executor | None
) -> dict[int, tuple[ModelCall | None, Outcome]]:
    """``_advance`` each ``gens[i]`` with ``sends[i]``; on ``pool`` side by side when there are several."""
    if pool is None or len(sends) < 2:
        return {i: _advance(gens[i], *sent) for i, sent in sends.items()}
    futures = {i: pool.submit(_advance, gens[i], *sent) for i, sent in sends.items()}
    return {i: f.result() for i, f in futures.items()}


def run_calls(
    backend: Backend,
    gens: list[Steps],
    max_batch: int | None = None,
    choose: Choose | None = None,
    pool: Executor | None = None,
) -> list[Outcome]:
    """Drive ``gens`` to their ends, answering their requests in batches of at most ``max_batch`` (None: all).

    Each round, every generator with a request has it answered: requests of one ``key`` go to the backend together.
    A batch whose call fails is answered one request at a time, so only the failing session gets the error.
    ``choose(ids, jobs)``: which of the FrameJobs waiting together (``gens`` indices ``ids``) are rendered; the
    others are answered ``NOT_RENDERED`` (None: all are rendered).

    ``pool``: threads on which the sessions' own work between two requests (log-mel, warp, composite: numpy and
    OpenCV, which let go of the GIL) runs side by side, one generator per thread; the backend calls stay on the
    calling thread. Each generator touches only its own session, so the outcomes are those of running them in turn.
    """
    outcomes = [Outcome() for _ in gens]
    waiting: dict[int, ModelCall] = {}
    for i, (request, outcomes[i]) in _advance_all(gens, {i: (None, None) for i in range(len(gens))}, pool).items():
        if request is not None:
            waiting[i] = request
    while waiting:
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, request in waiting.items():
            groups.setdefault(request.key, []).append(i)
        answered: dict[int, tuple[Any, BaseException | None]] = {}
        for members in groups.values():
            if choose is not None and isinstance(waiting[members[0]], FrameJob):
                chosen = choose(members, [waiting[i] for i in members])  # type: ignore[misc]
                answered |= {i: (NOT_RENDERED, None) for i in members if i not in chosen}
                members = [i for i in members if i in chosen]
            size = max_batch or len(members)
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                answered |= _answer_isolated(backend, [waiting[i] for i in chunk], chunk)
        waiting = {}
        for i, (request, outcomes[i]) in _advance_all(gens, answered, pool).items():
            if request is not None:
                waiting[i] = request
    return outcomes


def _answer_isolated(
    backend: Backend, calls: list[ModelCall], ids: list[int]
) -> dict[int, tuple[Any, BaseException | None]]:
    try:
        return {i: (r, None) for i, r in zip(ids, answer(backend, calls), strict=True)}
    except Exception as e:  # noqa: BLE001 - find whose request it was: answer each alone
        if len(calls) == 1:
            return {ids[0]: (None, e)}
    out: dict[int, tuple[Any, BaseException | None]] = {}
    for i, call in zip(ids, calls, strict=True):
        out |= _answer_isolated(backend, [call], [i])
    return out


def run_alone(backend: Backend, gen: Steps) -> Any:
    """One session's steps with its own backend calls (batch 1): its result, or its exception raised here."""
    (outcome,) = run_calls(backend, [gen])
    if outcome.error is not None:
        raise outcome.error
    return outcome.value

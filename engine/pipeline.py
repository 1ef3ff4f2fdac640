"""The lip-sync pipeline as a streaming session: audio chunks in, finished video frames out.

Offline ``generate`` is the same session fed a whole file, so streaming and offline give the same frames.

Per video frame n (40 ms, audio samples [640n, 640(n+1))):
  mel (4 frames) -> A2L step (GRU state carried) -> displacement for frame n - lookahead
  -> landmarks in the avatar frame's pose -> heatmaps + tokens
  -> the avatar's own face warped to those landmarks (``warp.py``), the inside of the lips painted by the model's
     mouth prior (``mouth_prior.py``) -> paste into the avatar frame with a feathered mask.

L2V (heatmaps + tokens -> few-step DDIM in latent space, upper rows clean, lower rows denoised, previous generated
latent as prior -> decode the lower rows) runs only where its picture is shown: a model without a mouth prior,
``FaceConfig.interior_source = "l2v"`` or ``FaceConfig.warp_prior = False`` (``LipSyncSession.runs_l2v``).

The model calls in that list are requests the session yields (``*_steps`` methods, see ``batching.py``): alone,
``push_audio`` / ``finish`` / ``render`` answer them at once; a shared worker answers many sessions' together.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from . import crop, mouth_prior, warp
from .audio import MelExtractor, RunningMeanNormaliser
from .avatar.prepare import Avatar, pose_to_frame
from .backend import Backend
from .batching import (
    NOT_RENDERED,
    A2LCall,
    FrameJob,
    FrameResult,
    Steps,
    decode_lower_faces,
    decode_top_row,
    run_alone,
)
from .config import InferenceConfig, ModelConfig
from .errors import AudioError
from .landmarks import DRIVEN, apply_affine, lip_gap, render_heatmaps
from .sampler import DDIMSchedule
from .whisper import SpeechFeatureStream

# Where the driven (mouth and jaw) landmarks come from:
#   audio  - A2L's prediction from the speech (facecast itself)
#   static - the avatar's reference shape, not moved: no audio-driven motion (the `static` baseline)
#   avatar - each avatar frame's own landmarks (for a real clip used as avatar: its true landmarks, an oracle)
LANDMARK_SOURCES = ("audio", "static", "avatar")


@dataclass
class Frame:
    index: int  # position on the output 25 fps clock
    image: np.ndarray  # uint8 (H, W, 3), the full avatar frame with the generated mouth
    landmarks: np.ndarray  # float32 (68, 2), the driving landmarks in crop pixels
    avatar_index: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    crop: np.ndarray | None = None  # uint8 (256, 256, 3), the aligned crop with the generated lower face


class RenderPolicy(Protocol):
    """Which frames a session renders (the live engine's drop rule: ``streaming/live/render_policy.py``)."""

    def now(self) -> float:
        """Seconds on the clock the policy's deadlines are on (what render times are measured with)."""
        ...

    def should_render(self, index: int) -> bool:
        """Render frame ``index`` (on the session's frame clock, offset included), or skip it."""
        ...

    def rendered(self, seconds: float) -> None:
        """A frame took ``seconds`` to render."""
        ...

    def deadline(self, index: int) -> float:
        """Time (on ``now``'s clock) by which frame ``index`` must be ready to be shown at all."""
        ...


SKIPPED = "skipped"  # key in Frame.timings_ms of a frame the policy skipped (its image is the avatar's own)


class LipSyncSession:
    """One speaker driving one avatar. Not thread-safe: one caller at a time.

    Offline, frame n is the n-th frame of the audio. Live, a session serves one utterance after another on a
    longer clock: ``begin(frame_offset)`` starts an utterance whose first frame is ``frame_offset`` on that clock,
    so the frames' indices and the avatar's idle loop continue across utterances; ``render_policy`` (None: render
    every frame) lets the engine skip frames that would be shown too late.
    """

    def __init__(
        self,
        backend: Backend,
        cfg: ModelConfig,
        avatar: Avatar,
        speaker: np.ndarray,
        inference: InferenceConfig = InferenceConfig(),
        landmarks: str = "audio",
        render_policy: RenderPolicy | None = None,
    ) -> None:
        if cfg.l2v.audio_context_frames > cfg.latency_frames:
            raise ValueError("L2V's audio context may not look further ahead than the session's latency")
        self.backend, self.cfg, self.avatar, self.inference = backend, cfg, avatar, inference
        if landmarks not in LANDMARK_SOURCES:
            raise ValueError(f"landmarks must be one of {LANDMARK_SOURCES}, not {landmarks!r}")
        self.landmark_source = landmarks
        self.speaker = speaker.astype(np.float32)[None]
        self.schedule = DDIMSchedule.from_config(cfg.l2v, inference.steps)
        self.latent_px = cfg.face.crop_px // cfg.autoencoder.downscale
        self.row = cfg.l2v.mask_top_px * self.latent_px // cfg.face.crop_px
        self.warp_sources = avatar.warp_sources(cfg)  # (T,) the warp's source frame per avatar frame
        prior = backend.mouth_prior
        # What A2L displaces: the avatar's reference, moved from rest to a talking mean when its mouth is still
        # (``MouthPrior.talking_reference``; A2L learned displacements from talking means, as a talking video's
        # mean reference already is).
        self.a2l_reference = (
            prior.talking_reference(avatar.reference, avatar.landmarks) if prior is not None else avatar.reference
        )
        # The learned mouth interior, or None: L2V's decoded painting is used inside the lips.
        self.interior = mouth_prior.interior_painter(cfg.face, prior)
        # When the warp draws the face and the prior paints the mouth, no pixel of L2V's picture is shown, and its
        # latent would only be the pose prior of the next L2V picture, not shown either: the session then makes
        # no L2V call at all (``warp_frame``), which is most of a frame's CPU (docs/benchmarks.md, "Headroom").
        self.runs_l2v = mouth_prior.shows_l2v(cfg.face, prior)
        # L2V's inputs from the avatar: its latents, encoded now if it was prepared for a model without L2V and
        # ``load_avatar`` (which encodes them for the backend's own config) did not (a session config that differs).
        if self.runs_l2v:
            avatar.ensure_latents(backend.encode, cfg)
        self.identity = avatar.latents[avatar.identity_index][None] if avatar.has_latents else None
        self.render_policy = render_policy
        self.frame_offset = 0  # frame 0 of this utterance on the caller's frame clock
        self.reset()

    def begin(self, frame_offset: int) -> None:
        """A new utterance whose first audio block is frame ``frame_offset`` on the caller's frame clock."""
        self.reset()
        self.frame_offset = frame_offset

    def reset(self) -> None:
        self.mel = MelExtractor(self.cfg.audio)
        self.normaliser = RunningMeanNormaliser(self.cfg.audio)
        # A2L's input when it hears Whisper features (``A2LConfig.audio_features``): the encoder on a sliding
        # window, the same stream training ran over each clip; L2V's audio tokens stay log-mel.
        self.speech = SpeechFeatureStream(self.cfg.speech) if self.cfg.a2l.audio_features == "whisper" else None
        # Mel frames not yet grouped into a whole video frame: raw (for L2V's audio tokens) and normalised (A2L).
        self._mel_pending = np.zeros((0, 2, self.cfg.audio.n_mels), np.float32)
        self._frame_mels: deque[np.ndarray] = deque()  # per video frame (320,), from index self._mel_base
        self._mel_base = 0
        self._mels_seen = 0  # video frames whose mel features exist
        self._a2l_state = np.zeros(self.backend.a2l_state_shape(), np.float32)
        self._disp: dict[int, np.ndarray] = {}
        self._a2l_steps = 0
        self._next_frame = 0
        self._samples_in = 0
        self._previous: np.ndarray | None = None
        self._features_ms = 0.0  # feature work (ms) not yet shared among the frames it completes

    @property
    def latency_frames(self) -> int:
        """How many frames of audio past frame n must arrive before frame n can be made."""
        return self.cfg.latency_frames

    # ------------------------------------------------------------------------------------------ audio in

    def push_audio(self, chunk_16k: np.ndarray) -> list[Frame]:
        """Feed 16 kHz mono float32 samples (any length); returns the frames this audio completed."""
        return run_alone(self.backend, self.push_audio_steps(chunk_16k))

    def finish(self) -> list[Frame]:
        """End of speech: pad with the lookahead's worth of silence and return the remaining frames."""
        return run_alone(self.backend, self.finish_steps())

    def push_audio_steps(self, chunk_16k: np.ndarray, speech_group_frames: int | None = None) -> Steps:
        """``push_audio`` as model requests (see ``batching.py``); returns the completed frames.
        ``speech_group_frames``: frames per speech-encoder call for this chunk (``SpeechFeatureStream.push_steps``)."""
        chunk = np.asarray(chunk_16k, np.float32).reshape(-1)
        if not np.isfinite(chunk).all():
            # NaN would poison the mel normaliser and the GRU state for the rest of the session
            raise AudioError(
                f"an audio chunk of {chunk.size} samples has NaN or infinite values: send finite float samples "
                "in [-1, 1] (decoded PCM), not raw or corrupt bytes"
            )
        self._samples_in += len(chunk)
        return (yield from self._advance_steps(chunk, limit=None, speech_group_frames=speech_group_frames))

    def finish_steps(self) -> Steps:
        """``finish`` as model requests; returns the remaining frames."""
        total = self._samples_in // self.cfg.audio.samples_per_frame
        pad = np.zeros((self.latency_frames + 1) * self.cfg.audio.samples_per_frame, np.float32)
        return (yield from self._advance_steps(pad, limit=total, final=True))

    def _advance_steps(
        self, chunk: np.ndarray, limit: int | None, final: bool = False, speech_group_frames: int | None = None
    ) -> Steps:
        t0 = time.perf_counter()
        if self.speech is not None and not final:
            a2l_in = yield from self.speech.push_steps(chunk, speech_group_frames)
        elif self.speech is not None:
            # End of speech: the frames of a group left unfinished, from the speech alone, then zero features for
            # the lookahead past the end, as training and ``eval-landmarks`` pad a clip (so they all agree).
            a2l_in = yield from self.speech.flush_steps()
            missing = self._samples_in // self.cfg.audio.samples_per_frame + self.cfg.a2l.lookahead_frames
            missing -= self._a2l_steps + len(a2l_in)
            a2l_in = np.concatenate([a2l_in, np.zeros((max(0, missing), a2l_in.shape[1]), np.float32)])
        raw = self.mel.push(chunk)
        mel = np.concatenate([self._mel_pending, np.stack([raw, self.normaliser(raw)], axis=1)])
        k = self.cfg.audio.mels_per_frame
        whole = len(mel) // k
        self._mel_pending = mel[whole * k :]
        # (whole * k, 2, n_mels) -> per video frame and stream: (2, whole, k * n_mels), raw then normalised
        n_mels = self.cfg.audio.n_mels
        grouped = mel[: whole * k].reshape(whole, k, 2, n_mels).transpose(2, 0, 1, 3).reshape(2, whole, k * n_mels)
        features_ms = (time.perf_counter() - t0) * 1e3
        if whole:
            self._frame_mels.extend(grouped[0])
            self._mels_seen += whole
        if self.speech is None:
            a2l_in = grouped[1]
        steps = len(a2l_in)
        if steps:
            t1 = time.perf_counter()
            call = A2LCall(
                np.ascontiguousarray(a2l_in[None]),
                self.speaker,
                self.a2l_reference[None],
                self._a2l_state,
                weights=self.avatar.enrolment,
            )
            disp, self._a2l_state = yield call
            a2l_ms = (time.perf_counter() - t1) * 1e3
            for i in range(steps):
                frame = self._a2l_steps + i - self.cfg.a2l.lookahead_frames
                if frame >= 0:
                    self._disp[frame] = disp[0, i]
            self._a2l_steps += steps
        else:
            a2l_ms = 0.0
        # The features are shared by the frames they complete, whichever push paid for them: with Whisper one push
        # in K pays the encoder for a group of K frames, and the pushes before it complete none.
        self._features_ms += features_ms
        frames = []
        while self._next_frame in self._disp and (limit is None or self._next_frame < limit):
            f = yield from self.render_steps(self._next_frame)
            frames.append(f)
            del self._disp[self._next_frame]
            self._next_frame += 1
        for f in frames:
            f.timings_ms.update(features=self._features_ms / len(frames), a2l=a2l_ms / max(1, steps))
        if frames:
            self._features_ms = 0.0
        self._trim_mels()
        return frames

    def _trim_mels(self) -> None:
        keep_from = self._next_frame - self.cfg.l2v.audio_context_frames
        while self._mel_base < keep_from and self._frame_mels:
            self._frame_mels.popleft()
            self._mel_base += 1

    def _mel_window(self, n: int) -> np.ndarray:
        c = self.cfg.l2v.audio_context_frames
        idx = np.clip(np.arange(n - c, n + c + 1), 0, self._mels_seen - 1) - self._mel_base
        idx = np.clip(idx, 0, len(self._frame_mels) - 1)
        return np.stack([self._frame_mels[i] for i in idx])[None].astype(np.float32)

    # ------------------------------------------------------------------------------------------ frames out

    def landmarks_for(self, n: int, a: int) -> np.ndarray:
        """Driving landmarks (68, 2) for output frame n over avatar frame a, in crop pixels."""
        frame_lms = self.avatar.landmarks[a]
        if self.landmark_source == "avatar":
            return frame_lms.copy()
        if self.landmark_source == "audio":
            ref = self.a2l_reference.copy()
            ref[DRIVEN] += self._disp[n]
            ref = mouth_prior.uncross_lips(ref)
        else:
            ref = self.avatar.reference  # static: the avatar's own mouth, unmoved
        lms = frame_lms.copy()
        lms[DRIVEN] = apply_affine(pose_to_frame(self.avatar.reference, frame_lms), ref)[DRIVEN]
        return lms

    def paste_mask(self, a: int, lms: np.ndarray) -> np.ndarray:
        """Feathered mask (256, 256) of what is replaced in avatar frame a: see ``crop.paste_mask``."""
        return crop.paste_mask(np.stack([self.avatar.landmarks[a], lms]), self.cfg.face, self.cfg.l2v)

    def compose_crop(
        self,
        a: int,
        latent: np.ndarray | None,
        lms: np.ndarray,
        warp_prior: bool | None = None,
        lower_face: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Avatar crop a with a new lower face for landmarks ``lms``, from ``latent`` (1, C, 32, 32; None for a
        session that does not run L2V, ``runs_l2v``).

        Returns the crop and its paste mask (256, 256). With ``warp_prior`` the lips, skin and jaw are the
        avatar's own pixels warped to ``lms`` (``warp.py``: full resolution, so as sharp as the avatar); inside the
        inner lips, where the warp's source shows too little opening (``interior_needed``), the interior is painted:
        by the model's mouth prior (``mouth_prior.py``) or, for a model without one (or
        ``FaceConfig.interior_source = "l2v"``), by the decoded latent. Without ``warp_prior``
        (``FaceConfig.warp_prior``, or ``topline``'s autoencoder-only composite) the decoded lower face is pasted as
        it is. ``lower_face``: the latent's rows already decoded (``batching.decode_lower_faces``, as a batched
        worker does); None decodes them here when they are used.
        Warped and decoded pixels are colour-matched to the avatar frame over the skin the mask covers *outside* the
        mouth: the small autoencoder shifts colours, and the warp's source frame may be lit unlike frame a.
        """
        face = self.cfg.face
        warp_prior = face.warp_prior if warp_prior is None else warp_prior
        base = self.avatar.crops[a]
        mask = self.paste_mask(a, lms)
        out = base.copy()
        box = crop.mask_box(mask)
        if box is None:
            return out, mask
        # Everything below is per pixel (colour statistics come from inside the mask), so it is computed in the
        # mask's bounding box only and gives the same pixels as over the whole crop.
        both = np.stack([self.avatar.landmarks[a], lms])
        skin = crop.skin_around_mouth(mask, both, face)[box]

        def decoded() -> np.ndarray:
            if latent is None:
                raise ValueError("this composite shows L2V's picture: give the frame's latent")
            rows = lower_face if lower_face is not None else decode_lower_faces(self.backend, latent, self.row)[0]
            lower = lay_lower_face(self.cfg, base, rows, self.row)[box]
            # With the warp, decoded pixels show only inside the mouth: match their mean colour, not their contrast.
            return crop.match_colours(lower, base[box], skin, contrast=not warp_prior)

        if not warp_prior:
            out[box] = crop.blend(base[box], decoded(), mask[box])
            return out, mask
        src = int(self.warp_sources[a])
        top = max(0, self.cfg.l2v.mask_top_px - face.feather_px)
        warped = warp.warp_face(self.avatar.crops[src], self.avatar.landmarks[src], lms, top, box)
        # Also for a frame warped from itself (a portrait): the warp stretches the skin, and matching its contrast
        # back keeps the lip line as dark as the photo's (without it, closed-mouth portraits' rendered opening fell
        # from 0.78 to 0.26 of the driving one on biden.jpg: docs/quality.md, "The open mouth").
        warped = crop.match_colours(warped, base[box], skin, contrast=face.warp_colour_contrast)
        layers = [(warped, mask[box])]
        needed = self.interior_needed(src, lms)
        if needed > 0.0:
            if self.interior is not None:
                lit_by = skin if skin.sum() >= crop.MIN_SKIN_PIXELS else mask[box] > 0  # too little skin: the face
                painted = self.interior.render_interior(
                    lms, mouth_prior.skin_colour(base[box], lit_by), box, face.crop_px
                )
            else:
                painted = decoded()
            interior = warp.interior_mask(lms, face.crop_px, face.interior_grow_px, face.interior_feather_px)[box]
            layers.append((painted, mask[box] * interior * needed))
        out[box] = crop.composite(base[box], layers)
        return out, mask

    def interior_needed(self, src: int, lms: np.ndarray) -> float:
        """How much of the driving mouth's inside must be painted because the warp of source frame ``src`` cannot
        show it, in [0, 1].

        A closed source shows none of it (1: all painted). A source open at least ``FaceConfig.own_interior_ratio``
        as wide as the driving mouth (a smiling portrait, a video frame with teeth) shows the avatar's own teeth and
        cavity, stretched by the warp (0: a generic painting over them would replace the person's own teeth); in
        between, linearly."""
        ratio = float(lip_gap(self.avatar.landmarks[src])) / max(float(lip_gap(lms)), 1e-3)
        return float(np.clip(1.0 - ratio / self.cfg.face.own_interior_ratio, 0.0, 1.0))

    def render(self, n: int) -> Frame:
        """Frame n of this utterance (``Frame.index`` is ``frame_offset + n``), or, when the render policy says
        it would be too late, the avatar's own frame with ``timings_ms[SKIPPED]``."""
        return run_alone(self.backend, self.render_steps(n))

    def render_steps(self, n: int) -> Steps:
        """``render`` as model requests: frame n's inputs are yielded as one ``FrameJob`` (with the policy's
        deadline) and the frame is finished from the answer. A frame the policy skips, or that a shared worker
        left out of an overloaded round (``NOT_RENDERED``), is the avatar's own frame with ``timings_ms[SKIPPED]``."""
        index = self.frame_offset + n
        a = self.avatar.index_for(index)
        policy = self.render_policy
        if policy is not None and not policy.should_render(index):
            return self._skipped(index, a)
        t = policy.now() if policy is not None else 0.0
        if self.runs_l2v:
            job = self.prepare_frame(n, a)
            job.deadline = policy.deadline(index) if policy is not None else None
            result = yield job
            if result is NOT_RENDERED:
                return self._skipped(index, a)
            frame = self.finish_frame(job, result)
        else:
            frame = self.warp_frame(n, a)
        if policy is not None:
            policy.rendered(policy.now() - t)
        return frame

    def _skipped(self, index: int, a: int) -> Frame:
        return Frame(index, self.avatar.frames[a], self.avatar.landmarks[a], a, {SKIPPED: 1.0})

    def prepare_frame(self, n: int, a: int) -> FrameJob:
        """Everything frame n's L2V call over avatar frame ``a`` needs, from this session's state."""
        cfg, av, row = self.cfg, self.avatar, self.row
        t = time.perf_counter()
        lms = self.landmarks_for(n, a)
        heat = render_heatmaps(lms, self.latent_px, cfg.face.crop_px)[None]
        masked = av.masked_latents[a][None]
        previous = self._previous if self._previous is not None else av.latents[a][None]
        rng = np.random.default_rng([self.inference.seed, n])
        x = masked.copy()
        x[:, :, row:] = rng.standard_normal(x[:, :, row:].shape, dtype=np.float32)
        mel_window = self._mel_window(n)
        timings = {"conditions": (time.perf_counter() - t) * 1e3}
        return FrameJob(
            n,
            a,
            lms,
            x,
            masked,
            self.identity,
            previous,
            heat,
            lms[DRIVEN][None],
            mel_window,
            self.schedule,
            row,
            timings,
            weights=self.avatar.enrolment,
        )

    def warp_frame(self, n: int, a: int) -> Frame:
        """Frame n over avatar frame ``a`` without L2V (``runs_l2v`` False): the warp and the mouth prior."""
        t = time.perf_counter()
        lms = self.landmarks_for(n, a)
        timings = {"landmarks": (time.perf_counter() - t) * 1e3}
        t = time.perf_counter()
        crop_img, mask = self.compose_crop(a, None, lms)
        timings["composite"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        image = crop.paste_back(self.avatar.frames[a], crop_img, mask, self.avatar.transforms[a])
        timings["paste"] = (time.perf_counter() - t) * 1e3
        return Frame(self.frame_offset + n, image, lms, a, timings, crop_img)

    def finish_frame(self, job: FrameJob, result: FrameResult) -> Frame:
        """Frame ``job.n`` from its generated latent and decoded rows: composite, pose prior for the next frame."""
        av, row, a, x = self.avatar, self.row, job.avatar_index, result.latent
        timings = {**job.timings_ms, **result.timings_ms}
        t = time.perf_counter()
        crop_img, mask = self.compose_crop(a, x, job.landmarks, lower_face=result.lower_face)
        timings["decode"] += (time.perf_counter() - t) * 1e3  # the composite, as before the decode was batched
        t = time.perf_counter()
        # The next frame's pose prior: the avatar's own upper latent over the newly generated lower face.
        self._previous = np.concatenate([av.latents[a][None, :, :row], x[:, :, row:]], axis=2)
        image = crop.paste_back(av.frames[a], crop_img, mask, av.transforms[a])
        timings["paste"] = (time.perf_counter() - t) * 1e3
        return Frame(self.frame_offset + job.n, image, job.landmarks, a, timings, crop_img)


def lay_lower_face(cfg: ModelConfig, base_crop: np.ndarray, lower_face: np.ndarray, row: int) -> np.ndarray:
    """``base_crop`` (256, 256, 3) with the decoded rows ``lower_face`` (from ``decode_top_row(row)`` down) over it."""
    out = base_crop.copy()
    y0 = decode_top_row(cfg, row) * cfg.autoencoder.downscale
    out[y0:] = lower_face[: cfg.face.crop_px - y0]
    return out

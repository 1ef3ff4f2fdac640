"""``facecast enroll``: fit the model to one known person from a minute or two of their own video.

One job: check the video, prepare the avatar (as ``facecast prepare`` does), fine-tune L2V on the person's own
frames and speech with low-rank adapters (peft LoRA on the UNet's attention, feed-forward and conv layers), and
write a bundle that every ``--avatar`` accepts:

    BUNDLE/avatar.npz, meta.json   the avatar, exactly as ``facecast prepare`` writes it (meta.json also records
                                   the base L2V's hash and the adapter's file names)
    BUNDLE/l2v_lora.safetensors    the adapter's weights only (the shipped model stays untouched)
    BUNDLE/l2v_lora.json           the adapter's LoRA config + the base L2V hash it was fitted to
    BUNDLE/a2l.safetensors         only with ``EnrollConfig.a2l_steps`` > 0 (off by default, see there): the
                                   person's whole A2L (250 kB)

Without A2L training, the base A2L's motion gain is re-measured on the person's own video (a scalar in meta.json,
``EnrollConfig.calibrate_a2l_motion``): the backend then runs a copy of the base A2L at that gain, or at the
model's own where that is lower (``EnrollConfig.a2l_gain_rule``, "lower_only" by default).

The objective is the base model's own (``train.L2VObjective``: x0-prediction, mouth-weighted), on the same batches
(``train.l2v_batch``), through the same loop (``train.train_loop``), so the adapter learns what the composite uses
(the mouth interior). The last ``val_fraction`` of the video is held back: its loss is the validation figure.

Nothing is written under BUNDLE until the end: the work (and the resumable run state) lives in ``BUNDLE.partial``,
which is renamed to BUNDLE when the adapter is written. ``resume=True`` continues an interrupted run from there.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint, media
from ..audio import check_speech
from ..avatar import face
from ..avatar.adapters import ADAPTER_CONFIG_FILE, LORA_TARGETS, add_adapter, l2v_hash
from ..avatar.prepare import (
    A2L_FILE,
    ADAPTER_FILE,
    DEFAULT_MAX_AVATAR_FRAMES,
    aligned_crops,
    avatar_from_crops,
    load_avatar_frames,
    model_hash,
)
from ..config import ModelConfig
from ..errors import AudioError, FaceError, InputError
from ..landmarks import register_to
from ..latents import EncodeFn, encode_images
from ..mouth_prior import load_mouth_prior, shows_l2v
from ..speaker import speaker_embedding
from ..vad import speech_frames
from ..whisper import Encode as SpeechEncode
from ..whisper import a2l_features, model_encode
from .budget import BudgetRule, StageCosts, budget_record, plan_preparation, time_per_item
from .dataset import Clip
from .latents import torch_encoder
from .train import (
    A2LObjective,
    L2VObjective,
    TrainConfig,
    a2l_batch,
    a2l_clip,
    l2v_batch,
    l2v_clip,
    train_loop,
    with_motion_gain,
)

RUN_PART = "l2v_lora"  # train_loop's run folders: BUNDLE.partial/runs/l2v_lora/ and runs/a2l/

# Bad-input thresholds, measured with `python3 -m facecast.engine.evaluation.studies.enroll_thresholds --seconds 20`
# on 12 single-person clips of ../shared/data/clips (first 20 s of each; dlib) and on 54 spliced pairs (clip A's first
# half + clip B's second half, two different people; the two Obama clips paired with each other left out):
MIN_SPEECH_FRACTION = 0.3  # webrtcvad (mode 2) share of 30 ms frames with speech: talking clips 0.60-1.0
MAX_MULTI_FACE_FRACTION = 0.2  # frames where dlib finds >= 2 usable faces: 0.0 in every single-person clip
# Frames where dlib detects no face: 0.0 in 11 of the 12 clips, 0.31 in the 2.2 s lrs3 clip (small, soft face;
# the tracker bridges those frames, but the crops there are guesses). dataset.MIN_FOUND_RATIO is 0.9 for training.
MAX_LOST_FRACTION = 0.2
# The two-halves checks run on videos of >= IDENTITY_CHECK_SECONDS (halves of >= 5 s; Resemblyzer is unsteady on
# shorter ones). On the 8 clips of >= 10 s, the same person gave voice cosine 0.878-0.954 and shape drift
# 0.010-0.049; the spliced pairs gave cosine 0.46-0.82 (0.94 when one half was a 1.1 s lrs3 clip) and drift
# 0.026-0.106. "cosine < 0.85 or drift > 0.06" flags 51 of the 54 pairs (all 40 without the 2.2 s clip) and
# none of the single-person clips.
IDENTITY_CHECK_SECONDS = 10.0
MIN_HALF_SPEAKER_COSINE = 0.85  # Resemblyzer embeddings of the two halves of the audio
MAX_HALF_SHAPE_DRIFT = 0.06  # mean pose-free landmark shape of the two halves, in interocular distances
VAL_SEED = 1234  # the validation loss uses the same noise and timesteps every time, so its curve is comparable
VAL_BATCH = 32  # held-back samples per validation figure: with 8 it wandered +-5% between logs


A2L_GAIN_RULES = ("person", "lower_only")  # EnrollConfig.a2l_gain_rule's values (see enrolled_motion_gain)


def check_gain_rule(rule: str) -> None:
    if rule not in A2L_GAIN_RULES:
        raise InputError(
            f"unknown A2L gain rule {rule!r} (EnrollConfig.a2l_gain_rule): use one of {', '.join(A2L_GAIN_RULES)}"
        )


@dataclass(frozen=True)
class EnrollConfig:
    """Every enrolment default in one place. The default budget fits a 2-core CPU: <= 15 min for 1-2 min video."""

    minutes: float = 14.0  # wall-clock budget for the whole run (prepare + fit + write)
    # The step count is what the budget allows at the measured step time, up to this. On edtalk_lieu_60s's first
    # 70% the held-back loss stopped improving after ~300-600 steps (0.0216 -> 0.0185 at 810 steps; 0.0192 at 1768).
    max_steps: int = 600
    batch: int = 8
    lr: float = 1e-3  # LoRA tolerates (and in a few hundred steps needs) a higher rate than full training
    warmup_steps: int = 30
    rank: int = 8
    alpha: float = 8.0
    mouth_loss_weight: float = 4.0  # as the default model's L2V was trained (configs/default.json)
    # A2L: the person's own mouth motion for their own voice. Mouth landmark error comes from A2L (the composite
    # warps the avatar's pixels to its landmarks; L2V paints only the inside of the lips). 0 steps = keep the base.
    # Off by default: measured on edtalk_lieu_60s (personal protocol), 300 steps made mouth LMD 1.11x generic and
    # psnr_mouth -0.4 dB (held-back A2L loss 0.431 -> 0.456; 100-600 steps and lr 1e-4..1e-3 were all worse).
    a2l_steps: int = 0
    a2l_batch: int = 16
    a2l_lr: float = 3e-4
    # Without A2L training: re-measure the base A2L's motion gain on the person's own video (no training, a scalar
    # in meta.json). The generic gain makes some people move 1.7x as much as they do (docs/enroll.md).
    calibrate_a2l_motion: bool = True
    # The gain is this x std(real inner-lip gap) / std(predicted): the recipe the default model's own gain was
    # measured with (configs/default.json's a2l.motion_target), now on the person instead of the training clips.
    a2l_motion_target: float = 0.8
    # Which gain the bundle runs (``enrolled_motion_gain``): "person" = the re-measured gain as it is;
    # "lower_only" = the lower of the person's and the model's: the calibration may damp an over-driven mouth but
    # never drive it harder than the model does. On 6 validation clips (docs/enroll.md, 2 held-out speakers) the
    # person's gain was higher on 2, where "lower_only" scored better (mouth LMD 0.91x vs 0.92x generic and 0.99x
    # vs 1.17x; psnr_mouth +0.20 and +0.86 dB over "person"); elsewhere the two rules are the same bundle.
    a2l_gain_rule: str = "lower_only"
    val_fraction: float = 0.1  # the video's last part, held back for the validation figure
    min_seconds: float = 10.0  # shorter videos are refused: too few mouth shapes to fit
    max_seconds: float = 180.0  # longer videos are cut: more than 3 min adds little and holds every frame in RAM
    avatar_frames: int = DEFAULT_MAX_AVATAR_FRAMES  # the bundle's idle loop, from the video's start
    threads: int = 1  # torch CPU threads (0 = torch's default)
    seed: int = 0
    log_every: int = 25
    save_every: int = 50  # resume granularity, in steps
    check_identity: bool = True  # the two-halves voice and face-shape checks (on videos >= IDENTITY_CHECK_SECONDS)
    # The budget (``minutes``) covers the whole run: the preparation's per-frame costs are measured on the video's
    # first ``probe_frames`` and the run prepares the longest prefix of the video that fits (engine/training/budget.py).
    probe_frames: int = 50  # 2 s: enough decode/landmark/encoder calls to time; < 1 s of the run's time
    probe_encodes: int = 8  # crops encoded to time the autoencoder (the avatar's latents are 2 x 250 encodes)
    # The plan aims this share under the budget, for the prediction's own error: on edtalk_lieu_60s with the load
    # average rising from 2.7 to 4 during the run, the preparation took 15% longer than its probe predicted.
    budget_margin: float = 0.08
    # Once, after the plan: model loads, the bundle's frames video + latents, and the A2L graph the CLI exports.
    # Measured 3.5 s on edtalk_lieu_60s (Intel Xeon, 2 cores, load 4: write 2.6 s, graph 0.9 s); larger frames
    # take x264 longer.
    write_seconds: float = 10.0
    l2v_prepare_share: float = 0.5  # with an L2V adapter: the preparation's share of the budget at most

    def __post_init__(self) -> None:
        check_gain_rule(self.a2l_gain_rule)  # refused at once, not after minutes of preparation


@dataclass
class EnrolVideo:
    """What the checks and the fit need from the video: all frames' crops, landmarks, and the audio."""

    frames: list[np.ndarray]
    landmarks: np.ndarray  # (T, 68, 2) image pixels
    found: np.ndarray  # (T,) bool
    faces: np.ndarray  # (T,) how many usable faces the detector saw
    audio: np.ndarray  # 16 kHz, cut to T frames

    @property
    def seconds(self) -> float:
        return len(self.frames) / 25.0

    @property
    def lost_fraction(self) -> float:
        """Frames where the detector finds no face. (Not ``~found``: the tracker's refine step bridges lost frames
        with the previous box, and on a blank frame still returns a plausible shape.)"""
        return float(np.mean(self.faces == 0)) if len(self.faces) else 1.0

    @property
    def multi_face_fraction(self) -> float:
        return float(np.mean(self.faces >= 2)) if len(self.faces) else 0.0


class _CountingDetector:
    """A landmark backend that also records how many faces (of usable size) each ``detect`` call saw."""

    def __init__(self, backend: face.LandmarkBackend, min_face_px: float) -> None:
        self.backend, self.min_face_px, self.counts = backend, min_face_px, []

    def detect(self, image_rgb: np.ndarray) -> list[np.ndarray]:
        faces = self.backend.detect(image_rgb)
        self.counts.append(sum(_face_height(f) >= self.min_face_px for f in faces))
        return faces

    def refine(self, image_rgb: np.ndarray, previous: np.ndarray) -> np.ndarray | None:
        return self.backend.refine(image_rgb, previous)


def _face_height(lms: np.ndarray) -> float:
    """Eye-centre to mouth-centre distance, as ``face.check_face_size`` measures a face."""
    return float(np.linalg.norm((lms[36:42].mean(0) + lms[42:48].mean(0)) / 2 - lms[48:68].mean(0)))


# ---------------------------------------------------------------------------------------------- checks


def speech_fraction(audio_16k: np.ndarray) -> float:
    """Share of 30 ms frames that webrtcvad (mode 2) calls speech."""
    voiced = speech_frames((np.clip(audio_16k, -1, 1) * 32767).astype("<i2"), 480, mode=2)  # 480: 30 ms
    return float(voiced.mean()) if len(voiced) else 0.0


def shape_drift(landmarks: np.ndarray, found: np.ndarray) -> float:
    """How far the mean face shape of the second half is from the first half's, in interocular distances.

    Landmarks are registered (similarity on the stable points) onto the first found frame, so head pose and
    distance cancel; averaging over many frames cancels speech. What is left is the face's own proportions.
    """
    lms = landmarks[found]
    if len(lms) < 4:
        return 0.0
    registered = register_to(lms, lms[0])
    half = len(registered) // 2
    a, b = registered[:half].mean(0), registered[half:].mean(0)
    interocular = float(np.linalg.norm(a[36:42].mean(0) - a[42:48].mean(0)))
    return float(np.linalg.norm(a - b, axis=1).mean() / max(interocular, 1e-6))


def speaker_cosine(audio_16k: np.ndarray) -> float:
    """Cosine similarity of the Resemblyzer embeddings of the audio's two halves (1 = same voice)."""
    half = len(audio_16k) // 2
    a, b = speaker_embedding(audio_16k[:half]), speaker_embedding(audio_16k[half:])
    if not a.any() or not b.any():
        return 1.0  # too little speech in a half to tell: the speech checks speak for it
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_enrol_video(video: EnrolVideo, cfg: ModelConfig, ecfg: EnrollConfig, where: str) -> dict[str, float]:
    """Refuse a video enrolment cannot use, saying why and what to record instead; returns the measured figures."""
    if video.seconds < ecfg.min_seconds:
        raise InputError(
            f"{where} has {video.seconds:.1f} s of face with audio: enrolment needs at least {ecfg.min_seconds:.0f} s "
            "of the person talking (1-2 minutes is best)."
        )
    check_speech(video.audio, cfg.audio, where)
    figures = {"seconds": video.seconds, "speech_fraction": speech_fraction(video.audio)}
    if figures["speech_fraction"] < MIN_SPEECH_FRACTION:
        raise AudioError(
            f"{where} has speech in only {figures['speech_fraction']:.0%} of its audio (need "
            f"{MIN_SPEECH_FRACTION:.0%}): record the person talking, without long silences or music."
        )
    figures["multi_face_fraction"] = video.multi_face_fraction
    if figures["multi_face_fraction"] > MAX_MULTI_FACE_FRACTION:
        raise FaceError(
            f"{where} shows several people ({figures['multi_face_fraction']:.0%} of frames have two or more faces): "
            "enrol from a video of the one person alone in the frame."
        )
    figures["lost_fraction"] = video.lost_fraction
    if figures["lost_fraction"] > MAX_LOST_FRACTION:
        raise FaceError(
            f"the face is lost in {figures['lost_fraction']:.0%} of {where}'s frames (at most "
            f"{MAX_LOST_FRACTION:.0%}): record facing the camera, well lit, without covering the face."
        )
    if ecfg.check_identity and video.seconds >= IDENTITY_CHECK_SECONDS:
        figures["speaker_cosine"] = speaker_cosine(video.audio)
        figures["shape_drift"] = shape_drift(video.landmarks, video.found)
        if figures["speaker_cosine"] < MIN_HALF_SPEAKER_COSINE or figures["shape_drift"] > MAX_HALF_SHAPE_DRIFT:
            raise InputError(
                f"{where} seems to show a different person in its second half (voice similarity "
                f"{figures['speaker_cosine']:.2f}, need >= {MIN_HALF_SPEAKER_COSINE}; face-shape drift "
                f"{figures['shape_drift']:.3f}, need <= {MAX_HALF_SHAPE_DRIFT}): enrol from a video of one person. "
                "If it is one person (a head turning or tilting away for long can move the face shape), run again "
                "with --no-identity-check."
            )
    return figures


def read_enrol_video(
    path: Path,
    cfg: ModelConfig,
    ecfg: EnrollConfig,
    backend: face.LandmarkBackend | None = None,
    max_frames: int | None = None,
) -> EnrolVideo:
    """The first ``max_frames`` frames (default: up to ``max_seconds``), per-frame landmarks and face counts, and the
    audio cut to the frames."""
    path = Path(path)
    audio = enrol_audio(path, cfg)
    limit = round(ecfg.max_seconds * cfg.audio.fps) if max_frames is None else max_frames
    frames = load_avatar_frames(path, cfg, max_frames=limit)
    n = min(len(frames), len(audio) // cfg.audio.samples_per_frame)
    frames = frames[:n]
    counter = _CountingDetector(backend or face.make_backend("dlib", cfg=cfg.face), cfg.face.min_face_px)
    if n:
        lms, found = face.video_landmarks(frames, counter, cfg.face, str(path))
    else:
        lms, found = np.zeros((0, 68, 2), np.float32), np.zeros(0, bool)
    return EnrolVideo(frames, lms, found, np.array(counter.counts[:n]), audio[: n * cfg.audio.samples_per_frame])


def enrol_audio(path: Path, cfg: ModelConfig) -> np.ndarray:
    """The video's audio at the model's rate (refusing an image: enrolment needs a video)."""
    if media.is_image(path):
        raise InputError(f"{path} is an image: enrolment needs a video of the person talking (1-2 minutes).")
    return media.load_audio(path, cfg.audio.sample_rate)


# ---------------------------------------------------------------------------------------------- the budget


def measure_costs(
    path: Path,
    cfg: ModelConfig,
    ecfg: EnrollConfig,
    backend: face.LandmarkBackend,
    encode: EncodeFn | None,
    speech_encode: SpeechEncode | None,
    audio: np.ndarray,
    clock: Callable[[], float],
) -> StageCosts:
    """Each preparation stage timed on the video's first ``probe_frames``, as the run will do it on every frame.
    What the probe computes is thrown away: the run redoes those frames (under a second) so that its landmark
    tracking and crop smoothing run over the whole prefix in one pass. Nothing here refuses the video (a face
    missing from the first frames is the checks' to judge, on the frames the plan gives them). ``encode`` None: the
    run encodes nothing (a model that shows no L2V picture: no adapter, no avatar latents), its cost is 0."""
    import cv2

    t = clock()
    frames = load_avatar_frames(path, cfg, max_frames=ecfg.probe_frames)
    for frame in frames:
        backend.detect(frame)  # the detector runs on every frame (tracking only bridges its misses)
    read_frame = (clock() - t) / len(frames)  # decoding and landmarks
    # First calls load models and allocate once per run (0.33 s for the speaker network, 2x its 2 s of audio):
    # untimed, so the per-frame costs are the run's, not the warm-up's.
    speaker_embedding(audio[: cfg.audio.sample_rate])
    encode_crop = 0.0
    if encode is not None:
        # An encode costs the same whatever the picture: the probe's frames, resized to crops.
        size = (cfg.face.crop_px, cfg.face.crop_px)
        crops = np.stack([cv2.resize(frames[i % len(frames)], size) for i in range(ecfg.probe_encodes)])
        encode_images(encode, crops[:1])
        encode_crop = time_per_item(lambda: encode_images(encode, crops), len(crops), clock)
    clip_audio = audio[: len(frames) * cfg.audio.samples_per_frame]

    def audio_work() -> None:
        if ecfg.check_identity:
            speaker_embedding(clip_audio)
        if ecfg.calibrate_a2l_motion or ecfg.a2l_steps:
            speaker_embedding(clip_audio)  # the calibration's speaker condition
            a2l_features(clip_audio, cfg, speech_encode)

    audio_frame = time_per_item(audio_work, len(frames), clock)
    return StageCosts(read_frame, encode_crop, audio_frame, ecfg.write_seconds)


def budget_rule(ecfg: EnrollConfig, fps: int, fit_l2v: bool) -> BudgetRule:
    return BudgetRule(
        minutes=ecfg.minutes,
        margin=ecfg.budget_margin,
        min_frames=math.ceil(ecfg.min_seconds * fps),
        avatar_frames=ecfg.avatar_frames,
        fit_l2v=fit_l2v,
        l2v_prepare_share=ecfg.l2v_prepare_share,
    )


def record_total(bundle: Path, total_s: float) -> dict:
    """Rewrite the bundle's budget record with the run's whole wall time (the CLI's, after the A2L graph)."""
    meta_path = Path(bundle) / "meta.json"
    meta = json.loads(meta_path.read_text())
    enrolment = meta["enrolment"]
    stages = {**enrolment["budget"]["actual_s"], "after_enroll": total_s - enrolment["budget"]["total_s"]}
    enrolment["budget"] = budget_record(enrolment["budget"]["planned"], stages, total_s)
    meta_path.write_text(json.dumps(meta, indent=2))
    return enrolment["budget"]


# ---------------------------------------------------------------------------------------------- adapters
# (loading a bundle's adapter is runtime code: engine/avatar/adapters.py)


def save_adapter(l2v: torch.nn.Module, folder: Path, rank: int, alpha: float, base_hash: str) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    weights = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(l2v.unet).items()}
    save_file(weights, str(Path(folder) / ADAPTER_FILE))
    config = {"rank": rank, "alpha": alpha, "target_modules": list(LORA_TARGETS), "base_l2v_hash": base_hash}
    (Path(folder) / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2))


def enrolled_motion_gain(person_gain: float, model_gain: float, rule: str) -> float:
    """The motion gain an enrolled bundle runs, from the gain measured on the person and the model's own, by
    ``EnrollConfig.a2l_gain_rule``."""
    check_gain_rule(rule)
    return person_gain if rule == "person" else min(person_gain, model_gain)


def person_motion_gain(model_dir: Path, cfg: ModelConfig, clip: Clip, target: float) -> float:
    """The base A2L's motion gain re-measured on the person's own clip (as ``facecast train a2l`` measures it on
    its training clips): ``target`` x std(real inner-lip gap) / std(predicted)."""
    a2l = checkpoint.load_part(model_dir, "a2l", cfg)  # a fresh copy: the measurement resets its gain
    # A Whisper-hearing A2L (the shipped model's) needs the model's speech encoder for the person's audio.
    return with_motion_gain(cfg, a2l, [clip], {}, target, model_encode(model_dir, cfg)).a2l.motion_gain


# ---------------------------------------------------------------------------------------------- the fit


class _SeededWhenEval:
    """The training objective, but with fixed noise and timesteps when the model is in eval mode (validation)."""

    def __init__(self, objective: L2VObjective) -> None:
        self.objective = objective

    def __call__(self, model: torch.nn.Module, batch: dict, cfg: ModelConfig, step: int) -> torch.Tensor:
        if model.training:
            return self.objective(model, batch, cfg, step)
        with torch.random.fork_rng():
            torch.manual_seed(VAL_SEED)
            return self.objective(model, batch, cfg, step)


def stage_seconds(ends: dict[str, float]) -> dict[str, float]:
    """Each stage's seconds from the clock times their ends (in order; the first is the run's start)."""
    times = list(ends.values())
    return {name: end - before for name, end, before in zip(list(ends)[1:], times[1:], times, strict=False)}


def _seconds_per_step(model: torch.nn.Module, batch: dict, objective: L2VObjective, cfg: ModelConfig) -> float:
    """Time a training step (forward + backward): the median of 3 after a warm-up one; the weights are not
    changed. On a busy machine this is what the machine gives now, so the plan can fall short of the budget."""
    model.train()
    times = []
    for _ in range(4):
        t = time.perf_counter()
        objective(model, batch, cfg, 0).backward()
        times.append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    return float(np.median(times[1:])) * 1.1  # + the optimizer step and batch drawing


def _clip(name: str, crops: np.ndarray, lms: np.ndarray, audio: np.ndarray, speaker: np.ndarray | None = None) -> Clip:
    speaker = np.zeros(256, np.float32) if speaker is None else speaker
    return Clip(name, crops, lms.astype(np.float32), audio, speaker, np.ones(len(crops), bool))


def fit_a2l(
    model_dir: Path, cfg: ModelConfig, ecfg: EnrollConfig, train: Clip, held: Clip, work: Path
) -> tuple[torch.nn.Module, float, tuple[float, float]]:
    """Fine-tune the whole (small) A2L on the person's landmarks; returns it, its motion gain measured on the
    training part (as ``facecast train a2l`` does), and the held-back loss (base, fine-tuned)."""
    tcfg = TrainConfig(
        steps=ecfg.a2l_steps,
        batch=ecfg.a2l_batch,
        lr=ecfg.a2l_lr,
        warmup_steps=min(20, ecfg.a2l_steps),
        seed=ecfg.seed,
        log_every=max(1, ecfg.a2l_steps // 6),
        save_every=ecfg.save_every,
        threads=ecfg.threads,
        holdout=(),
    )
    a2l = checkpoint.load_part(model_dir, "a2l", cfg)
    objective = A2LObjective(tcfg)
    cache: dict = {}
    encode = model_encode(model_dir, cfg)  # Whisper features (None for log-mel), computed once per clip here
    for clip in (train, held):
        a2l_clip(clip, cfg, cache, encode)
    val = a2l_batch([held], cfg, replace(tcfg, batch=8), np.random.default_rng(VAL_SEED), cache, augment=False)
    with torch.no_grad():
        base_val = float(objective(a2l.eval(), val, cfg, 0))
    summary = train_loop(
        "a2l", a2l, lambda rng: a2l_batch([train], cfg, tcfg, rng, cache), objective, cfg, tcfg, work, val
    )
    gain = with_motion_gain(cfg, a2l, [train], cache, ecfg.a2l_motion_target).a2l.motion_gain
    return a2l.eval(), gain, (base_val, summary["history"][-1].get("val_loss") if summary["history"] else base_val)


def fit_l2v_adapter(
    model_dir: Path,
    cfg: ModelConfig,
    ecfg: EnrollConfig,
    tcfg: TrainConfig,
    clips: tuple[Clip, Clip],
    work: Path,
    resume: bool,
    seconds_left: float,
    write_s: float,
    log: Callable[[str], None],
) -> tuple[torch.nn.Module, int, dict]:
    """A LoRA adapter on L2V fitted to ``clips`` (train, validation: L2V clips of the person) in the ``seconds_left``
    of the budget, less ``write_s`` for writing the bundle; returns L2V with the adapter, the planned steps and the
    training summary."""
    train_clip, val_clip = clips
    start = time.time()
    l2v = add_adapter(checkpoint.load_part(model_dir, "l2v", cfg), ecfg.rank, ecfg.alpha)
    objective = _SeededWhenEval(L2VObjective(cfg, ecfg.mouth_loss_weight))
    val_batch = l2v_batch([val_clip], cfg, replace(tcfg, batch=VAL_BATCH), np.random.default_rng(VAL_SEED))
    previous_run = work / "runs" / RUN_PART / "train_config.json"
    if resume and previous_run.is_file():  # the same schedule as the interrupted run, so its LR curve continues
        steps = json.loads(previous_run.read_text())["train"]["steps"]
    else:
        per_step = _seconds_per_step(l2v, l2v_batch([train_clip], cfg, tcfg, np.random.default_rng(0)), objective, cfg)
        left = seconds_left - (time.time() - start) - write_s
        steps = int(np.clip(left / per_step, 1, ecfg.max_steps))
        log(f"{per_step:.2f} s a step: {steps} steps fit the {ecfg.minutes:g} min budget")
    # The time limit is a safety net (train_loop saves and stops); the step count is what should end the run.
    time_left = max(1.0, seconds_left - (time.time() - start) - write_s)
    tcfg = replace(tcfg, steps=steps, time_limit_s=time_left)

    def next_batch(rng: np.random.Generator) -> dict:
        return l2v_batch([train_clip], cfg, tcfg, rng)

    summary = train_loop(RUN_PART, l2v, next_batch, objective, cfg, tcfg, work, val_batch)
    return l2v, steps, summary


def enroll(
    video: Path,
    out: Path,
    model_dir: Path = checkpoint.DEFAULT_MODEL_DIR,
    ecfg: EnrollConfig = EnrollConfig(),
    resume: bool = False,
    face_backend: face.LandmarkBackend | None = None,
    log: Callable[[str], None] = print,
    started: float | None = None,
    clock: Callable[[], float] = time.time,
    costs: StageCosts | None = None,
) -> dict:
    """Check ``video``, fit the adapter and write the bundle ``out`` in ``ecfg.minutes``; returns a summary (also in
    meta.json). ``started``: when the run began by ``clock`` (the CLI gives the process's start, so imports count);
    ``costs``: the preparation's per-frame costs (default: measured on the video's first frames)."""
    start = clock() if started is None else started
    stage_ends = {"start": start}

    def stage_done(name: str) -> None:  # seconds since the previous stage ended, for the budget record
        stage_ends[name] = clock()

    out, model_dir = Path(out), Path(model_dir)
    work = out.with_name(out.name + ".partial")
    if ecfg.threads:
        torch.set_num_threads(ecfg.threads)
    if out.exists() and not (out / "meta.json").is_file():  # never delete a folder that is not a bundle
        raise InputError(f"{out} exists and is not an avatar bundle: give a new folder name for --out.")
    cfg = checkpoint.load_config(model_dir)
    # A model whose frames show no pixel of L2V's picture (the warp and its mouth prior draw the face) gains
    # nothing from an L2V adapter: the person's A2L (or its motion gain) is the whole enrolment then.
    # The same models' sessions never read the avatar's latents either (``needs_latents``): nothing is encoded then.
    fit_l2v = shows_l2v(cfg.face, load_mouth_prior(model_dir))
    codec = checkpoint.load_part(model_dir, "autoencoder", cfg) if fit_l2v else None
    encode = torch_encoder(codec) if codec is not None else None
    backend = face_backend or face.make_backend("dlib", cfg=cfg.face)

    # 0. the plan: how much of the video fits the budget, said (or refused) before the work starts
    audio = enrol_audio(Path(video), cfg)
    video_frames = min(len(audio) // cfg.audio.samples_per_frame, round(ecfg.max_seconds * cfg.audio.fps))
    if costs is None:
        speech_encode = model_encode(model_dir, cfg) if ecfg.calibrate_a2l_motion or ecfg.a2l_steps else None
        costs = measure_costs(Path(video), cfg, ecfg, backend, encode, speech_encode, audio, clock)
    plan = plan_preparation(costs, video_frames, clock() - start, budget_rule(ecfg, cfg.audio.fps, fit_l2v))
    log(plan.describe())
    stage_done("plan")

    # 1. the video, checked before anything is written
    data = read_enrol_video(video, cfg, ecfg, backend, max_frames=plan.frames)
    figures = check_enrol_video(data, cfg, ecfg, str(video))
    transforms, crops, lms_crop = aligned_crops(data.frames, data.landmarks, cfg)
    log(f"{video}: {data.seconds:.1f} s prepared, face found in {data.found.mean():.0%} of frames")

    # 2. the avatar, as `facecast prepare` makes it, from the video's first frames (latents only for L2V)
    k = min(ecfg.avatar_frames, len(crops))
    avatar = avatar_from_crops(data.frames[:k], transforms[:k], crops[:k], lms_crop[:k], encode, cfg, str(video))

    # 3. the fit: train on the first part, validate on the held-back end
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    n_val = max(2, round(len(crops) * ecfg.val_fraction))
    spf = cfg.audio.samples_per_frame
    cut = len(crops) - n_val
    tcfg = TrainConfig(
        steps=ecfg.max_steps,
        batch=ecfg.batch,
        lr=ecfg.lr,
        warmup_steps=ecfg.warmup_steps,
        seed=ecfg.seed,
        log_every=ecfg.log_every,
        save_every=ecfg.save_every,
        threads=ecfg.threads,
        holdout=(),
        mouth_loss_weight=ecfg.mouth_loss_weight,
    )
    if fit_l2v:
        train_clip = l2v_clip(codec, _clip("train", crops[:cut], lms_crop[:cut], data.audio[: cut * spf]), cfg, tcfg)
        val_clip = l2v_clip(codec, _clip("val", crops[cut:], lms_crop[cut:], data.audio[cut * spf :]), cfg, tcfg)
    data_audio = data.audio
    del codec, data
    stage_done("prepare")
    a2l, a2l_gain, a2l_val, measured_gain = None, None, None, None
    if ecfg.a2l_steps or ecfg.calibrate_a2l_motion:
        speaker = speaker_embedding(data_audio[: cut * spf])
        a2l_train = _clip("train", crops[:cut], lms_crop[:cut], data_audio[: cut * spf], speaker)
    if ecfg.a2l_steps:
        a2l_held = _clip("val", crops[cut:], lms_crop[cut:], data_audio[cut * spf :], speaker)
        a2l, a2l_gain, a2l_val = fit_a2l(model_dir, cfg, ecfg, a2l_train, a2l_held, work)
    elif ecfg.calibrate_a2l_motion:
        measured_gain = person_motion_gain(model_dir, cfg, a2l_train, ecfg.a2l_motion_target)
        a2l_gain = enrolled_motion_gain(measured_gain, cfg.a2l.motion_gain, ecfg.a2l_gain_rule)
        log(
            f"A2L motion gain on this person: {measured_gain:g} (the model's: {cfg.a2l.motion_gain:g}); "
            f"runs at {a2l_gain:g} ({ecfg.a2l_gain_rule})"
        )
    stage_done("calibrate")
    l2v, steps, summary = None, 0, {"steps": 0, "history": []}
    if fit_l2v:
        l2v, steps, summary = fit_l2v_adapter(
            model_dir,
            cfg,
            ecfg,
            tcfg,
            (train_clip, val_clip),
            work,
            resume,
            plan.budget_s * (1 - ecfg.budget_margin) - (clock() - start),
            plan.write_s,
            log,
        )
    else:
        log("this model shows no L2V picture (its mouth prior paints the mouth): no L2V adapter to fit")
    stage_done("adapter")

    # 4. the bundle: avatar + adapter, then the rename that makes it visible
    avatar.save(work, model_hash(model_dir))
    base_hash = l2v_hash(model_dir)
    if fit_l2v:
        save_adapter(l2v, work, ecfg.rank, ecfg.alpha, base_hash)
    if a2l is not None:
        checkpoint.save_part(a2l, work, "a2l")
    history = summary["history"] or [{}]
    report = {
        "video": str(video),
        "base_l2v_hash": base_hash,
        "adapter": ADAPTER_FILE if fit_l2v else None,
        "steps": summary["steps"],
        "planned_steps": steps,
        "train_frames": cut,
        "val_frames": n_val,
        "val_loss_first": history[0].get("val_loss"),
        "val_loss_last": history[-1].get("val_loss"),
        "a2l": A2L_FILE if a2l is not None else None,
        "a2l_motion_gain": a2l_gain,  # the gain the bundle runs; None: the model's own gain (calibration off)
        "person_a2l_motion_gain": measured_gain,  # measured on the person, before a2l_gain_rule
        "base_a2l_motion_gain": cfg.a2l.motion_gain,
        "a2l_val_loss": a2l_val,
        "checks": figures,
        "config": asdict(ecfg),
    }
    stage_done("write")
    report["seconds"] = round(clock() - start, 1)
    report["budget"] = budget_record(plan.record(), stage_seconds(stage_ends), clock() - start)
    log(f"{report['seconds']:.0f} s of the {plan.budget_s:.0f} s budget: {report['budget']['verdict']}")
    meta = json.loads((work / "meta.json").read_text())
    meta["enrolment"] = report
    (work / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(work / "runs", ignore_errors=True)  # the run state is only for resuming
    if out.exists():
        shutil.rmtree(out)
    work.replace(out)
    report["bundle_mb"] = round(sum(f.stat().st_size for f in out.iterdir()) / 1e6, 2)
    report["adapter_mb"] = round((out / ADAPTER_FILE).stat().st_size / 1e6, 3) if fit_l2v else 0.0
    return report

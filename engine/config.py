"""Every default lives here, once, as a small frozen dataclass.

Units are in the names: ``_samples`` at 16 kHz, ``_frames`` at 25 fps video frames, ``_px`` in the 256² crop.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


SAMPLE_RATE = 16_000  # Hz: every audio path (model, sources, metrics) works at this rate
FPS = 25  # video frames per second, in and out
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640: the audio of one video frame


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = SAMPLE_RATE
    fps: int = FPS
    n_fft: int = 512
    win_samples: int = 400  # 25 ms analysis window
    hop_samples: int = 160  # 10 ms: 4 mel frames per video frame
    n_mels: int = 80
    fmin_hz: float = 55.0
    fmax_hz: float = 7_600.0
    log_floor: float = 1e-5
    silence_rms: float = 1e-4  # below this RMS over the whole clip, the audio counts as silent
    # Scale of the natural-log mel energies before A2L. Per-frame normalisation (LayerNorm) would erase
    # loudness, the strongest cue for how far the mouth opens.
    log_mel_std: float = 3.0
    # A2L hears the log-mel minus its running mean per band (causal cepstral-mean normalisation): it removes the
    # microphone and room, which with a few dozen training clips otherwise tell speakers apart better than speech.
    # Time constant in mel frames (100 per second); 0 turns it off.
    running_mean_frames: int = 300

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def mels_per_frame(self) -> int:
        return self.samples_per_frame // self.hop_samples


INTERIOR_SOURCES = ("atlas", "l2v")  # FaceConfig.interior_source


@dataclass(frozen=True)
class FaceConfig:
    crop_px: int = 256
    # Where the alignment template puts the eye centres and the nose bottom in the crop (x, y in pixels).
    left_eye_px: tuple[float, float] = (96.0, 84.0)
    right_eye_px: tuple[float, float] = (160.0, 84.0)
    nose_px: tuple[float, float] = (128.0, 128.0)  # nose bottom (iBUG 33)
    smooth_frames: int = 9  # centred moving average of the crop transform over a video
    min_face_px: int = 32  # faces whose eye-to-mouth height is smaller are refused
    max_image_px: int = 4096  # larger sides are downscaled before detection
    detect_max_px: int = 640  # detection runs on a copy no larger than this
    feather_px: int = 12  # blur radius of the paste-back mask edge
    mouth_region_px: int = 26  # the regenerated region reaches this far around the lips (inside the lower face)
    # Lips, skin and jaw from the avatar's own pixels warped to the landmarks (``warp.py``); off = the decoded
    # lower face is pasted as it is (the first model's composite, kept for comparison).
    warp_prior: bool = True
    # The decoded (painted) mouth interior is used inside the inner lips grown by this, feathered by the next.
    interior_grow_px: int = 0  # 0 measured better than 1 on held-out PSNR and detail (docs/quality.md)
    # Wider feathers and mean-only colour matching of the warp raise mouth PSNR but soften the lip line (detail
    # ratio below the 0.7 target at feather 4): measured trade-off in docs/quality.md ("The interior mask").
    interior_feather_px: float = 1.5
    # What fills the inside of an opening mouth where the warp's source shows none: "atlas", the learned mouth
    # interior beside the model's weights (``mouth_prior.py``; L2V where a model has none), or "l2v", L2V's
    # decoded painting (on closed-mouth portraits a lip-coloured blur: docs/quality.md, "The open mouth").
    interior_source: str = "atlas"
    # A warp source whose mouth is open at least this fraction of the driving opening shows its own interior
    # (teeth), stretched; more closed sources get the painted one blended in (``LipSyncSession.interior_needed``).
    own_interior_ratio: float = 0.5
    # The warped source frame is colour-matched to frame a over the skin around the mouth, in mean and contrast
    # (True) or in mean only (False).
    warp_colour_contrast: bool = True
    # Per frame, the warp's source is the closed mouth whose pose and light are nearest (``warp.pick_sources``),
    # from this many most-closed frames; 1 = always the avatar's most closed mouth (the identity frame).
    warp_source_candidates: int = 64
    warp_source_min_gap_frames: int = 13  # about half a second: never a mouth from the same moment
    warp_source_switch_cost: float = 40.0  # grey levels x frames: what a change of source must gain (no flicker)

    def __post_init__(self) -> None:
        if self.interior_source not in INTERIOR_SOURCES:
            raise ValueError(f"face.interior_source must be one of {INTERIOR_SOURCES}, not {self.interior_source!r}")


SHAPE_PREDICTOR_EVALUATORS = ("numpy", "dlib")  # ShapePredictorConfig.evaluator


@dataclass(frozen=True)
class ShapePredictorConfig:
    """dlib's 68-point landmark model (the predictor; its face detector is dlib's own either way). A setting of the
    machine, not of a model: not part of ``ModelConfig``."""

    # "numpy": dlib's regression trees converted once per machine into memory-mapped arrays and evaluated in numpy
    # (``engine/avatar/shape_predictor.py``): dlib's own points, loaded in milliseconds instead of 0.4-0.6 s, at
    # ~1.8 ms a face instead of ~0.75. "dlib": dlib's own predictor, the 100 MB file loaded in every process.
    evaluator: str = "numpy"
    # Where the converted copy is kept; "": $FACECAST_CACHE_DIR, else $XDG_CACHE_HOME/facecast, else ~/.cache/facecast
    cache_dir: str = ""

    def __post_init__(self) -> None:
        if self.evaluator not in SHAPE_PREDICTOR_EVALUATORS:
            raise ValueError(f"evaluator must be one of {SHAPE_PREDICTOR_EVALUATORS}, not {self.evaluator!r}")


@dataclass(frozen=True)
class AutoencoderConfig:
    latent_channels: int = 8
    # diffusers' AutoencoderTiny layout; its blocks need one width per network. 4 blocks -> downscale factor 8.
    encoder_channels: int = 24
    encoder_blocks: tuple[int, ...] = (1, 1, 1, 1)
    decoder_channels: int = 16  # the decoder sets CPU speed (DESIGN.md's budget): keep it narrow
    decoder_blocks: tuple[int, ...] = (1, 2, 2, 1)
    latent_scale: float = 1.0  # set after training so that latents have unit standard deviation

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.encoder_blocks) - 1)


@dataclass(frozen=True)
class SpeechEncoderConfig:
    """The first blocks of OpenAI Whisper tiny.en's audio encoder (MIT), A2L's input when
    ``A2LConfig.audio_features == "whisper"`` (``engine/whisper.py``; source and licence in MODEL_CARD.md)."""

    # Whisper's own log-mel: 16 kHz, 25 ms Hann window, 10 ms hop, 80 Slaney mel bands, log10, floor at max - 8.
    n_fft: int = 400
    hop_samples: int = 160
    n_mels: int = 80
    width: int = 384  # tiny.en's model width; two encoder tokens (20 ms each) per video frame
    heads: int = 6
    max_positions: int = 1500  # Whisper's 30 s of positional encodings
    # Encoder blocks kept and run: the output after this many (of tiny.en's 4). A linear probe of the lip opening
    # peaked after block 2, but A2L's GRU did better on 3 (held-out opening correlation 0.542 -> 0.557,
    # docs/quality.md); the blocks after it are not shipped.
    blocks: int = 3
    # The live window: the encoder hears the last ``window_frames`` video frames of audio (zeros before the start),
    # recomputed every ``every_frames`` frames; each call gives the features of the frames since the last call.
    # The shipped model: a 2 s window every frame (1 s did worse, 4 s no better). Every 2 frames halves the
    # encoder's cost but makes a group's first frame wait a frame more (``ModelConfig.latency_frames``): p95
    # end-to-end 202 ms against 162 ms, both at 24.9 new pictures/s for two sessions (docs/benchmarks.md).
    window_frames: int = 50  # 2 s
    every_frames: int = 1
    # Silence appended after the window's end, in frames: Whisper was trained on speech followed by padding, never on
    # speech cut off mid-word at the window's edge. Costs encoder time, not latency (the silence is not waited for).
    pad_frames: int = 25  # 1 s: +0.02 of held-out opening correlation (2 s did no better)
    # Frame n's tokens come from the window ending ``delay_frames`` after it, so the encoder's attention hears that
    # much of what follows (a token at the window's very edge hears nothing after it). This is lookahead: the
    # session waits ``A2LConfig.lookahead_frames + delay_frames`` frames (``ModelConfig.latency_frames``).
    delay_frames: int = 0

    def __post_init__(self) -> None:
        if self.every_frames < 1 or self.every_frames > self.window_frames:
            raise ValueError(f"SpeechEncoderConfig.every_frames must be 1..window_frames, not {self.every_frames}")
        if not 0 <= self.delay_frames < self.window_frames:
            raise ValueError(f"SpeechEncoderConfig.delay_frames must be 0..window_frames - 1, not {self.delay_frames}")
        if (self.window_frames + self.pad_frames) * self.tokens_per_frame > self.max_positions:
            raise ValueError(f"Whisper has positions for {self.max_positions // 50} s: shorten the window or its pad")

    @property
    def window_samples(self) -> int:
        return self.window_frames * SAMPLES_PER_FRAME

    @property
    def tokens_per_frame(self) -> int:
        return SAMPLES_PER_FRAME // (2 * self.hop_samples)

    @property
    def max_every_frames(self) -> int:
        """The sparsest a live engine may run this encoder (``LiveConfig.speech_every_frames``): every
        ``2 * every_frames`` frames, half its work for a slow CPU (A2L hears those features as well: held-out opening
        correlation 0.565 against 0.557, docs/quality.md)."""
        return 2 * self.every_frames

    @property
    def output_tokens(self) -> int:
        """Tokens the encoder graph returns per window: those of the last ``max_every_frames + delay_frames`` frames
        before the pad, all that a push or a flush can read."""
        return (self.max_every_frames + self.delay_frames) * self.tokens_per_frame

    @property
    def frame_dim(self) -> int:
        """A2L's input width per video frame: the frame's encoder tokens side by side."""
        return self.tokens_per_frame * self.width


AUDIO_FEATURES = ("logmel", "whisper")


@dataclass(frozen=True)
class A2LConfig:
    # Small on purpose: with a few dozen training speakers a larger GRU memorises them and does worse on new ones
    # (held-out mouth LMD, `facecast eval-landmarks`: 1x64 GRU at 600 steps 0.0319; at 2000 steps 0.0331;
    # the unmoved mean shape 0.0300).
    hidden: int = 64
    layers: int = 1
    # Independently initialised predictors, averaged. On held-out speakers (docs/quality.md) 4 members raised the
    # inner-lip opening correlation from 0.34 (mean of single models over 4 seeds) to 0.37; the cost is 4 tiny GRUs.
    members: int = 4
    lookahead_frames: int = 2  # frame n is predicted once the audio of frame n + lookahead has arrived
    # What A2L hears per video frame: "logmel" (4 running-mean-normalised log-mel frames, 320 values) or "whisper"
    # (the frame's two tokens from Whisper tiny.en's encoder on a sliding window: ``SpeechEncoderConfig``).
    audio_features: str = "logmel"
    speaker_dim: int = 256  # Resemblyzer's embedding size
    speaker_hidden: int = 16
    dropout: float = 0.0
    # Dropout on the scaled audio features in training (0 = off): the 768 Whisper values per frame let the input
    # layer memorise the training speakers (held-out loss rises after ~100 steps).
    input_dropout: float = 0.0
    # In training, each sample's speaker and reference inputs can be zeroed with this probability (a guard
    # against memorising speakers); the held-out sweep found 0 better, so it is off by default.
    condition_dropout: float = 0.0
    # A regression to the mean under MSE damps the predicted motion (the first model moved the mouth about a
    # third as much as real speech). After training, the displacements are scaled by this gain, measured on the
    # training clips as std(real inner-lip opening) / std(predicted); 1.0 = unscaled.
    motion_gain: float = 1.0

    def __post_init__(self) -> None:
        if self.audio_features not in AUDIO_FEATURES:
            raise ValueError(f"A2LConfig.audio_features must be one of {AUDIO_FEATURES}, not {self.audio_features!r}")

    @property
    def state_width(self) -> int:
        """Last axis of the streaming state: the members' GRU states side by side."""
        return self.hidden * self.members


@dataclass(frozen=True)
class L2VConfig:
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    cross_attention_dim: int = 64
    attention_head_dim: int = 8
    prior_channels: int = 1  # the 1x1-conv bottleneck of the previous generated latent (paper 001)
    heatmap_channels: int = 3  # jaw, outer lip, inner lip drawn at latent resolution
    audio_context_frames: int = 2  # audio tokens cover frames n-2 .. n+2
    num_train_timesteps: int = 1000
    prediction_type: str = "sample"  # x0-prediction: what makes 1-2 step DDIM usable
    mask_top_px: int = 120  # rows at and below this are regenerated, rows above stay clean (paper 002)
    # Latent rows above the regenerated region that are decoded too, for the decoder's context (the export's decode
    # graph takes exactly these rows).
    decode_margin_rows: int = 2


@dataclass(frozen=True)
class ModelConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    a2l: A2LConfig = field(default_factory=A2LConfig)
    speech: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    l2v: L2VConfig = field(default_factory=L2VConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def latency_frames(self) -> int:
        """Frames of audio past frame n that must arrive before frame n can be made: A2L's lookahead, plus, where
        A2L hears the speech encoder, its delay and the wait for the end of n's group (the first frame of a group of
        ``every_frames`` has its features only when the group's last frame has arrived)."""
        if self.a2l.audio_features != "whisper":
            return self.a2l.lookahead_frames
        return self.a2l.lookahead_frames + self.speech.delay_frames + self.speech.every_frames - 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**{f.name: build_dataclass(f.type_cls, d.get(f.name, {})) for f in _fields(cls)})

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        """A saved config.json; keys it lacks mean what they meant when it was written (``LEGACY_DEFAULTS``)."""
        d = json.loads(Path(path).read_text())
        return cls.from_dict({k: {**LEGACY_DEFAULTS.get(k, {}), **d.get(k, {})} for k in {*d, *LEGACY_DEFAULTS}})


# What a key missing from a saved config.json meant when that file was written, where today's default differs:
# model folders from before A2L ensembles have one GRU.
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"a2l": {"members": 1}}


@dataclass(frozen=True)
class InferenceConfig:
    steps: int = 2  # DDIM steps per frame
    seed: int = 0
    eta: float = 0.0


class _Field:
    def __init__(self, name: str, type_cls: type) -> None:
        self.name, self.type_cls = name, type_cls


def _fields(cls: type) -> list[_Field]:
    defaults = cls()
    return [_Field(f.name, type(getattr(defaults, f.name))) for f in dataclasses.fields(cls)]


def build_dataclass(cls: type[T], values: dict[str, Any]) -> T:
    """Build ``cls`` from a JSON dict: unknown keys are an error, lists become tuples, missing keys default."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; known: {sorted(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

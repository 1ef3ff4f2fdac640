"""The engine's Backend protocol on top of four exported graphs; runtimes (onnxruntime, TensorRT) add ``_run``.

What the graphs cannot do themselves happens here, once for every runtime:
- A2L is exported as one step (one video frame), so ``a2l`` loops over the T frames it is given, carrying state;
- a dynamic-batch export takes any batch in one call, up to the runtime's ``max_batch`` (TensorRT's optimisation
  profile); a static export's batch is cut into chunks of the exported batch, the last one padded;
- the decoder takes only the latent rows the pipeline decodes, so other heights get a clear error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from facecast.engine.backend import Weights
from facecast.engine.config import ModelConfig
from facecast.engine.errors import WeightsError
from facecast.engine.mouth_prior import MouthPrior, load_mouth_prior
from facecast.engine.speaker import resemblyzer_partials

from ..onnx.manifest import BATCH_AXES, CONFIG, SPEECH_GRAPH, GraphSpec, Manifest, TensorSpec, load_manifest
from .ort_session import import_onnxruntime, session_options

log = logging.getLogger("facecast.export")


class GraphBackend:
    """Base of the runtime backends: subclasses set ``name`` and implement ``_run``."""

    name = "graphs"
    max_batch: int | None = None  # most items one call of a dynamic-batch graph may take (None: any)
    # CPU threads of the speech encoder's onnxruntime session. One: in a session, driven as the live worker drives
    # it, two threads made a tick no faster (1 session 12.6 vs 14.6 ms, 2 sessions 25.4 vs 26.5 ms, quiet, Intel
    # Xeon, 2 cores; docs/benchmarks.md), and a second thread must wait for a core that a busy machine has given away.
    speech_threads: int = 1

    def __init__(self, export_dir: Path) -> None:
        self.export_dir = Path(export_dir)
        self.manifest: Manifest = load_manifest(self.export_dir)
        self.cfg: ModelConfig = ModelConfig.load(self.export_dir / CONFIG)
        self.autoencoder_hash: str = self.manifest.source_files["autoencoder.safetensors"]
        self.mouth_prior: MouthPrior | None = load_mouth_prior(self.export_dir)
        self._cpu_sessions: dict[str, Any] = {}  # side graph -> onnxruntime.InferenceSession, made on first use

    def _run(self, graph: str, feeds: dict[str, np.ndarray], weights: Weights = None) -> list[np.ndarray]:
        """One call of one graph with exactly its static shapes; outputs in manifest order. ``weights``: an
        enrolled bundle whose own graph runs instead (only runtimes with ``load_enrolment`` get one)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ Backend protocol

    def a2l(
        self,
        mel_frames: np.ndarray,
        speaker: np.ndarray,
        reference_px: np.ndarray,
        state: np.ndarray,
        weights: Weights = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        steps = []
        for t in range(mel_frames.shape[1]):
            args = [mel_frames[:, t : t + 1], speaker, reference_px, state]
            disp, state = self.run_batched("a2l_step", args, weights)
            steps.append(disp)
        if not steps:
            points = self.manifest.graphs["a2l_step"].outputs[0].shape[2]
            return np.zeros((mel_frames.shape[0], 0, points, 2), np.float32), np.asarray(state, np.float32)
        return np.concatenate(steps, axis=1), state

    def denoise(
        self,
        noisy: np.ndarray,
        timestep: np.ndarray,
        masked: np.ndarray,
        identity: np.ndarray,
        previous: np.ndarray,
        heatmaps: np.ndarray,
        driven_px: np.ndarray,
        mel_window: np.ndarray,
    ) -> np.ndarray:
        args = [noisy, timestep, masked, identity, previous, heatmaps, driven_px, mel_window]
        return self.run_batched("denoise", args)[0]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        m = self.manifest
        if latents.ndim != 4 or latents.shape[2] != m.decode_rows:
            raise WeightsError(
                f"the {self.name} export in {self.export_dir} decodes latents of {m.decode_rows} rows (rows "
                f"{m.decode_top_row}.. of the crop: mask_top_px={self.cfg.l2v.mask_top_px} less the "
                f"{self.cfg.l2v.decode_margin_rows}-row margin, as the pipeline decodes them); "
                f"got shape {latents.shape}. "
                "Decode other rows with the torch backend, or export the model whose config gives this height."
            )
        return self.run_batched("decode", [latents])[0]

    def encode(self, images: np.ndarray) -> np.ndarray:
        return self.run_batched("encode", [images])[0]

    def speaker_partials(self, mels: np.ndarray) -> np.ndarray:
        spec = self.manifest.speaker
        if spec is None:
            log.warning("%s has no %s.onnx (an older export): Resemblyzer runs in torch", self.export_dir, "speaker")
            return resemblyzer_partials()(mels)
        return self._run_on_cpu(spec, mels, threads=1)  # a few calls per talker: one thread, beside the rest

    def speech_encoder(self, mel: np.ndarray) -> np.ndarray:
        spec = self.manifest.speech
        if spec is None:
            raise WeightsError(
                f"{self.export_dir} has no {SPEECH_GRAPH}.onnx but its A2L hears Whisper features: export the model "
                "again with `facecast export`."
            )
        return self._run_on_cpu(spec, mel, threads=self.speech_threads)

    def _run_on_cpu(self, spec: GraphSpec, x: np.ndarray, threads: int) -> np.ndarray:
        """A one-input, one-output side graph (the speaker's and the speech encoder's) on onnxruntime's CPU
        provider, whatever runtime runs the four main graphs; its session is made on the first call."""
        if spec.file not in self._cpu_sessions:
            ort, path = import_onnxruntime(), str(self.export_dir / spec.file)
            session = ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
            self._cpu_sessions[spec.file] = session
        feeds = {spec.inputs[0].name: np.ascontiguousarray(x, np.float32)}
        return self._cpu_sessions[spec.file].run([spec.outputs[0].name], feeds)[0]

    def a2l_state_shape(self) -> tuple[int, ...]:
        return (self.cfg.a2l.layers, 1, self.cfg.a2l.state_width)

    # ------------------------------------------------------------------------------------------ batching

    def run_batched(self, graph: str, arrays: list[np.ndarray], weights: Weights = None) -> list[np.ndarray]:
        """Run ``graph`` on any batch size: one call per ``max_batch`` items of a dynamic-batch export; chunks of
        the exported batch for a static one, the last chunk padded by repeating its end."""
        spec = self.manifest.graphs[graph]
        in_axes, out_axes = BATCH_AXES[graph]
        arrays = [self._conform(graph, t, a, ax) for t, a, ax in zip(spec.inputs, arrays, in_axes, strict=True)]
        n = arrays[0].shape[in_axes[0]]
        dynamic = self.manifest.dynamic_batch
        b = (min(n, self.max_batch or n) or 1) if dynamic else self.manifest.batch
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, b):
            # a dynamic graph takes the short last chunk as it is; a static one needs it padded to b
            idx = np.arange(start, min(start + b, n)) if dynamic else np.minimum(np.arange(start, start + b), n - 1)
            feeds = {
                t.name: np.ascontiguousarray(np.take(a, idx, axis=ax))
                for t, a, ax in zip(spec.inputs, arrays, in_axes, strict=True)
            }
            valid = np.arange(min(b, n - start))
            outputs = self._run(graph, feeds, weights) if weights is not None else self._run(graph, feeds)
            chunks.append([np.take(o, valid, axis=ax) for o, ax in zip(outputs, out_axes, strict=True)])
        return [
            np.concatenate([c[i] for c in chunks], axis=ax).astype(np.float32, copy=False)
            for i, ax in enumerate(out_axes)
        ]

    def _conform(self, graph: str, spec: TensorSpec, a: np.ndarray, batch_axis: int) -> np.ndarray:
        a = np.asarray(a)
        fixed = [d for i, d in enumerate(spec.shape) if i != batch_axis]
        if a.ndim != len(spec.shape) or [d for i, d in enumerate(a.shape) if i != batch_axis] != fixed:
            raise WeightsError(
                f"the {graph} graph in {self.export_dir} takes {spec.name} of shape {spec.shape} (axis {batch_axis} "
                f"is the batch); got {a.shape}: this export was made for another model config, export it again."
            )
        # fp16 exports keep float32 inputs and cast inside the graph, so only int64 / float32 arrive here.
        return a.astype(spec.dtype, copy=False)

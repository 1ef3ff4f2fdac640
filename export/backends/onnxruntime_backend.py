"""The onnxruntime backend: an export folder's graphs in ONNX Runtime, on TensorRT, CUDA or CPU (best first)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facecast.engine.backend import Weights
from facecast.engine.errors import DependencyError

from ..onnx.manifest import ENROLLED_A2L_GRAPH, ENROLLED_A2L_INFO, GRAPHS, Manifest
from .graph_backend import GraphBackend
from .ort_session import import_onnxruntime, session_options
from .tensorrt_backend import default_cache_dir

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: Sequence[str] | None = None, available: Sequence[str] | None = None) -> list[str]:
    """TensorRT, CUDA, CPU in that order, keeping those installed; ``requested`` narrows (and orders) the choice."""
    if available is None:
        available = import_onnxruntime().get_available_providers()
    wanted = list(requested) if requested else list(PROVIDER_ORDER)
    unknown = [p for p in wanted if p not in available]
    if requested and unknown:
        raise DependencyError(
            f"onnxruntime providers {unknown} are not available here (available: {list(available)}); "
            "for CUDA and TensorRT install onnxruntime-gpu: pip install 'facecast[gpu]'."
        )
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # the fallback for any node another provider does not take
    return chosen


def _provider_options(provider: str, cache_dir: Path) -> dict[str, str]:
    if provider == "TensorrtExecutionProvider":
        # Building TensorRT engines takes minutes: cache engines and tactic timings across sessions.
        return {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache_dir),
        }
    return {}


class OnnxRuntimeBackend(GraphBackend):
    """``OnnxRuntimeBackend(export_dir)``: the engine.backend.Backend protocol over one ORT session per graph."""

    name = "onnxruntime"

    def __init__(
        self,
        export_dir: Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(export_dir)
        chosen = choose_providers(providers)
        cache = Path(cache_dir) if cache_dir else default_cache_dir().with_name("onnxruntime-tensorrt")
        if "TensorrtExecutionProvider" in chosen:
            cache.mkdir(parents=True, exist_ok=True)
        with_options = [(p, _provider_options(p, cache)) for p in chosen]
        self._session_options, self._providers = session_options(threads), with_options
        # One ORT session per graph, made on its first call: a model whose sessions draw the face with the warp and
        # the mouth prior never calls the UNet or the decoder, and making the UNet's session was half of a fresh
        # process's load time (110 of ~210 ms). The lock: avatar preparation (the encoder) may run on another thread.
        self._sessions: dict[str, Any] = {}
        self._sessions_lock = threading.Lock()
        self.providers: list[str] = self.session("a2l_step").get_providers()  # what ORT actually enabled
        self._outputs = {g: [t.name for t in self.manifest.graphs[g].outputs] for g in GRAPHS}
        self._enrolled: dict[Path, Any] = {}  # bundle -> its A2L's session (None: the bundle runs the model's A2L)

    def session(self, graph: str) -> Any:  # onnxruntime.InferenceSession
        """``graph``'s ORT session (one of ``GRAPHS``), made on first use."""
        with self._sessions_lock:
            if graph not in self._sessions:
                path = str(self.export_dir / self.manifest.graphs[graph].file)
                ort = import_onnxruntime()
                self._sessions[graph] = ort.InferenceSession(path, self._session_options, providers=self._providers)
            return self._sessions[graph]

    @property
    def loaded_graphs(self) -> tuple[str, ...]:
        """The graphs whose sessions have been made so far."""
        return tuple(self._sessions)

    def load_enrolment(self, bundle: Path) -> None:
        """Make calls with ``weights=bundle`` run the bundle's own A2L graph (``facecast export --avatar``).

        Only the A2L: an enrolled L2V adapter is not applied here, which is right exactly when no L2V picture is
        shown (the default model: the warp and its mouth prior draw the face, ``LipSyncSession.runs_l2v``). A model
        whose sessions show L2V's picture is refused with what to do instead."""
        from facecast.engine.avatar.prepare import has_adapter
        from facecast.engine.errors import InputError
        from facecast.engine.mouth_prior import shows_l2v

        key = Path(bundle).resolve()
        if key in self._enrolled:
            return
        if shows_l2v(self.cfg.face, self.mouth_prior) and has_adapter(key):
            raise InputError(
                f"{bundle} is an enrolled bundle whose L2V adapter this model would show (it paints the mouth with "
                "L2V: no mouth prior, or face.interior_source 'l2v'); the onnxruntime backend runs an enrolled "
                "person's A2L only. Use --backend torch for this model."
            )
        self._enrolled[key] = enrolled_a2l_session(key, self.manifest, self._session_options, self._providers)

    def _run(self, graph: str, feeds: dict[str, np.ndarray], weights: Weights = None) -> list[np.ndarray]:
        session = self.session(graph)
        if weights is not None and graph == "a2l_step":
            key = Path(weights).resolve()
            if key not in self._enrolled:  # a session must never fall back to another person's weights
                self.load_enrolment(key)
            session = self._enrolled[key] or session  # None: the bundle runs the model's own A2L
        return session.run(self._outputs[graph], feeds)


def enrolled_a2l_session(bundle: Path, manifest: Manifest, options: Any, providers: list) -> Any:
    """The ORT session of ``bundle``'s own A2L graph, checked against the export's model; None for a bundle that
    runs the model's A2L as it is (enrolled with neither an A2L nor a motion gain)."""
    from facecast.engine.avatar.prepare import runs_own_a2l
    from facecast.engine.errors import InputError

    if not runs_own_a2l(bundle):
        return None
    info_path = bundle / ENROLLED_A2L_INFO
    if not (bundle / ENROLLED_A2L_GRAPH).is_file() or not info_path.is_file():
        raise InputError(
            f"{bundle} is an enrolled bundle without its A2L graph ({ENROLLED_A2L_GRAPH}), which the onnxruntime "
            f"backend runs: add it once with `facecast export --avatar {bundle} --model MODEL_DIR` (the model it "
            "was enrolled with), or use --backend torch."
        )
    base = json.loads(info_path.read_text()).get("base_a2l_hash")
    if base != manifest.source_files.get("a2l.safetensors"):
        raise InputError(
            f"{bundle}'s A2L graph was made from another model's A2L ({base}) than this export's "
            f"({manifest.source_files.get('a2l.safetensors')}): export this model's, or run "
            f"`facecast export --avatar {bundle} --model MODEL_DIR` with the model of this export."
        )
    return import_onnxruntime().InferenceSession(str(bundle / ENROLLED_A2L_GRAPH), options, providers=providers)

"""ONNX Runtime itself: its import (with the install hint) and the session options every facecast session uses.

Shared by the onnxruntime backend, the graph backend's CPU side sessions (speaker, speech encoder), the export's
parity check and ``facecast bench models``; it imports no backend, so none of them import each other for it.
"""

from __future__ import annotations

from typing import Any

from facecast.engine.errors import DependencyError
from facecast.engine.system import physical_cores


def import_onnxruntime():  # the onnxruntime module
    try:
        import onnxruntime
    except ImportError as e:
        raise DependencyError(
            "the onnxruntime backend needs ONNX Runtime: pip install onnxruntime "
            "(or onnxruntime-gpu, `pip install 'facecast[gpu]'`, for CUDA and TensorRT)."
        ) from e
    return onnxruntime


def session_options(threads: int | None = None) -> Any:  # onnxruntime.SessionOptions
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # our graphs are chains: parallel branches don't pay
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    # Four sessions (a2l, unet, decode, encode) run one after another per frame; each has its own thread pool,
    # and threads that spin-wait after their call steal the cores from the next session's call.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so

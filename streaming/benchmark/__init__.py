"""Measurement, in one place: the live engine (``facecast bench stream``: measured runs through the engine's public
observer hooks, the report and its plot, fresh serving processes) and the networks (``bench_models``: ``facecast
bench models``). Not on the runtime path: nothing in the runtime imports it (tests/test_import_graph.py).

Speed and cost measurements besides the ``facecast bench`` commands, each run as
``python -m facecast.streaming.benchmark.<name> --help``:

- ``device_check``: the batched per-frame model compute on one GPU (or the CPU) and the sessions sweep there; also
  runs as a file from a plain checkout (``python3 streaming/benchmark/device_check.py``). ``device_train_l2v.sh``
  beside it trains L2V on such a GPU host.
- ``frame_cpu_timing``: CPU time per frame of the work around the networks (composite, conditions, paste).
- ``whisper_encoder_cost``: Whisper's encoder for A2L per live call (log-mel, torch, onnxruntime).
- ``whisper_session_cost``: what A2L's audio features cost inside a live session, model folders side by side.

Quality studies are in ``facecast.engine.evaluation.studies``."""

"""Measurement, in one place: the live engine (``facecast bench stream``: measured runs through the engine's public
observer hooks, the report and its plot, fresh serving processes) and the networks (``bench_models``: ``facecast
bench models``). Not on the runtime path: nothing in the runtime imports it (tests/test_import_graph.py)."""

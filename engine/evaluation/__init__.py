"""Measurement of the engine: quality metrics, learned scorers, ``facecast eval``, the model card, and the quality
studies behind docs/ (``studies/``). Not on the runtime path: nothing in engine, export or streaming imports it."""

"""Measurement of the engine: quality metrics, learned scorers, ``facecast eval`` and the model card. Not on the
runtime path: nothing in engine, export or streaming imports it."""

"""Measurement of the live engine (``facecast bench stream``): measured runs through the engine's public observer
hooks, the report and its plot, and fresh serving processes. Not on the runtime path: nothing in streaming imports
it."""

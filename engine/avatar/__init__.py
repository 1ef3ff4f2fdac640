"""An avatar as the runtime uses it: ``prepare`` (``facecast prepare``: crops, landmarks and, for a model that
runs L2V, latents cached as a bundle), ``face`` (face detection and 68-point landmarks; ``shape_predictor``: dlib's
68-point predictor converted into memory-mapped arrays and evaluated in numpy) and ``adapters`` (an enrolled
bundle's weights)."""

"""``facecast export``: ``export`` writes the static-shape ONNX graphs, ``manifest`` is the export folder's format,
``tensorrt_ops`` checks that TensorRT can build them."""

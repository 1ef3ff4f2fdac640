"""From a trained model to the runtimes: ``onnx/`` (``facecast export``: the ONNX graphs, the export folder's manifest,
TensorRT's operator check) and ``backends/`` (torch, onnxruntime, TensorRT behind the engine's backend protocol;
``load_backend`` chooses one by name)."""

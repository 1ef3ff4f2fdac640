"""ONNX / TensorRT export and the runtime backends behind the engine's backend protocol."""

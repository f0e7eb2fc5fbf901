"""Prediction: the engine's interface and its two backends (checkpoints, ONNX), the Lightning
prediction module, and the prediction workflows."""

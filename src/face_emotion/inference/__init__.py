"""Inference: faces in an image -> emotions, through a PyTorch or ONNX Runtime backend."""

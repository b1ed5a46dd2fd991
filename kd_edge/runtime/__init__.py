"""The torch-free runtime: what a drone's board installs (numpy and onnxruntime only).

    model = OnnxModel("exports/student.onnx", threads=2)
    labels = model.predict(uint8_images)      # (N, C, H, W) or (N, H, W) uint8

``import kd_edge.runtime`` never imports torch (a test checks it).
"""

from kd_edge.runtime.card import DataRef, ModelCard
from kd_edge.runtime.session import OnnxModel, read_card, read_onnx_metadata

__all__ = ["DataRef", "ModelCard", "OnnxModel", "read_card", "read_onnx_metadata"]

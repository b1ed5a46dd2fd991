"""kd-edge: knowledge distillation for image classifiers that must run on a drone's CPU.

Importing this package is cheap and has no side effects: torch, torchvision and
onnx are imported only inside the functions that need them.
"""

__version__ = "0.1.0"

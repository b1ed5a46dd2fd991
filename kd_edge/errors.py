"""Errors a user can fix. Each message says what went wrong and what to do about it.

All derive from KdEdgeError (a ValueError), which the CLI turns into a one-paragraph
message and a non-zero exit code instead of a traceback.
"""


class KdEdgeError(ValueError):
    """Base class for every error kd-edge reports to a user."""


class DatasetError(KdEdgeError):
    """Unknown dataset, missing files, or data that does not fit the model."""


class ModelError(KdEdgeError):
    """Unknown model name or bad constructor arguments."""


class CheckpointError(KdEdgeError):
    """A checkpoint that is missing, corrupt, unsafe or incompatible."""


class ConfigError(KdEdgeError):
    """An option value that is out of range or inconsistent with another."""


class OutputError(KdEdgeError):
    """An output folder that cannot be written, or would overwrite results."""


class TrainingDivergedError(KdEdgeError):
    """The loss became NaN or infinite."""


class TeacherTooWeakError(KdEdgeError):
    """The teacher is no better than chance, or below the accuracy the user asked for."""


class StudentTooWeakError(KdEdgeError):
    """The trained student is no better than chance on the validation split: it learnt nothing worth shipping."""


class MissingDependencyError(KdEdgeError):
    """An optional dependency (the `train` extra) is not installed."""


class ExportError(KdEdgeError):
    """No ONNX exporter could write the model."""


class ExportParityError(KdEdgeError):
    """The exported ONNX model does not compute what the PyTorch model computes."""


class ModelFileError(KdEdgeError):
    """A file that is not a loadable ONNX model, or fails the ONNX checker."""


class ModelCardError(ModelFileError):
    """A model card (ONNX metadata, model.json) with a missing or malformed key."""


class BundleError(ModelFileError):
    """A bundle that fails its checksums, or an archive that is unsafe or damaged."""


class QuantizationError(KdEdgeError):
    """No INT8 model meets the accuracy budget, or calibration data does not fit."""


class ArmSetupError(KdEdgeError):
    """The aarch64 userland for `kd-edge verify-arm` could not be built: no emulator, no registry."""


class Interrupted(KdEdgeError):
    """SIGINT or SIGTERM stopped a command at a safe point: what it had written is complete and kept
    (``finished``: the signal came after the last safe point, and the command had done its work)."""

    def __init__(self, message: str, signum: int, finished: bool = False):
        super().__init__(message)
        self.signum, self.finished = signum, finished


class TrainingInterrupted(Interrupted):
    """SIGINT or SIGTERM stopped training at a step boundary, after saving its state."""

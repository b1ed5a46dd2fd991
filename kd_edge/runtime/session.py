"""Load an exported model with its kd-edge metadata, preprocess raw images, infer, evaluate."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from kd_edge.errors import DatasetError, ModelCardError, ModelFileError
from kd_edge.runtime.card import ModelCard
from kd_edge.runtime.safety import check_model_file

EVAL_BATCH_SIZE = 256


def session_options(threads: int | None):
    """ONNX Runtime's default options but the intra-op thread count: what any other program opening
    the model gets, so that a figure kd-edge measures holds outside kd-edge."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


def open_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model {str(path)!r} does not exist; export one with `kd-edge export RUN_DIR --onnx`")
    check_model_file(path)  # before ONNX Runtime reads a byte of it
    try:
        return ort.InferenceSession(
            str(path),
            session_options(threads),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own InvalidProtobuf, Fail, InvalidGraph...
        raise ModelFileError(
            f"cannot load {str(path)!r} as an ONNX model ({str(exc).strip().splitlines()[0]}); is it a complete "
            ".onnx file?"
        ) from exc


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The model's ``metadata_props`` as a dict of strings."""
    return dict(open_session(path, threads=1).get_modelmeta().custom_metadata_map)


def read_card(path: str | Path) -> ModelCard:
    """The model card an exported model carries; a ``ModelCardError`` names any bad key."""
    return ModelCard.from_metadata(read_onnx_metadata(path), repr(str(path)))


@contextlib.contextmanager
def model_file(path: Path):
    """(the .onnx file to load, the verified Bundle or None) for a model file, bundle folder or archive."""
    from kd_edge.runtime.bundle_files import is_archive, is_bundle, open_bundle

    if not is_bundle(path):
        yield path, None
    elif is_archive(path):
        with tempfile.TemporaryDirectory(prefix="kd-edge-bundle-") as scratch:
            bundle = open_bundle(path, unpack_to=scratch)
            yield bundle.model_path, bundle
    else:
        bundle = open_bundle(path)
        yield bundle.model_path, bundle


class OnnxModel:
    """An ONNX classifier plus the preprocessing its model card describes.

    ``path`` is an .onnx file, a bundle folder or a bundle .tar.gz (its checksums are
    verified before the model is loaded; an archive is unpacked to a temporary folder
    that is gone once the session holds the model).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.bundle = None
        with model_file(self.path) as (model_path, bundle):
            self.bundle = bundle
            self.session = open_session(model_path, threads)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.card = ModelCard.from_metadata(self.metadata, repr(str(self.path)))
        self.input_shape = self.card.input_shape
        self.classes = list(self.card.classes)
        self.mean = np.asarray(self.card.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(self.card.std, dtype=np.float32).reshape(1, -1, 1, 1)
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        fixed = [(i, d) for i, d in enumerate(graph_input.shape[1:]) if isinstance(d, int)]
        if len(graph_input.shape) != 4 or any(self.input_shape[i] != d for i, d in fixed):
            raise ModelCardError(
                f"{str(self.path)!r}: kd_edge.input_shape {list(self.input_shape)} disagrees with the graph's "
                f"input {graph_input.shape}"
            )
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.classes):
            raise ModelCardError(
                f"{str(self.path)!r}: the card names {len(self.classes)} classes but the model outputs {width} "
                "scores; the card belongs to another model. Re-export it with `kd-edge export` (the card is written "
                "from the checkpoint)"
            )

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 pixels (0-255) in (N, C, H, W), or (N, H, W) for a one-channel model; else a clear error."""
        images = np.asarray(images)
        if images.ndim == 3 and self.input_shape[0] == 1:
            images = images[:, None]
        shape = f"(N, {', '.join(map(str, self.input_shape))})"
        if images.dtype != np.uint8:
            raise DatasetError(
                f"{str(self.path)!r} takes raw uint8 pixel values 0-255, got {images.dtype}: the model's card "
                "normalises "
                "them itself. Pass the images before any scaling (for floats in [0, 1]: (x * "
                "255).round().astype('uint8'))"
            )
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            raise DatasetError(
                f"{str(self.path)!r} takes images of shape {shape} (batch, channels, height, width), got "
                f"{images.shape}; "
                "resize them (kd-edge predict does for image files) or use a model trained for this size"
            )
        return images

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """``(pixel / 255 - mean) / std`` as float32 NCHW, exactly as in training."""
        images = self.check_images(images)
        return (images.astype(np.float32) * np.float32(1 / 255) - self.mean) / self.std

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: inputs})[0]

    def predict(self, images: np.ndarray, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        return np.concatenate(
            [
                self.logits(self.preprocess(images[i : i + batch_size])).argmax(1)
                for i in range(0, len(images), batch_size)
            ]
        )

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict(images) == labels).mean())

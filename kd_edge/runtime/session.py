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
        self.input_shape = self.card.input_shape  # (C, H, W), whatever the layout
        self.image_shape = self.card.image_shape  # one image as the graph takes it
        self.classes = list(self.card.classes)
        self.mean = np.asarray(self.card.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(self.card.std, dtype=np.float32).reshape(1, -1, 1, 1)
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.check_graph(graph_input)

    def check_graph(self, graph_input) -> None:
        """The card describes this graph: input type and shape, one score per class."""
        graph_type = {"tensor(uint8)": "uint8", "tensor(float)": "float32"}.get(graph_input.type, graph_input.type)
        if graph_type != self.card.input_type:
            raise ModelCardError(
                f"{str(self.path)!r}: kd_edge.input_type says {self.card.input_type} but the graph takes {graph_type}; "
                "re-export the model with `kd-edge export`"
            )
        fixed = [(i, d) for i, d in enumerate(graph_input.shape[1:]) if isinstance(d, int)]
        if len(graph_input.shape) != 4 or any(self.image_shape[i] != d for i, d in fixed):
            raise ModelCardError(
                f"{str(self.path)!r}: kd_edge.input_shape {list(self.input_shape)} in layout {self.card.layout} "
                f"disagrees with the graph's input {graph_input.shape}"
            )
        output = self.session.get_outputs()[0].shape
        detector = self.card.task == "detect"  # (N, classes + 1, H / stride, W / stride): background is a class
        width, expected = (output[1], len(self.classes) + 1) if detector else (output[-1], len(self.classes))
        if isinstance(width, int) and width != expected:
            raise ModelCardError(
                f"{str(self.path)!r}: the card names {len(self.classes)} classes but the model outputs {width} "
                "scores; the card belongs to another model. Re-export it with `kd-edge export` (the card is written "
                "from the checkpoint)"
            )

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 pixels (0-255) in (N, C, H, W) or (N, H, W, C), or (N, H, W) for a one-channel model, as the
        graph lays them out (a copy only where the layout differs); else a clear error."""
        images = np.asarray(images)
        channels, height, width = self.input_shape
        if images.ndim == 3 and channels == 1:
            images = images[..., None] if self.card.layout == "NHWC" else images[:, None]
        if images.dtype != np.uint8:
            raise DatasetError(
                f"{str(self.path)!r} takes raw uint8 pixel values 0-255, got {images.dtype}: the model normalises "
                "them itself. Pass the images before any scaling (for floats in [0, 1]: (x * "
                "255).round().astype('uint8'))"
            )
        nchw, nhwc = (channels, height, width), (height, width, channels)
        if images.ndim != 4 or images.shape[1:] not in (nchw, nhwc):
            raise DatasetError(
                f"{str(self.path)!r} takes images of shape (N, {', '.join(map(str, nchw))}) or (N, "
                f"{', '.join(map(str, nhwc))}) (batch, then channels, height, width in either order), got "
                f"{images.shape}; resize them (kd-edge predict does for image files) or use a model trained for this "
                "size"
            )
        if images.shape[1:] == self.image_shape:
            return images
        return images.transpose(0, 2, 3, 1) if self.card.layout == "NHWC" else images.transpose(0, 3, 1, 2)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """The graph's input for uint8 ``images``: the pixels themselves, in the graph's layout and channel order
        (normalisation is in the graph); for a float32 graph, ``(pixel / 255 - mean) / std`` as float32 NCHW,
        exactly as in training."""
        images = self.check_images(images)
        if self.card.input_type == "uint8":
            if self.card.channel_order == "BGR":
                images = images[..., ::-1] if self.card.layout == "NHWC" else images[:, ::-1]
            return np.ascontiguousarray(images)
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

"""The model card: what a model says about itself, in one schema for every stage.

A card travels three ways, always through this module:

* in a checkpoint (``ModelCard.to_dict``), written by training;
* in an ONNX model's ``metadata_props`` as ``kd_edge.*`` strings (``to_metadata``,
  ``write_card``), so that a board needs nothing but the .onnx file;
* as a bundle's ``model.json`` (``to_dict`` again).

Reading validates every key: a card with a missing or malformed key is a
``ModelCardError`` that names the key. Keys this version does not know are kept
out of the card but never rejected, so that a newer kd-edge's models still load.

Needs only the standard library (and ``onnx`` inside ``write_card``).
``DataRef`` is the data package's; the card carries one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from kd_edge.data.ref import DataRef
from kd_edge.errors import ModelCardError
from kd_edge.settings.data import BAD_IMAGES, FOLDER_RESIZE, FRAME_RESIZE

PREFIX = "kd_edge."
REQUIRED = ("classes", "input_shape", "layout", "mean", "std")
PLAIN_STRINGS = ("layout", "input_type", "channel_order", "resize", "model", "source_sha256", "task")  # others JSON
LAYOUTS = ("NCHW", "NHWC")
INPUT_TYPES = ("uint8", "float32")
CHANNEL_ORDERS = ("RGB", "BGR", "GRAY")
TASKS = ("classify", "detect")
RESIZE_FILTERS = ("bicubic", "bilinear")  # Pillow's, antialiased when they shrink
DETECTION_KEYS = ("stride", "threshold")  # what a detector's card must say to decode its output


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """Preprocessing (classes, input shape, layout, mean, std), provenance and figures of one model.

    ``input_shape`` is always ``[C, H, W]``; ``layout`` says how the graph's input holds it. An exported
    model takes the camera frame's ``uint8`` pixels (``input_type``) in ``layout`` and ``channel_order``
    and applies ``(pixel / 255 - mean) / std`` inside its graph. A ``float32`` input (a checkpoint's
    network, or a model from kd-edge 0.x) is the normalised NCHW tensor itself.
    """

    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = "NCHW"
    input_type: str = "float32"  # uint8: normalisation inside the graph
    channel_order: str | None = None  # RGB, BGR or GRAY, of a uint8 input
    resize: str | None = None  # the filter training resized its images with; None (older cards): ``resize_filter``
    data: DataRef | None = None
    model: str | None = None  # registry name
    parameters: int | None = None
    macs: int | None = None
    test_accuracy: float | None = None  # of this model (INT8 for a quantized one)
    fp32_test_accuracy: float | None = None  # of the FP32 model it was quantized from
    quantization: dict | None = None  # mode, format, per_channel, types, nodes kept in FP32
    calibration: dict | None = None  # dataset, split, size, method, hash of the sample's indices
    source_sha256: str | None = None  # of the checkpoint it was exported from
    versions: dict = field(default_factory=dict)  # kd_edge, torch, onnx opset, exporter
    task: str = "classify"  # detect: the output is (classes + 1, H / stride, W / stride) logits a cell
    detection: dict | None = None  # a detector's decoding rule (stride, threshold) and its F1 figures

    def __post_init__(self):
        normalised = {name: check(name, getattr(self, name)) for name in FIELD_CHECKS}
        for name, value in normalised.items():
            object.__setattr__(self, name, value)
        channels = self.input_shape[0]
        for name in ("mean", "std"):
            if len(getattr(self, name)) != channels:
                raise ModelCardError(
                    f"{PREFIX}{name} has {len(getattr(self, name))} values but the input has {channels} channel(s)"
                )
        if min(self.std) <= 0:
            raise ModelCardError(f"{PREFIX}std must be positive, got {list(self.std)}")
        if self.input_type == "float32" and self.layout != "NCHW":
            raise ModelCardError(f"{PREFIX}layout of a float32 input is NCHW, got {self.layout}")
        if self.task == "detect" and not all(key in (self.detection or {}) for key in DETECTION_KEYS):
            raise ModelCardError(f"{PREFIX}detection of a detector must give {' and '.join(DETECTION_KEYS)}")
        if self.channel_order is not None and (self.channel_order == "GRAY") != (channels == 1):
            raise ModelCardError(f"{PREFIX}channel_order {self.channel_order} does not fit {channels} channel(s)")

    @property
    def resize_filter(self) -> str:
        """How a frame of another size is brought to the input size, as training brought its images (older cards
        do not say: their task's filter, which has not changed)."""
        return self.resize or (FRAME_RESIZE if self.task == "detect" else FOLDER_RESIZE)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """One image as the graph's input holds it: (C, H, W) or (H, W, C)."""
        channels, height, width = self.input_shape
        return (height, width, channels) if self.layout == "NHWC" else (channels, height, width)

    def to_dict(self) -> dict:
        """The card as JSON-ready data (model.json, checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "model card") -> ModelCard:
        if not isinstance(data, dict):
            raise ModelCardError(f"{source}: a model card must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        missing = [name for name in REQUIRED if name not in data]
        if missing:
            raise ModelCardError(
                f"{source}: the model card lacks {', '.join(PREFIX + m for m in missing)}; export the model with "
                "`kd-edge export`"
            )
        try:
            return cls(**{name: value for name, value in data.items() if name in known})
        except ModelCardError as exc:
            raise ModelCardError(f"{source}: {exc}") from None

    def to_metadata(self) -> dict[str, str]:
        """The card as ONNX ``metadata_props``: ``kd_edge.<field>`` -> string."""
        out = {}
        for name, value in self.to_dict().items():
            if value is None or value == {} or value == []:
                continue
            out[PREFIX + name] = value if name in PLAIN_STRINGS else json.dumps(value)
        return out

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> ModelCard:
        values = {}
        for item in fields(cls):
            key = PREFIX + item.name
            if key not in metadata:
                continue
            if item.name in PLAIN_STRINGS:
                values[item.name] = metadata[key]
                continue
            try:
                values[item.name] = json.loads(metadata[key])
            except (json.JSONDecodeError, TypeError) as exc:
                raise ModelCardError(
                    f"{source}: metadata {key} is not valid JSON ({exc}): {metadata[key][:80]!r}"
                ) from None
        return cls.from_dict(values, source)


# --- validation, one function per kind of field -----------------------------------------------------


def fail(name: str, expected: str, value) -> ModelCardError:
    return ModelCardError(f"{PREFIX}{name} must be {expected}, got {value!r:.80}")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_classes(name, value):
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) for c in value):
        raise fail(name, "a non-empty list of class names", value)
    return tuple(value)


def check_shape(name, value):
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    ):
        raise fail(name, "[channels, height, width] of positive integers", value)
    return tuple(value)


def check_numbers(name, value):
    if not isinstance(value, (list, tuple)) or not value or not all(is_number(v) for v in value):
        raise fail(name, "a list of finite numbers, one per channel", value)
    return tuple(float(v) for v in value)


def one_of(choices: tuple[str, ...]):
    def checked(name, value):
        if value not in choices:
            raise fail(name, f"one of {choices}", value)
        return value

    return checked


def check_data(name, value):
    if value is None or isinstance(value, DataRef):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("dataset"), str):
        raise fail(name, 'an object with a "dataset" name', value)
    image_size = value.get("image_size")
    if image_size is not None and not (isinstance(image_size, int) and image_size > 0):
        raise fail(name, "an object whose image_size is a positive integer or null", value)
    split = value.get("split")
    if split is not None and not (isinstance(split, (list, tuple)) and len(split) == 3 and all(map(is_number, split))):
        raise fail(name, "an object whose split is three fractions or null", value)
    bad_images, channels = value.get("bad_images"), value.get("channels")
    if bad_images not in (None, *BAD_IMAGES) or channels not in (None, 1, 3):
        raise fail(name, 'an object whose bad_images is "refuse", "skip" or null and channels 1, 3 or null', value)
    return DataRef(
        dataset=value["dataset"],
        data_dir=value.get("data_dir"),
        image_size=image_size,
        split=tuple(split) if split is not None else None,
        bad_images=bad_images,
        channels=channels,
    )


def optional(check_value, expected: str):
    def checked(name, value):
        if value is None:
            return None
        if not check_value(value):
            raise fail(name, expected, value)
        return value

    return checked


def check_versions(name, value):
    if not isinstance(value, dict):
        raise fail(name, "an object", value)
    return dict(value)


FIELD_CHECKS = {
    "classes": check_classes,
    "input_shape": check_shape,
    "mean": check_numbers,
    "std": check_numbers,
    "layout": one_of(LAYOUTS),
    "input_type": one_of(INPUT_TYPES),
    "channel_order": optional(lambda v: v in CHANNEL_ORDERS, f"one of {CHANNEL_ORDERS}"),
    "resize": optional(lambda v: v in RESIZE_FILTERS, f"one of {RESIZE_FILTERS}"),
    "data": check_data,
    "model": optional(lambda v: isinstance(v, str), "a model name"),
    "parameters": optional(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a count"),
    "macs": optional(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a count"),
    "test_accuracy": optional(lambda v: is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    "fp32_test_accuracy": optional(lambda v: is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    "quantization": optional(lambda v: isinstance(v, dict), "an object"),
    "calibration": optional(lambda v: isinstance(v, dict), "an object"),
    "source_sha256": optional(lambda v: isinstance(v, str), "a hex digest"),
    "versions": check_versions,
    "task": one_of(TASKS),
    "detection": optional(lambda v: isinstance(v, dict), "an object"),
}


def check(name: str, value):
    return FIELD_CHECKS[name](name, value)


def write_card(path: str | Path, card: ModelCard) -> None:
    """Replace the ``kd_edge.*`` metadata of the ONNX model at ``path`` with ``card``, atomically."""
    import onnx

    from kd_edge.io import atomic_write

    proto = onnx.load(str(path))
    others = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for key, value in [*others, *card.to_metadata().items()]:
        proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()
    atomic_write(path, lambda handle: handle.write(data))

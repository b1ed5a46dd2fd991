"""``kd-edge predict``: the top classes of a model for image files, folders of images, or an .npz of images.

    rows = predict_files(OnnxModel("bundle"), [Path("digit.png")], top_k=3)

Image files of any format Pillow reads are converted to the model's channels (grey or
RGB) and resized to its input size (the row says so); an .npz must hold uint8 images
that fit the model as they are. Numpy, onnxruntime and Pillow only: runs on a board.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd_edge.data.folders import images_in
from kd_edge.data.pixels import model_pixels, shown_size
from kd_edge.errors import ConfigError, DatasetError
from kd_edge.runtime.session import OnnxModel


@dataclass(frozen=True, kw_only=True)
class Prediction:
    input: str  # file name, or "file.npz[i]"
    top: list[tuple[str, float]]  # (class, probability), most likely first
    note: str | None = None  # how the image was adapted to the model, when it was

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "top": [{"class": name, "probability": p} for name, p in self.top],
            "note": self.note,
        }


def json_file_among(paths: list[Path], json_requested: bool) -> tuple[Path | None, list[Path]]:
    """(the file `--json FILE.json` names, or None to print the JSON; the inputs without it).

    `--json` takes no value on kd-edge's command line, so ``FILE.json`` arrives among the inputs, where a .json can
    never be an image: it is where the predictions go."""
    files = [Path(p) for p in paths if Path(p).suffix.lower() == ".json"]
    if files and not json_requested:
        raise ConfigError(f"{str(files[0])!r} is not an image: `--json {files[0]}` writes the predictions there")
    if len(files) > 1:
        raise ConfigError(f"--json writes one file, got {', '.join(map(str, files))}")
    inputs = [Path(p) for p in paths if Path(p).suffix.lower() != ".json"]
    if not inputs:
        raise DatasetError("no input to predict: give image files, folders of them, or an .npz")
    return (files[0] if files else None), inputs


def send_json(rows: list[dict], json_file: Path | None) -> bool:
    """Print ``rows`` as JSON, or write them to ``json_file``: True when the table should still be printed (the
    JSON went to a file)."""
    import json

    if json_file is None:
        print(json.dumps(rows, indent=2))
        return False
    from kd_edge.io import atomic_write_json

    atomic_write_json(json_file, rows)
    print(f"predictions written to {json_file}")
    return True


def predict_files(model: OnnxModel, paths: list[Path], top_k: int) -> list[Prediction]:
    images, names, notes = [], [], []
    for path in paths:
        batch, labels, adapted = read_input(model, Path(path))
        images.append(batch)
        names += labels
        notes += adapted
    if not names:
        raise DatasetError(f"no images in {', '.join(map(str, paths))}; give image files, folders of them, or an .npz")
    probabilities = softmax(np.concatenate([model.logits(model.preprocess(batch)) for batch in images]))
    order = np.argsort(-probabilities, axis=1)[:, :top_k]
    return [
        Prediction(input=name, top=[(model.classes[c], float(p[c])) for c in best], note=note)
        for name, p, best, note in zip(names, probabilities, order, notes, strict=True)
    ]


def read_input(model: OnnxModel, path: Path) -> tuple[np.ndarray, list[str], list[str | None]]:
    """(uint8 images, a name for each, how each was adapted) from an .npz, a folder or an image file."""
    if not path.exists():
        raise DatasetError(f"{str(path)!r} does not exist; give image files, folders of images, or an .npz")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                raise DatasetError(
                    f"{str(path)!r} has no `images` array (it has {archive.files}); save them as images=..."
                )
            images = model.check_images(archive["images"])
        return images, [f"{path.name}[{i}]" for i in range(len(images))], [None] * len(images)
    files = images_in(path) if path.is_dir() else [path]
    pairs = [read_image(model, file) for file in files]
    if not pairs:
        return np.zeros((0, *model.input_shape), np.uint8), [], []
    return np.stack([image for image, _ in pairs]), [str(file) for file in files], [note for _, note in pairs]


def read_image(model: OnnxModel, path: Path) -> tuple[np.ndarray, str | None]:
    try:
        from PIL import Image, UnidentifiedImageError
    except ModuleNotFoundError:
        raise DatasetError(
            f"reading the image file {str(path)!r} needs Pillow: pip install 'kd-edge[images]' (or give an .npz of "
            "uint8 images, which needs nothing more)"
        ) from None

    try:
        with Image.open(path) as image:
            original = shown_size(image)  # before model_pixels decodes it, maybe at a reduced scale
            pixels = model_pixels(image, model.input_shape, model.card.resize_filter)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(
            f"cannot read {str(path)!r} as an image ({exc}); give PNG, JPEG or another format Pillow reads"
        ) from exc
    _, height, width = model.input_shape
    note = f"resized from {original[0]}x{original[1]} to {width}x{height}" if original != (width, height) else None
    return pixels, note


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)

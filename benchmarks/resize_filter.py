"""What a deployment that resizes photos with another filter than training's costs: a bundle scored on its test
photos (the files of the run's split.json) read as `kd-edge predict` reads them, with each filter.

    .venv/bin/python benchmarks/resize_filter.py RUN_DIR BUNDLE_DIR --data ../shared/datasets/rsscn7

The card's filter (`kd_edge.resize`; bicubic for classifiers, what training read the folder with) against
bilinear (what `kd-edge predict` and `bench --frames` used before they read the card). The split's test files
are scored, so the figure is the card's test accuracy when the filters agree.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from kd_edge.data.pixels import model_pixels
from kd_edge.runtime.session import OnnxModel


def accuracy(model: OnnxModel, root: Path, files: list[str], resize: str) -> float:
    correct = 0
    for file in files:
        with Image.open(root / file) as photo:
            pixels = model_pixels(photo, model.input_shape, resize)
        predicted = int(model.logits(model.preprocess(pixels[None]))[0].argmax())
        correct += model.classes[predicted] == Path(file).parts[0]  # the class folder
    return correct / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the training run folder (its split.json lists the test files)")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the class-folder tree the run trained on")
    args = parser.parse_args()
    split = json.loads((args.run / "split.json").read_text())
    for name in ("model.fp32.onnx", "model.onnx"):
        path = args.bundle / name
        if not path.is_file():
            continue
        model = OnnxModel(path)
        card_filter = model.card.resize_filter
        for part in ("val", "test"):
            files = split[part]
            figures = {f: accuracy(model, args.data, files, f) for f in dict.fromkeys((card_filter, "bilinear"))}
            shown = ", ".join(f"{f} {100 * a:.2f} %" for f, a in figures.items())
            print(f"{name}: {len(files)} {part} photos, card's filter {card_filter}: {shown}")
        print(f"{name}: the card's test accuracy {100 * (model.card.test_accuracy or np.nan):.2f} %")


if __name__ == "__main__":
    main()

"""A photo as a model takes it: decoded (a camera-sized JPEG at a reduced scale), converted to the model's
channels and resized with the filter its training used. Training (``kd_edge.data``), `kd-edge predict` and
`bench --frames` all read images through here, so a model sees on the board the pixels it was trained on.

Numpy, and Pillow where an image is read: runs on a board (the runtime reads photos through here).
"""

from __future__ import annotations

import numpy as np


def model_pixels(image, input_shape, resize: str) -> np.ndarray:
    """An opened Pillow image as the model takes it (decoded by ``load_reduced``): its channels (grey or RGB),
    resized to its input size with ``resize`` (the card's ``resize_filter``: what training resized with), (H, W, C)
    uint8, the layout of an exported model's input (``OnnxModel.preprocess`` takes either layout). Training reads
    folder images through this too."""
    channels, height, width = input_shape
    load_reduced(image, (width, height))
    converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (width, height):
        converted = converted.resize((width, height), pillow_filter(resize))
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[..., None] if channels == 1 else pixels


def load_reduced(image, size: tuple[int, int]) -> None:
    """Decode an opened image for resizing to ``size``: a JPEG at the smallest of its built-in scales (1/2, 1/4,
    1/8) that keeps at least twice ``size`` on each side, any other image (or one loaded already) as it is. A 12 MP
    photo for a 64 px model is read in 13 ms instead of 140, its pixels 0.1 level from a full decode's on average
    (benchmarks/results/frame-decode.md); images up to twice the input decode in full, as before."""
    image.draft(None, (2 * size[0], 2 * size[1]))
    image.load()


def pillow_filter(name: str):
    """Pillow's resampling filter for a card's ``resize`` name (``kd_edge.runtime.card.RESIZE_FILTERS``)."""
    from PIL import Image

    return {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[name]

"""A photo as a model takes it: decoded (a camera-sized JPEG at a reduced scale), turned upright (its EXIF
orientation, as a viewer shows it and as labelling tools draw boxes on it), 16-bit grey read by its top byte,
converted to the model's channels and resized with the filter its training used. Training (``kd_edge.data``),
`kd-edge predict` and `bench --frames` all read images through here, so a model sees on the board the pixels it was
trained on.

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
    image = load_reduced(image, (width, height))
    converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (width, height):
        converted = converted.resize((width, height), pillow_filter(resize))
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[..., None] if channels == 1 else pixels


def load_reduced(image, size: tuple[int, int]):
    """An opened image decoded for resizing to ``size`` (width, height as shown), upright and in levels Pillow's
    conversions read right (``eight_bit``): a JPEG at the smallest of its built-in scales (1/2, 1/4, 1/8) that keeps
    at least twice ``size`` on each side, any other image (or one loaded already) as it is. A 12 MP photo for a 64 px
    model is read in 13 ms instead of 140, its pixels 0.1 level from a full decode's on average
    (benchmarks/results/frame-decode.md); images up to twice the input decode in full. Returns ``image`` itself, or
    its upright or 8-bit copy."""
    turn = orientation(image)
    if turn in SIDEWAYS:
        size = size[::-1]  # the stored pixels are the shown ones turned a quarter
    image.draft(None, (2 * size[0], 2 * size[1]))
    image.load()
    if turn not in (None, 1):
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)  # a copy without the orientation tag: turned once only
    return eight_bit(image)


def eight_bit(image):
    """A decoded image whose levels Pillow's own conversions read right: 16-bit grey (a thermal or multispectral
    camera's PNG or TIFF, modes I;16 and I) as 8-bit grey by its top byte, as a viewer shows it (Pillow's
    conversion to L or RGB clips every level above 255 to white); any other image as it is. Floating-point pixels
    (mode F) have no range to read as 8 bits: refused (ValueError) with what to do."""
    if image.mode == "F":
        raise ValueError("floating-point pixels (mode F) have no fixed range; save the image with 8 or 16 bits")
    if not image.mode.startswith("I"):
        return image
    from PIL import Image

    levels = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    return Image.fromarray((levels >> 8).astype(np.uint8))


# EXIF orientations (tag 0x0112) under which a viewer shows the stored pixels turned a quarter: width and height swap.
SIDEWAYS = (5, 6, 7, 8)


def orientation(image) -> int | None:
    """The image's EXIF orientation (1 to 8; 1 or None: shown as stored). A phone held upright stores 6 or 8."""
    return image.getexif().get(0x0112)


def shown_size(image) -> tuple[int, int]:
    """(width, height) of the image as a viewer shows it (its EXIF orientation applied), from its header."""
    return image.size[::-1] if orientation(image) in SIDEWAYS else image.size


def pillow_filter(name: str):
    """Pillow's resampling filter for a card's ``resize`` name (``kd_edge.runtime.card.RESIZE_FILTERS``)."""
    from PIL import Image

    return {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[name]

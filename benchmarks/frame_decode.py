"""What decoding a camera's JPEG at a reduced scale saves, and what it changes: full decode then resize, against
``kd_edge.data.pixels.load_reduced`` then the same resize, for a classifier's 64 px square and a detector's
512 px frame.

    .venv/bin/python benchmarks/frame_decode.py --markdown benchmarks/results/frame-decode.md

The photos are aerial-cars frames (../shared/datasets/aerial-cars) scaled up to camera sizes (12 MP stills, 1080p
video frames) and written as JPEG at quality 90: their content is aerial, their size a camera's. One thread,
medians of 5 rounds over 4 photos; the pixel difference is the mean and largest absolute difference per channel
value between the two ways, over the same photos.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from markdown_out import show
from PIL import Image

from kd_edge.data.pixels import load_reduced, pillow_filter
from kd_edge.data.yolo import fitted

ROOT = Path(__file__).resolve().parent.parent
CAMERA_SIZES = {"12 MP still": (4000, 3000), "1080p frame": (1920, 1080)}
TARGETS = {"classifier, 64 px": ("square", 64, "bicubic"), "detector, 512 px": ("longer", 512, "bilinear")}


def camera_photos(source: Path, size: tuple[int, int], count: int = 4) -> list[bytes]:
    photos = []
    for path in sorted((source / "images").glob("*.jpg"))[:: max(1, 122 // count)][:count]:
        buffer = io.BytesIO()
        with Image.open(path) as frame:
            frame.convert("RGB").resize(size, Image.BICUBIC).save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def target_size(kind: str, side: int, size: tuple[int, int]) -> tuple[int, int]:
    return (side, side) if kind == "square" else fitted(size, side)


def read(encoded: bytes, kind: str, side: int, resize: str, reduced: bool) -> np.ndarray:
    with Image.open(io.BytesIO(encoded)) as image:
        size = target_size(kind, side, image.size)
        decoded = load_reduced(image, size) if reduced else image  # kd-edge's image: the same one, unless turned
        return np.asarray(decoded.convert("RGB").resize(size, pillow_filter(resize)))


def median_ms(photos: list[bytes], rounds: int, *how) -> float:
    times = []
    for _ in range(rounds):
        for encoded in photos:
            started = time.perf_counter()
            read(encoded, *how)
            times.append(1e3 * (time.perf_counter() - started))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "aerial-cars")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    header = "| photo | model input | full decode + resize, ms | reduced decode + resize, ms | ratio | pixel difference, mean / max |"  # noqa: E501
    lines = [header, "| --- | --- | ---: | ---: | ---: | --- |"]
    for camera, size in CAMERA_SIZES.items():
        photos = camera_photos(args.data, size)
        for target, how in TARGETS.items():
            full = median_ms(photos, args.rounds, *how, False)
            reduced = median_ms(photos, args.rounds, *how, True)
            diffs = [np.abs(read(p, *how, False).astype(int) - read(p, *how, True)) for p in photos]
            mean, worst = np.mean([d.mean() for d in diffs]), max(int(d.max()) for d in diffs)
            lines.append(f"| {camera} {size[0]}x{size[1]} | {target} | {full:.1f} | {reduced:.1f} | "
                         f"{reduced / full:.2f}x | {mean:.2f} / {worst} |")  # fmt: skip
    show(lines, args.markdown)


if __name__ == "__main__":
    main()

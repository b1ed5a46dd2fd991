"""Detection data in YOLO format: ``images/`` and ``labels/`` side by side, and ``classes.txt``.

    scenes = read_yolo(Path("aerial-cars"), longest_side=512)
    splits = split_by_group(scenes, (0.8, 0.1, 0.1), seed=0, group_by="prefix")

A label file holds one line per object, ``class x_center y_center width height``, the box
normalised to 0-1 by the image's width and height, so it stays valid when the image is resized.
Every bad line (a number that is not one, an unknown class, a centre outside the image, a box of
zero size) is named with its file and line, all at once, before anything trains; so is every empty
or missing label file, unless frames without objects are kept (``keep_empty``: negatives to learn from).

Frames of one video are near-duplicates: the split is by group (``group_of``: the file name
without its trailing frame number), so no video has frames on two sides.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd_edge.data.folders import IMAGE_SUFFIXES
from kd_edge.data.pixels import eight_bit, load_reduced, pillow_filter, shown_size
from kd_edge.errors import DatasetError
from kd_edge.settings.data import FRAME_RESIZE

SPLIT_NAMES = ("train", "val", "test")
LISTED_PROBLEMS = 10  # problems named in an error; the rest are counted


@dataclass
class Scene:
    """One image and its objects: ``image`` uint8 (height, width, 3) at the working scale, ``boxes`` float32
    (objects, 4) as normalised (x_center, y_center, width, height), ``labels`` int64 class indices."""

    file: str  # relative to images/
    group: str
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray

    def truths(self) -> np.ndarray:
        """(objects, 5): class, x_center, y_center, width, height in this image's pixels."""
        height, width = self.image.shape[:2]
        boxes = self.boxes * np.array([width, height, width, height], dtype=np.float32)
        return np.column_stack([self.labels.astype(np.float32), boxes])


def group_of(file: str) -> str:
    """The source an image comes from: its name without the trailing frame number and its separator
    (``DJI_0005-0019.jpg`` -> ``DJI_0005``, ``MOS155.jpg`` -> ``MOS``)."""
    stem = Path(file).stem
    return re.sub(r"[-_ ]?\d+$", "", stem) or stem


def read_classes(root: Path) -> list[str]:
    if not root.is_dir():
        raise DatasetError(f"{str(root)!r} is not a folder; give yolo:PATH with PATH/images/, PATH/labels/ and "
                           "PATH/classes.txt")  # fmt: skip
    path = root / "classes.txt"
    if not path.is_file():
        raise DatasetError(f"{str(root)!r} has no classes.txt: write one class name a line, in label-index order")
    classes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not classes:
        raise DatasetError(f"{str(path)!r} is empty: write one class name a line, in label-index order")
    return classes


def parse_labels(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(boxes, labels, problems) of one label file; a problem names the file, the line and what is wrong."""
    name = f"labels/{path.name}"
    lines = [(number, line.split()) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    boxes, labels, problems = [], [], []
    for number, fields in lines:
        where = f"{name} line {number}"
        problem = line_problem(fields, len(classes))
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        labels.append(int(float(fields[0])))
        boxes.append([float(value) for value in fields[1:]])
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64), problems


def line_problem(fields: list[str], classes: int) -> str | None:
    """What is wrong with one label line, or None."""
    if len(fields) != 5:
        return f"{len(fields)} fields, expected 5 (class x_center y_center width height)"
    try:
        values = [float(field) for field in fields]
    except ValueError:
        return f"not numbers: {' '.join(fields)}"
    if not all(math.isfinite(v) for v in values):
        return f"not finite: {' '.join(fields)}"
    label, x, y, width, height = values
    if label != int(label) or not 0 <= label < classes:
        return f"class {fields[0]} unknown (classes.txt has {classes}: 0 to {classes - 1})"
    if not (0 <= x <= 1 and 0 <= y <= 1):
        return f"centre ({x}, {y}) outside the image (normalised coordinates are 0-1)"
    if not (0 < width <= 1 and 0 < height <= 1):
        return f"box of size {width} x {height}: width and height must be above 0 and at most 1"
    return None


def read_yolo(root: Path, longest_side: int, keep_empty: bool = False) -> list[Scene]:
    """Every labelled image of ``root``, resized so that its longer side is ``longest_side`` pixels (RGB); with
    ``keep_empty``, an image whose label file is empty or missing too, as a frame without objects."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    classes = read_classes(root)
    images = root / "images"
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if images.is_dir() else []
    if not files:
        raise DatasetError(f"{str(images)!r} holds no image: a YOLO dataset is images/, labels/ and classes.txt")
    scenes, problems = [], []
    for path in files:
        label_file = root / "labels" / f"{path.stem}.txt"
        if label_file.is_file():
            boxes, labels, found = parse_labels(label_file, classes)
            empty = f"labels/{label_file.name}: empty (no object)" if not (len(labels) or found) else None
        else:
            boxes, labels, found = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), []
            empty = f"images/{path.name}: no label file labels/{label_file.name}"
        problems += found if keep_empty or empty is None else [*found, empty]  # kept: a frame with no object
        try:
            with Image.open(path) as opened:
                image = longer_side(opened, longest_side)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            problems.append(f"images/{path.name}: cannot be read ({exc or type(exc).__name__})")
            continue
        scenes.append(Scene(path.name, group_of(path.name), image, boxes, labels))
    if problems:
        more = f"; and {len(problems) - LISTED_PROBLEMS} more" if len(problems) > LISTED_PROBLEMS else ""
        raise DatasetError(
            f"{len(problems)} problem(s) in {str(root)!r}: {'; '.join(problems[:LISTED_PROBLEMS])}{more}. Fix or "
            "remove those files: each label line is `class x_center y_center width height`, normalised to 0-1 "
            "(images with no object in them: --empty-frames keep)."
        )
    return scenes


def fitted(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer is ``side``."""
    scale = side / max(size)
    return max(round(size[0] * scale), 1), max(round(size[1] * scale), 1)


def longer_side(image, side: int) -> np.ndarray:
    """An opened Pillow image (decoded by ``load_reduced``, upright) in RGB, resized (``FRAME_RESIZE``) so that its
    longer side is ``side``: (H, W, 3) uint8, a writable copy. Training reads its frames through this too, so the
    board sees what training saw, and YOLO labels (drawn on the image as shown) fit it."""
    size = fitted(shown_size(image), side)
    rgb = eight_bit(load_reduced(image, size)).convert("RGB")
    return np.array(rgb if rgb.size == size else rgb.resize(size, pillow_filter(FRAME_RESIZE)), dtype=np.uint8)


def split_by_group(
    scenes: list[Scene], fractions: tuple[float, ...], seed: int, group_by: str
) -> dict[str, list[Scene]]:
    """Whole groups to train, val and test, as near ``fractions`` of the images as whole groups allow. A group is
    a source (``group_by`` prefix: ``Scene.group``) or every image alone (file: for independent photos).

    Groups are shuffled with ``seed``, then each goes to the split furthest below its share; a split left
    empty takes the smallest group of train, so that each has at least one."""
    groups: dict[str, list[Scene]] = {}
    for scene in scenes:
        groups.setdefault(scene.group if group_by == "prefix" else scene.file, []).append(scene)
    if len(groups) < 3:
        raise DatasetError(
            f"{len(groups)} group(s) of images ({', '.join(groups)}): a split by group needs at least 3, one for "
            "each of train, val and test. Name frames of different sources differently (the group is the file name "
            "without its trailing number), or split image by image with --group-by file."
        )
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    chosen: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    sizes = dict.fromkeys(SPLIT_NAMES, 0)
    for group in order:
        deficit = {name: fractions[i] * len(scenes) - sizes[name] for i, name in enumerate(SPLIT_NAMES)}
        name = max(deficit, key=deficit.get)
        chosen[name].append(group)
        sizes[name] += len(groups[group])
    for name in ("val", "test"):
        if not chosen[name]:
            smallest = min(chosen["train"], key=lambda group: len(groups[group]))
            chosen["train"].remove(smallest)
            chosen[name].append(smallest)
    return {name: [scene for group in chosen[name] for scene in groups[group]] for name in SPLIT_NAMES}


def detection_splits(
    root: Path, frame_size: int, fractions, seed: int, group_by: str, empty_frames: str
) -> dict[str, list[Scene]]:
    """The frames of a YOLO folder, split by group: what training and every later stage (export's parity
    check, quantize's calibration) read, from the card's data reference, seed, grouping and empty-frame rule."""
    scenes = read_yolo(root, frame_size, keep_empty=empty_frames == "keep")
    return split_by_group(scenes, tuple(fractions), seed, group_by)


def card_splits(card, data_dir: str | None = None) -> dict[str, list[Scene]]:
    """The splits a detector's model card says it trained on (its data reference, frame size and seed), read from
    ``data_dir`` when the folder has moved: what export's parity check and quantize's calibration read."""
    root = Path(data_dir or card.data.dataset.removeprefix("yolo:"))
    rule = card.detection
    grouping = rule.get("group_by", "prefix")  # cards written before --group-by existed were split by source
    empty_frames = rule.get("empty_frames", "refuse")  # and before --empty-frames, refused empty label files
    return detection_splits(root, card.input_shape[1], card.data.split, rule["seed"], grouping, empty_frames)

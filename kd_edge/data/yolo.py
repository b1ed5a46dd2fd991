"""Detection data in YOLO format: ``images/`` and ``labels/`` side by side, and ``classes.txt``.

    scenes = read_yolo(Path("aerial-cars"), longest_side=512)
    splits = split_by_group(scenes, (0.8, 0.1, 0.1), seed=0, group_by="prefix")

Or as Ultralytics and Roboflow export it: the class names in ``data.yaml`` (``names:``) and the splits given,
``train/images`` and ``train/labels`` beside ``valid/`` (or ``val/``) and ``test/``, or ``images/train`` and
``labels/train`` beside ``images/val``...; validation is then carved from train by group where it is absent.

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

from kd_edge.data.folders import image_files
from kd_edge.data.pixels import load_reduced, pillow_filter, shown_size
from kd_edge.errors import DatasetError
from kd_edge.log import step
from kd_edge.settings.data import FRAME_RESIZE

SPLIT_NAMES = ("train", "val", "test")
ROBOFLOW_SUFFIX = re.compile(r"_(jpe?g|png|bmp|tiff?|webp)\.rf\.[0-9a-f]+$", re.IGNORECASE)  # ..._jpg.rf.<hash>
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
    (``DJI_0005-0019.jpg`` -> ``DJI_0005``, ``MOS155.jpg`` -> ``MOS``), and without the suffix Roboflow's exports
    add (``DJI_0005-0019_jpg.rf.<hash>.jpg`` is ``DJI_0005-0019.jpg``'s)."""
    stem = ROBOFLOW_SUFFIX.sub("", Path(file).stem)
    return re.sub(r"[-_ ]?\d+$", "", stem) or stem


def read_classes(root: Path) -> list[str]:
    """The class names, in label-index order: ``classes.txt`` (one a line; darknet's and CVAT's ``obj.names`` are
    the same), else ``data.yaml``'s ``names``."""
    if not root.is_dir():
        raise DatasetError(f"{str(root)!r} is not a folder; give yolo:PATH with PATH/images/, PATH/labels/ and "
                           "PATH/classes.txt")  # fmt: skip
    path = next((p for p in (root / "classes.txt", root / "obj.names") if p.is_file()), None)
    if path is None:
        for yaml_file in (root / "data.yaml", root / "data.yml"):
            if yaml_file.is_file():
                return yaml_names(yaml_file)
        raise DatasetError(f"{str(root)!r} has no classes.txt: write one class name a line, in label-index order "
                           "(or give Ultralytics' data.yaml with its `names:`)")  # fmt: skip
    classes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not classes:
        raise DatasetError(f"{str(path)!r} is empty: write one class name a line, in label-index order")
    return classes


def yaml_names(path: Path) -> list[str]:
    """The ``names`` of an Ultralytics data.yaml: a list, or a mapping from label index to name."""
    try:
        import yaml
    except ModuleNotFoundError:
        raise DatasetError(f"reading {str(path)!r} needs PyYAML: pip install pyyaml, or write classes.txt") from None

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DatasetError(f"{str(path)!r} is not valid YAML ({exc}); fix it, or write classes.txt") from exc
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[index] for index in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(name, (str, int)) for name in names):
        raise DatasetError(f"{str(path)!r} has no list of class names: write `names: [car, bus]` or `names: {{0: "
                           "car, 1: bus}}` in label-index order, or write classes.txt")  # fmt: skip
    return [str(name) for name in names]


def parse_labels(path: Path, classes: list[str], name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(boxes, labels, problems) of one label file (``name``: as problems name it); a problem names the file, the
    line and what is wrong."""
    lines = [(number, line.split()) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    boxes, labels, problems = [], [], []
    for number, fields in lines:
        where = f"{name} line {number}"
        fields = polygon_box(fields) if len(fields) > 5 and len(fields) % 2 else fields
        problem = line_problem(fields, len(classes))
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        labels.append(int(float(fields[0])))
        boxes.append([float(value) for value in fields[1:]])
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64), problems


def polygon_box(fields: list[str]) -> list[str]:
    """``class x1 y1 x2 y2 x3 y3 ...``, a polygon as segmentation exports write it, as the box around it (``class
    x_center y_center width height``), as Ultralytics reads it; the fields as they are where they are not numbers."""
    try:
        xs, ys = [float(value) for value in fields[1::2]], [float(value) for value in fields[2::2]]
    except ValueError:
        return fields
    left, right, top, bottom = min(xs), max(xs), min(ys), max(ys)
    return [fields[0], *(str(value) for value in ((left + right) / 2, (top + bottom) / 2, right - left, bottom - top))]


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
    """Every labelled image of ``root/images`` (labels in ``root/labels``; or, without images/, both in ``root``
    itself, as LabelImg saves them), resized so that its longer side is ``longest_side`` pixels (RGB); with
    ``keep_empty``, an image whose label file is empty or missing too, as a frame without objects."""
    root = Path(root)
    return read_unsplit(root, read_classes(root), longest_side, keep_empty)


def read_unsplit(root: Path, classes: list[str], longest_side: int, keep_empty: bool) -> list[Scene]:
    """``read_yolo`` with the classes read: the frames of a folder to be split here."""
    images_dir, labels_dir = flat_folders(root) or (root / "images", root / "labels")  # none: read_frames says so
    scenes, problems = read_frames(root, images_dir, labels_dir, classes, longest_side, keep_empty)
    refuse_problems(root, problems)
    return scenes


def flat_folders(root: Path) -> tuple[Path, Path] | None:
    """(images folder, labels folder) of a YOLO folder to be split here: images/ and labels/, or, without images
    in images/, both in ``root`` itself (LabelImg's way); None where neither holds images (an export's splits)."""
    for images_dir, labels_dir in ((root / "images", root / "labels"), (root, root)):
        if image_files(images_dir):
            return images_dir, labels_dir
    return None


def read_frames(
    root: Path, images_dir: Path, labels_dir: Path, classes: list[str], longest_side: int, keep_empty: bool
) -> tuple[list[Scene], list[str]]:
    """The scenes of one images folder and its labels folder, and the problems found (named relative to ``root``)."""
    from PIL import Image, UnidentifiedImageError

    files = image_files(images_dir)
    if not files:
        raise DatasetError(
            f"{str(images_dir)!r} holds no image: a YOLO dataset is images/, labels/ and classes.txt, or an "
            "Ultralytics or Roboflow export (data.yaml, train/images, valid/images...)"
        )
    scenes, problems = [], []
    for path in files:
        label_file = labels_dir / f"{path.stem}.txt"
        image_name, label_name = (file.relative_to(root).as_posix() for file in (path, label_file))
        if label_file.is_file():
            boxes, labels, found = parse_labels(label_file, classes, label_name)
            empty = f"{label_name}: empty (no object)" if not (len(labels) or found) else None
        else:
            boxes, labels, found = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), []
            empty = f"{image_name}: no label file {label_name}"
        problems += found if keep_empty or empty is None else [*found, empty]  # kept: a frame with no object
        try:
            with Image.open(path) as opened:
                image = longer_side(opened, longest_side)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            problems.append(f"{image_name}: cannot be read ({exc or type(exc).__name__})")
            continue
        scenes.append(Scene(path.name, group_of(path.name), image, boxes, labels))
    return scenes, problems


def refuse_problems(root: Path, problems: list[str]) -> None:
    """Stop, naming every problem found (the first ten, then a count), and what to do."""
    if problems:
        more = f"; and {len(problems) - LISTED_PROBLEMS} more" if len(problems) > LISTED_PROBLEMS else ""
        raise DatasetError(
            f"{len(problems)} problem(s) in {str(root)!r}: {'; '.join(problems[:LISTED_PROBLEMS])}{more}. Fix or "
            "remove those files: each label line is `class x_center y_center width height`, normalised to 0-1 "
            "(images with no object in them: --empty-frames keep)."
        )


def fitted(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer is ``side``."""
    scale = side / max(size)
    return max(round(size[0] * scale), 1), max(round(size[1] * scale), 1)


def longer_side(image, side: int) -> np.ndarray:
    """An opened Pillow image (decoded by ``load_reduced``, upright) in RGB, resized (``FRAME_RESIZE``) so that its
    longer side is ``side``: (H, W, 3) uint8, a writable copy. Training reads its frames through this too, so the
    board sees what training saw, and YOLO labels (drawn on the image as shown) fit it."""
    size = fitted(shown_size(image), side)
    rgb = load_reduced(image, size).convert("RGB")
    return np.array(rgb if rgb.size == size else rgb.resize(size, pillow_filter(FRAME_RESIZE)), dtype=np.uint8)


def split_by_group(
    scenes: list[Scene], fractions: tuple[float, ...], seed: int, group_by: str, names: tuple[str, ...] = SPLIT_NAMES
) -> dict[str, list[Scene]]:
    """Whole groups to each of ``names`` (train, val and test), as near ``fractions`` of the images as whole groups
    allow. A group is a source (``group_by`` prefix: ``Scene.group``) or every image alone (file: for independent
    photos).

    Groups are shuffled with ``seed``, then each goes to the split furthest below its share; a split left
    empty takes the smallest group of the first, so that each has at least one."""
    groups: dict[str, list[Scene]] = {}
    for scene in scenes:
        groups.setdefault(scene.group if group_by == "prefix" else scene.file, []).append(scene)
    if len(groups) < len(names):
        raise DatasetError(
            f"{len(groups)} group(s) of images ({', '.join(groups)}): a split by group needs at least {len(names)}, "
            f"one for each of {', '.join(names)}. Name frames of different sources differently (the group is the "
            "file name without its trailing number), or split image by image with --group-by file."
        )
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    chosen: dict[str, list[str]] = {name: [] for name in names}
    sizes = dict.fromkeys(names, 0)
    for group in order:
        deficit = {name: fractions[i] * len(scenes) - sizes[name] for i, name in enumerate(names)}
        name = max(deficit, key=deficit.get)
        chosen[name].append(group)
        sizes[name] += len(groups[group])
    for name in names[1:]:
        if not chosen[name]:
            smallest = min(chosen[names[0]], key=lambda group: len(groups[group]))
            chosen[names[0]].remove(smallest)
            chosen[name].append(smallest)
    return {name: [scene for group in chosen[name] for scene in groups[group]] for name in names}


def detection_splits(root: Path, frame_size: int, fractions, rule: dict) -> dict[str, list[Scene]]:
    """The frames of a YOLO folder, split by group (or as an export gives them, unless its ``given_splits`` is pool):
    what training and every later stage (export's parity check, quantize's calibration) read, under ``rule``
    (``DetectSettings.split_rule``, as the model card records it)."""
    seed, group_by, given_splits = rule["seed"], rule["group_by"], rule["given_splits"]
    classes, given, keep_empty = read_classes(root), given_folders(root), rule["empty_frames"] == "keep"
    if not given:
        return split_by_group(read_unsplit(root, classes, frame_size, keep_empty), tuple(fractions), seed, group_by)
    if given_splits == "keep" and ("train" not in given or len(given) == 1):
        raise DatasetError(
            f"{str(root)!r} gives the split{'s' if len(given) > 1 else ''} {', '.join(given)} only: given splits need "
            "train and at least one of val (or valid) and test; or pass --given-splits pool to split its frames "
            "here, by source"
        )
    scenes, problems = {}, []
    for name, (images_dir, labels_dir) in given.items():
        scenes[name], found = read_frames(root, images_dir, labels_dir, classes, frame_size, keep_empty)
        problems += found
    refuse_problems(root, problems)
    if given_splits == "pool":  # an export split image by image: its frames split again, by group
        return split_by_group([scene for part in scenes.values() for scene in part], tuple(fractions), seed, group_by)
    if "test" not in scenes:  # the given val is then the reported split; selection gets its own, carved from train
        scenes["test"] = scenes.pop("val")
    if "val" not in scenes:
        share = fractions[1] / (fractions[0] + fractions[1])
        scenes.update(split_by_group(scenes["train"], (1 - share, share), seed, group_by, ("train", "val")))
    say_shared_groups(scenes, group_by)
    return {name: scenes[name] for name in SPLIT_NAMES}


VAL_FOLDERS = ("val", "valid", "validation")  # Roboflow writes valid/


def given_folders(root: Path) -> dict[str, tuple[Path, Path]]:
    """{split: (images folder, labels folder)} of a YOLO folder whose splits are given, as Ultralytics and Roboflow
    write them: ``train/images`` and ``train/labels`` (beside ``valid/``, ``test/``), or ``images/train`` and
    ``labels/train``; empty for a folder whose images/ holds the images themselves (split here)."""
    if flat_folders(root):
        return {}
    given = {}
    for split, folders in (("train", ("train",)), ("val", VAL_FOLDERS), ("test", ("test",))):
        for folder in folders:
            for images_dir, labels_dir in ((root / folder / "images", root / folder / "labels"),
                                           (root / "images" / folder, root / "labels" / folder)):  # fmt: skip
                if split not in given and images_dir.is_dir():
                    given[split] = (images_dir, labels_dir)
    return given


def say_shared_groups(splits: dict[str, list[Scene]], group_by: str) -> None:
    """Given splits are kept as they are; where a source has frames on two sides (an export that split image by
    image), test F1 reads high on near-duplicates, and the data step says which."""
    if group_by != "prefix":
        return
    sides: dict[str, set[str]] = {}
    for name, scenes in splits.items():
        for scene in scenes:
            sides.setdefault(scene.group, set()).add(name)
    shared = sorted(group for group, names in sides.items() if len(names) > 1)
    if shared:
        step(f"data: {len(shared)} source(s) have frames in more than one given split ({', '.join(shared[:5])}"
             f"{', ...' if len(shared) > 5 else ''}): near-duplicate frames make test F1 read high; --given-splits "
             "pool splits the frames here, by source")  # fmt: skip


def card_splits(card, data_dir: str | None = None) -> dict[str, list[Scene]]:
    """The splits a detector's model card says it trained on (its data reference, frame size and seed), read from
    ``data_dir`` when the folder has moved: what export's parity check and quantize's calibration read."""
    root = Path(data_dir or card.data.dataset.removeprefix("yolo:"))
    return detection_splits(root, card.input_shape[1], card.data.split, {**EARLIER_CARDS_RULE, **card.detection})


# What cards written before each rule existed did: split by source (--group-by), refused empty label files
# (--empty-frames) and kept an export's splits, or had none (--given-splits).
EARLIER_CARDS_RULE = {"group_by": "prefix", "empty_frames": "refuse", "given_splits": "keep"}

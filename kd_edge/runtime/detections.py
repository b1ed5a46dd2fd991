"""From a centroid detector's per-cell logits to objects, and how good those are. NumPy only (no torch): the
board runs this too.

    pixels, scale = letterbox(pil_image, 512)      # the frame as the exported model takes it

    found = decode(logits, stride=8, threshold=0.5, scale=(sx, sy))      # one image's (classes + 1, h, w)
    score = match(found, truths, classes=2)                               # truths: [(class, x, y, w, h)] px
    summary = summarise([score, ...], class_names)

An object is a cell whose class (not background) has probability at least ``threshold`` and is the
largest of that class's probabilities in the 3x3 cells around it (a local maximum: one object
covering two cells is found once). Its centre is the cell's centre, in input pixels times ``scale``
(the original image's size over the input's).

A detection is correct when its centre lies inside a ground-truth box of its class (``fraction``
0.5: within half the box's width and half its height of the box's centre, that is within the object
itself), or, along a side shorter than 8 px, within 4 px (``MIN_DISTANCE``: a detector of stride 8
places a centre to within 4 px, so a 6 px-tall car would otherwise be missed by a correct cell; the
same for every detector, so that figures compare across strides), that no higher-scored detection
took; each box is found at most once. Precision, recall and F1 follow, per class and over all
classes, and the counting error per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kd_edge.data.pixels import load_reduced, shown_size

MATCH_FRACTION = 0.5  # a detection's centre must be within this fraction of the box's size of its centre
MIN_DISTANCE = 4.0  # ... or within this many input pixels, where that is more: half a stride-8 cell


def letterbox(image, side: int) -> tuple[np.ndarray, float]:
    """A decoded Pillow image as a detector takes it: ``longer_side`` resized, then zero-padded at the bottom and
    right to ``side`` x ``side``, (H, W, 3) uint8; and the original's pixels per input pixel (to map detections
    back)."""
    from kd_edge.data.yolo import longer_side

    scale = max(image.size) / side  # of the image as opened: longer_side may decode it at a reduced scale
    return pad_square(longer_side(image, side), side), scale


def pad_square(pixels: np.ndarray, side: int) -> np.ndarray:
    """(H, W, C) uint8 with H, W <= ``side``, zero-padded at the bottom and right to (side, side, C)."""
    out = np.zeros((side, side, pixels.shape[2]), dtype=np.uint8)
    out[: pixels.shape[0], : pixels.shape[1]] = pixels
    return out


@dataclass(frozen=True)
class Detection:
    label: int  # class index (background excluded)
    x: float
    y: float
    score: float


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


# Which cells around a cell it must beat to be an object: all 8 (the 3x3 around it), or its 4 edge neighbours only
# (two objects diagonally adjacent, as in a dense parking row, are then both found).
NEIGHBOURHOODS = {8: [(dy, dx) for dy in range(3) for dx in range(3)], 4: [(0, 1), (1, 0), (1, 1), (1, 2), (2, 1)]}


def local_maxima(scores: np.ndarray, neighbours: int = 8) -> np.ndarray:
    """Cells whose score is the largest of their ``neighbours`` (8 or 4) cells (ties kept), as a boolean map."""
    padded = np.pad(scores, 1, constant_values=-np.inf)
    h, w = scores.shape
    around = np.stack([padded[dy : dy + h, dx : dx + w] for dy, dx in NEIGHBOURHOODS[neighbours]])
    return scores >= around.max(axis=0)


def decode(
    logits: np.ndarray, stride: int, threshold: float, scale=(1.0, 1.0), size=None, neighbours: int = 8
) -> list[Detection]:
    """The objects in one image's logits (classes + 1, h, w); index 0 is background. With ``size`` (width,
    height, in the scaled pixels), objects in the padding beyond the image are left out."""
    probabilities = softmax(logits.astype(np.float32), axis=0)
    found = []
    for label in range(1, probabilities.shape[0]):
        scores = probabilities[label]
        rows, cols = np.nonzero((scores >= threshold) & local_maxima(scores, neighbours))
        for row, col in zip(rows, cols, strict=True):
            x, y = (col + 0.5) * stride * scale[0], (row + 0.5) * stride * scale[1]
            if size is None or (x < size[0] and y < size[1]):
                found.append(Detection(label - 1, float(x), float(y), float(scores[row, col])))
    return sorted(found, key=lambda d: -d.score)


@dataclass
class ImageScore:
    """One image's matches, per class: true positives, false positives, false negatives; and the counts."""

    true_positives: np.ndarray
    false_positives: np.ndarray
    false_negatives: np.ndarray
    found: int = 0
    present: int = 0


def match(
    found: list[Detection], truths: np.ndarray, classes: int, fraction: float = MATCH_FRACTION, min_distance=0.0
) -> ImageScore:
    """Score one image. ``truths`` is (objects, 5): class, x_center, y_center, width, height in the same pixels
    as the detections. Greedy by score: each detection takes the nearest untaken box of its class whose centre
    is within ``fraction`` of the box's width and height, or ``min_distance`` pixels where that is more."""
    truths = np.asarray(truths, dtype=np.float64).reshape(-1, 5)
    taken = np.zeros(len(truths), dtype=bool)
    tp, fp = np.zeros(classes, np.int64), np.zeros(classes, np.int64)
    for detection in sorted(found, key=lambda d: -d.score):
        dx, dy = np.abs(truths[:, 1] - detection.x), np.abs(truths[:, 2] - detection.y)
        inside = (truths[:, 0] == detection.label) & ~taken
        inside &= dx <= np.maximum(fraction * truths[:, 3], min_distance)
        inside &= dy <= np.maximum(fraction * truths[:, 4], min_distance)
        if inside.any():
            candidates = np.flatnonzero(inside)
            taken[candidates[np.argmin(np.hypot(dx, dy)[candidates])]] = True
            tp[detection.label] += 1
        else:
            fp[detection.label] += 1
    present = np.bincount(truths[:, 0].astype(np.int64), minlength=classes)[:classes]
    return ImageScore(tp, fp, present - tp, found=len(found), present=len(truths))


@dataclass
class DetectionSummary:
    """Precision, recall and F1 per class and over all (micro: every object counts once), and the mean absolute
    counting error per image."""

    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    overall: dict[str, float] = field(default_factory=dict)
    counting_error: float = 0.0
    images: int = 0

    def to_dict(self) -> dict:
        return {"per_class": self.per_class, "overall": self.overall, "counting_error": self.counting_error,
                "images": self.images}  # fmt: skip


def score_frames(
    logits: list[np.ndarray], scenes, classes, threshold: float, stride: int, neighbours: int = 8
) -> DetectionSummary:
    """How well ``logits`` (one per scene, as ``decode`` takes them) find ``scenes``' objects (``Scene.truths``)
    at ``threshold``; a centre within ``MIN_DISTANCE`` counts along a side shorter than twice that."""
    truths = [scene.truths() for scene in scenes]
    sizes = [scene.image.shape[1::-1] for scene in scenes]  # (width, height)
    return score_truths(logits, truths, sizes, classes, threshold, stride, neighbours)


def score_truths(
    logits, truths, sizes, classes, threshold: float, stride: int, neighbours: int = 8
) -> DetectionSummary:
    """``score_frames`` from each frame's truths (objects, 5) and (width, height) of its image in the frame (the
    rest is padding, where nothing is looked for)."""
    scores = [
        match(
            decode(heatmap, stride, threshold, size=tuple(size), neighbours=neighbours),
            boxes,
            len(classes),
            min_distance=MIN_DISTANCE,
        )
        for heatmap, boxes, size in zip(logits, truths, sizes, strict=True)
    ]
    return summarise(scores, list(classes))


# --- a detector's labelled samples (a bundle's samples.npz): whole frames and their objects ------------------


def frame_samples(scenes, side: int) -> dict[str, np.ndarray]:
    """``scenes`` as arrays to save: ``images`` (N, side, side, 3) uint8 frames as the model takes them (padded at
    the bottom and right); ``boxes`` (objects, 6) float32: frame index, class, x_center, y_center, width, height
    in the frame's pixels; ``sizes`` (N, 2): the width and height of the image within each frame."""
    boxes = [np.column_stack([np.full(len(s.labels), i, np.float32), s.truths()]) for i, s in enumerate(scenes)]
    return {
        "images": np.stack([pad_square(scene.image, side) for scene in scenes]),
        "boxes": np.concatenate(boxes).astype(np.float32).reshape(-1, 6),
        "sizes": np.array([scene.image.shape[1::-1] for scene in scenes], dtype=np.int64),
    }


def score_samples(logits: np.ndarray, samples, classes, rule: dict) -> DetectionSummary:
    """How well ``logits`` (N, classes + 1, h, w) find the objects of ``frame_samples``' arrays, decoded by a
    card's ``rule`` (stride, threshold)."""
    boxes = samples["boxes"]
    truths = [boxes[boxes[:, 0] == i, 1:] for i in range(len(logits))]
    return score_truths(list(logits), truths, samples["sizes"], classes, rule["threshold"], rule["stride"])


def rates(tp: int, fp: int, fn: int) -> dict[str, float]:
    tp, fp, fn = int(tp), int(fp), int(fn)  # plain numbers: checkpoints load only those (weights_only)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_positives": tp, "false_positives": fp,
            "false_negatives": fn}  # fmt: skip


def summarise(scores: list[ImageScore], class_names: list[str]) -> DetectionSummary:
    tp, fp, fn = (np.sum([getattr(s, name) for s in scores], axis=0) for name in
                  ("true_positives", "false_positives", "false_negatives"))  # fmt: skip
    per_class = {
        name: rates(tp[i], fp[i], fn[i]) for i, name in enumerate(class_names) if tp[i] + fp[i] + fn[i]
    }  # classes never present nor predicted are left out
    counting = float(np.mean([abs(s.found - s.present) for s in scores])) if scores else 0.0
    return DetectionSummary(per_class, rates(tp.sum(), fp.sum(), fn.sum()), counting, len(scores))


# --- kd-edge predict for a detector: image files in, objects in the original image's pixels out ---------------


@dataclass
class FrameObjects:
    file: str
    width: int
    height: int
    objects: list[Detection]
    classes: list[str]

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "detections": [
                {"class": self.classes[d.label], "x": round(d.x, 1), "y": round(d.y, 1), "score": round(d.score, 4)}
                for d in self.objects
            ],
        }


def detect_files(model, paths: list[Path], threshold: float | None = None) -> list[FrameObjects]:
    """The objects a detector (an ``OnnxModel`` whose card says ``task: detect``) finds in image files or folders of
    them, at the card's threshold unless ``threshold`` is given, in each original image's pixels."""
    from PIL import Image, UnidentifiedImageError

    from kd_edge.data.folders import images_in
    from kd_edge.errors import DatasetError

    rule = model.card.detection
    side, threshold = model.input_shape[1], rule["threshold"] if threshold is None else threshold
    files = []
    for path in map(Path, paths):
        if not path.exists():
            raise DatasetError(f"{str(path)!r} does not exist; give image files or folders of them")
        files += images_in(path) if path.is_dir() else [path]
    if not files:
        raise DatasetError(f"no images in {', '.join(map(str, paths))}; give image files or folders of them")
    results = []
    for file in files:
        try:
            with Image.open(file) as image:
                size = shown_size(image)  # detections are in the image's pixels as a viewer shows it
                pixels, scale = letterbox(image, side)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DatasetError(f"cannot read {str(file)!r} as an image ({exc}); give PNG, JPEG or another") from exc
        logits = model.logits(model.preprocess(pixels[None]))[0]
        objects = decode(logits, rule["stride"], threshold, scale=(scale, scale), size=size)
        results.append(FrameObjects(str(file), size[0], size[1], objects, list(model.classes)))
    return results


def draw_objects(frame: FrameObjects, out: Path) -> Path:
    """The image with a circle and its class name at each object, written to ``out`` (PNG, JPEG... by suffix)."""
    from PIL import Image, ImageDraw

    with Image.open(frame.file) as image:
        canvas = load_reduced(image, shown_size(image)).convert("RGB")  # upright, full size: as detected
    pen = ImageDraw.Draw(canvas)
    radius = max(3, round(max(canvas.size) / 100))
    for d in frame.objects:
        pen.ellipse((d.x - radius, d.y - radius, d.x + radius, d.y + radius), outline=(255, 40, 40), width=2)
        pen.text((d.x + radius + 1, d.y - radius), f"{frame.classes[d.label]} {d.score:.2f}", fill=(255, 255, 0))
    canvas.save(out)
    return out


def draw_frames(frames: list[FrameObjects], draw: Path) -> None:
    """Each frame drawn with its objects: to ``draw`` itself for one frame, into the folder ``draw`` for more."""
    several = len(frames) > 1 or draw.is_dir()
    if several:
        draw.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        draw_objects(frame, draw / f"{Path(frame.file).stem}.png" if several else draw)


def frame_lines(frames: list[FrameObjects]) -> list[str]:
    """A line per frame: its objects, class, centre in the image's pixels and score."""
    lines = []
    for frame in frames:
        found = ", ".join(f"{frame.classes[d.label]} ({d.x:.0f}, {d.y:.0f}) {d.score:.2f}" for d in frame.objects)
        lines.append(f"{frame.file}: {len(frame.objects)} object(s){': ' + found if found else ''}")
    return lines

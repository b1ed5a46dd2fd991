"""From a centroid detector's per-cell logits to objects, and how good those are. NumPy only (no torch): the
board runs this too.

    found = decode(logits, stride=8, threshold=0.5, scale=(sx, sy))      # one image's (classes + 1, h, w)
    score = match(found, truths, classes=2)                               # truths: [(class, x, y, w, h)] px
    summary = summarise([score, ...], class_names)

An object is a cell whose class (not background) has probability at least ``threshold`` and is the
largest of that class's probabilities in the 3x3 cells around it (a local maximum: one object
covering two cells is found once). Its centre is the cell's centre, in input pixels times ``scale``
(the original image's size over the input's).

A detection is correct when its centre lies inside a ground-truth box of its class (``fraction``
0.5: within half the box's width and half its height of the box's centre, that is within the object
itself) that no higher-scored detection took; each box is found at most once. Precision, recall and
F1 follow, per class and over all classes, and the counting error per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MATCH_FRACTION = 0.5  # a detection's centre must be within this fraction of the box's size of its centre


@dataclass(frozen=True)
class Detection:
    label: int  # class index (background excluded)
    x: float
    y: float
    score: float


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def local_maxima(scores: np.ndarray) -> np.ndarray:
    """Cells whose score is the largest of the 3x3 cells around them (ties kept), as a boolean map."""
    padded = np.pad(scores, 1, constant_values=-np.inf)
    h, w = scores.shape
    neighbours = np.stack([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    return scores >= neighbours.max(axis=0)


def decode(logits: np.ndarray, stride: int, threshold: float, scale=(1.0, 1.0)) -> list[Detection]:
    """The objects in one image's logits (classes + 1, h, w); index 0 is background."""
    probabilities = softmax(logits.astype(np.float32), axis=0)
    found = []
    for label in range(1, probabilities.shape[0]):
        scores = probabilities[label]
        rows, cols = np.nonzero((scores >= threshold) & local_maxima(scores))
        for row, col in zip(rows, cols, strict=True):
            x, y = (col + 0.5) * stride * scale[0], (row + 0.5) * stride * scale[1]
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


def match(found: list[Detection], truths: np.ndarray, classes: int, fraction: float = MATCH_FRACTION) -> ImageScore:
    """Score one image. ``truths`` is (objects, 5): class, x_center, y_center, width, height in the same pixels
    as the detections. Greedy by score: each detection takes the nearest untaken box of its class whose centre
    is within ``fraction`` of the box's width and height."""
    truths = np.asarray(truths, dtype=np.float64).reshape(-1, 5)
    taken = np.zeros(len(truths), dtype=bool)
    tp, fp = np.zeros(classes, np.int64), np.zeros(classes, np.int64)
    for detection in sorted(found, key=lambda d: -d.score):
        dx, dy = np.abs(truths[:, 1] - detection.x), np.abs(truths[:, 2] - detection.y)
        inside = (truths[:, 0] == detection.label) & ~taken
        inside &= (dx <= fraction * truths[:, 3]) & (dy <= fraction * truths[:, 4])
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


def rates(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_positives": int(tp),
            "false_positives": int(fp), "false_negatives": int(fn)}  # fmt: skip


def summarise(scores: list[ImageScore], class_names: list[str]) -> DetectionSummary:
    tp, fp, fn = (np.sum([getattr(s, name) for s in scores], axis=0) for name in
                  ("true_positives", "false_positives", "false_negatives"))  # fmt: skip
    per_class = {
        name: rates(tp[i], fp[i], fn[i]) for i, name in enumerate(class_names) if tp[i] + fp[i] + fn[i]
    }  # classes never present nor predicted are left out
    counting = float(np.mean([abs(s.found - s.present) for s in scores])) if scores else 0.0
    return DetectionSummary(per_class, rates(tp.sum(), fp.sum(), fn.sum()), counting, len(scores))

"""Centroid detectors for drone frames, in the manner of Edge Impulse's FOMO, and their losses.

A detector is fully convolutional: a frame of any size in, one logit per class *and background* for
each ``stride x stride`` cell out, (N, classes + 1, H / stride, W / stride), the stride 8 or 4 (the
network's ``stride``). An object is found where its
class wins a cell and is a local maximum (``kd_edge.runtime.detections``): no boxes, no NMS in the
graph. Objects from above are small and alike in size, so a centre is what a drone needs (count,
track, steer around).

Plain 3x3 conv-BN-ReLU stages, stride 2 each, to stride 8, then a few convolutions there for
context, then a 1x1 head: the operations CPUs (and INT8 on ARM) run fastest per MAC. For objects
closer than 8 px, 4 px cells: a ``-s4`` network brings those features back to stride 4 for its head,
a ``-q4`` network's head gives each stride-8 cell's quarters logits of their own.

Kept apart from the classifiers' registry (``kd_edge.training.models``): a detector there would
be offered to `kd-edge distill` on class labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_edge.errors import ModelError
from kd_edge.training.models import conv_bn_relu


class Detector(nn.Module):
    """What every detector has: ``features`` (what its head reads) and ``head`` (to ``classes + 1`` logits a cell,
    index 0 background), and the input pixels per cell of each."""

    stride = 8  # input pixels per output cell
    feature_stride = 8  # ... and per cell of the features the head reads

    def forward(self, x):
        return self.features_and_logits(x)[1]

    def features_and_logits(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """The features the head reads, and the logits: what feature distillation compares."""
        features = self.features(x)
        return features, self.head(features)


class CentroidNet(Detector):
    """Stages of ``widths`` (each a stride-2 conv, then ``depth - 1`` more convs), ``context`` convs at stride 8
    (``separable``: each a depthwise 3x3 then a 1x1, a seventh of the MACs), and a 1x1 head."""

    def __init__(
        self, classes: int, in_channels: int = 3, widths=(8, 16, 32), depth: int = 1, context: int = 2, separable=False
    ):
        super().__init__()
        self.features = nn.Sequential(
            *stages(in_channels, widths, depth), *context_convs(widths[-1], context, separable)
        )
        self.head = nn.Conv2d(widths[-1], classes + 1, 1)
        self.feature_channels = widths[-1]


class FineCentroidNet(Detector):
    """A ``CentroidNet`` whose cells are 4 px: the stride-8 features (with their context) upsampled 2x and
    concatenated with the last stride-4 stage's, fused by a 1x1 conv, then the head. Two cars closer than 8 px
    share a stride-8 cell, and one of them is lost; the smallest cars of aerial-cars are 6 px at 512 px.
    Its input's sides stay multiples of 8."""

    stride = feature_stride = 4

    def __init__(
        self, classes: int, in_channels: int = 3, widths=(8, 16, 32), depth: int = 1, context: int = 2, separable=False
    ):
        super().__init__()
        fine, coarse = widths[-2], widths[-1]
        self.fine = nn.Sequential(*stages(in_channels, widths[:-1], depth))
        self.coarse = nn.Sequential(*stages(fine, widths[-1:], depth), *context_convs(coarse, context, separable))
        self.fuse = nn.Sequential(nn.Conv2d(fine + coarse, fine, 1, bias=False), nn.BatchNorm2d(fine), nn.ReLU())
        self.head = nn.Conv2d(fine, classes + 1, 1)
        self.feature_channels = fine

    def features(self, x):
        fine = self.fine(x)
        coarse = F.interpolate(self.coarse(fine), scale_factor=2.0, mode="nearest")
        return self.fuse(torch.cat([fine, coarse], dim=1))


class ShuffledCentroidNet(CentroidNet):
    """A ``CentroidNet`` whose head gives each stride-8 cell's four 4x4 quarters logits of their own: 4 x (classes + 1)
    channels, moved into place by a pixel shuffle (DepthToSpace in ONNX). 4 px cells for a few more head MACs,
    where ``FineCentroidNet`` fuses stride 4's features; its features stay at stride 8."""

    stride = 4

    def __init__(self, classes: int, in_channels: int = 3, **arguments):
        super().__init__(classes, in_channels, **arguments)
        self.head = nn.Sequential(nn.Conv2d(self.feature_channels, 4 * (classes + 1), 1), nn.PixelShuffle(2))


def stages(in_channels: int, widths, depth: int) -> list[nn.Module]:
    """One stage a width: a stride-2 conv-BN-ReLU, then ``depth - 1`` more at that stride."""
    layers, channels = [], in_channels
    for width in widths:
        layers += conv_bn_relu(channels, width, stride=2)
        layers += [module for _ in range(depth - 1) for module in conv_bn_relu(width, width)]
        channels = width
    return layers


def context_convs(channels: int, count: int, separable: bool) -> list[nn.Module]:
    conv = separable_conv if separable else conv_bn_relu
    return [module for _ in range(count) for module in conv(channels, channels)]


def separable_conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A depthwise 3x3 conv-BN-ReLU, then a 1x1 conv-BN-ReLU (MobileNet's block, without its expansion)."""
    return [
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


# name: (arguments, what it is)
DETECTORS = {
    "fomo-small": ({"widths": (8, 16, 32), "depth": 1, "context": 2}, "stages 8-16-32, 2 context convs"),
    "fomo-lite": ({"widths": (8, 16, 32), "depth": 1, "context": 1}, "fomo-small with one context conv"),
    "fomo-sep": (
        {"widths": (8, 16, 32), "depth": 1, "context": 3, "separable": True},
        "fomo-small with 3 depthwise-separable context convs",
    ),
    "fomo-base": ({"widths": (16, 32, 64), "depth": 2, "context": 2}, "teacher: stages 16-32-64, two convs each"),
    "fomo-lite-s4": (
        {"widths": (8, 16, 32), "depth": 1, "context": 1, "cells": "fine"},
        "fomo-lite with 4 px cells (its stride-8 features upsampled onto stride 4's)",
    ),
    "fomo-base-s4": (
        {"widths": (16, 32, 64), "depth": 2, "context": 2, "cells": "fine"},
        "teacher: fomo-base with 4 px cells (its stride-8 features upsampled onto stride 4's)",
    ),
    "fomo-lite-q4": (
        {"widths": (8, 16, 32), "depth": 1, "context": 1, "cells": "shuffled"},
        "fomo-lite with 4 px cells: each stride-8 cell's head gives its four quarters' logits",
    ),
}


def create_detector(name: str, classes: int, in_channels: int = 3) -> Detector:
    if name not in DETECTORS:
        raise ModelError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}")
    arguments = dict(DETECTORS[name][0])
    network = {"coarse": CentroidNet, "fine": FineCentroidNet, "shuffled": ShuffledCentroidNet}
    return network[arguments.pop("cells", "coarse")](classes, in_channels, **arguments)


def centre_loss(logits: torch.Tensor, targets: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Cross-entropy per cell, object cells weighted ``object_weight`` times the background's: a frame is mostly
    background, and unweighted the network learns to say "background" everywhere. Normalised by the weights'
    sum, so the loss's scale does not move with the number of objects in a batch."""
    weights = torch.where(targets > 0, object_weight, 1.0)
    per_cell = F.cross_entropy(logits, targets, reduction="none")
    return (per_cell * weights).sum() / weights.sum()


def heatmap_distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``T^2 * KL`` between the teacher's and the student's softened per-cell distributions, averaged over cells
    (weighted by ``weights``, (N, H, W), where given): the classifiers' ``kd_kl_loss``, a cell for an image."""
    log_student = F.log_softmax(student / temperature, dim=1)
    log_teacher = F.log_softmax(teacher / temperature, dim=1)
    per_cell = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(dim=1)
    weights = torch.ones_like(per_cell) if weights is None else weights
    return temperature**2 * (per_cell * weights).sum() / weights.sum()


def object_cells(targets: torch.Tensor, teacher: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Per-cell weights of the distillation term under ``--kd-cells objects``: ``object_weight`` where the label
    or the teacher says object, 1 elsewhere (the centre loss's weighting, so that the background's many cells
    do not drown what the teacher knows about objects)."""
    return torch.where((targets > 0) | (teacher.argmax(1) > 0), object_weight, 1.0)


def feature_projector(student: Detector, teacher: Detector) -> nn.Conv2d:
    """The 1x1 convolution that maps the student's stride-8 features onto the teacher's channels (FitNets' hint
    regressor): trained with the student, used by the loss only, never exported."""
    return nn.Conv2d(student.feature_channels, teacher.feature_channels, 1)


def feature_distillation_loss(projected: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's projected features and the teacher's, over every cell and channel."""
    return F.mse_loss(projected, teacher_features)

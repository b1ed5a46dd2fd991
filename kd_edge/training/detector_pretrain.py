"""Pretrain a detector's features as a scene classifier on a folder of aerial photos, before it learns boxes.

    scores = pretrain_features(model, load_pretrain_folder(Path("rsscn7")), normalize, PretrainPlan(epochs=10))

A detection set of a hundred frames from a handful of sources teaches a network little about what is *not* a
car: roofs, road markings, trees, shadows. A folder of aerial scenes (one folder per class, as RSSCN7) is many
more views from above. The detector's ``features`` (everything but its 1x1 head) learn to tell those scenes
apart through a global average pool and a linear layer, thrown away afterwards; the detector then trains as
usual from those weights.

The scale follows the detection frames': the scenes are read at ``2 x`` the tile's side and the network sees
random ``tile``-sized crops of them, under the aerial augmentation's symmetries and light jitter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kd_edge import log
from kd_edge.training.augment import dihedral, jitter
from kd_edge.training.device import autocast


@dataclass(frozen=True)
class PretrainPlan:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    tile: int = 128  # the crops' side; the scenes are read at twice it
    seed: int = 0
    precision: str = "fp32"


def load_pretrain_folder(root: Path, side: int) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Every image of the class-folder tree ``root`` at ``side`` x ``side`` (RGB uint8), with its class."""
    from kd_edge.data.folders import Reading, load_image_folder

    dataset = load_image_folder(root, Reading(image_size=side, channels=3, split=(0.8, 0.1, 0.1), bad_images="skip"))
    splits = (dataset.train, dataset.val, dataset.test)
    images = torch.from_numpy(np.concatenate([split.images for split in splits]))
    labels = torch.from_numpy(np.concatenate([split.labels for split in splits]))
    return images, labels, dataset.classes


def random_crops(images: torch.Tensor, tile: int, generator: torch.Generator) -> torch.Tensor:
    """A ``tile`` x ``tile`` crop of each image at a random place, under one of the 8 symmetries, jittered."""
    n, _, height, width = images.shape
    tops = torch.randint(height - tile + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(width - tile + 1, (n,), generator=generator).tolist()
    codes = torch.randint(8, (n,), generator=generator).tolist()
    crops = [
        dihedral(image[None, :, top : top + tile, left : left + tile], code)[0]
        for image, top, left, code in zip(images, tops, lefts, codes, strict=True)
    ]
    return jitter(torch.stack(crops), generator)


def pretrain_features(model: nn.Module, scenes, normalize, plan: PretrainPlan) -> dict:
    """Train ``model.features`` (with a pooled linear classifier, discarded) on ``scenes`` (images, labels,
    classes); the head is untouched. Returns the last epoch's training accuracy and the seconds it took."""
    images, labels, classes = scenes
    classifier = nn.Linear(model.feature_channels, len(classes))
    parameters = [p for name, p in model.named_parameters() if not name.startswith("head.")]
    optimizer = torch.optim.AdamW(parameters + list(classifier.parameters()), lr=plan.lr, weight_decay=1e-4)
    steps = plan.epochs * (len(images) // plan.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, plan.lr, total_steps=steps)
    generator = torch.Generator().manual_seed(plan.seed)
    started, step, correct = time.perf_counter(), 0, 0
    model.train()
    for epoch in range(plan.epochs):
        order = torch.randperm(len(images), generator=generator)
        correct = 0
        for first in range(0, len(order) - plan.batch_size + 1, plan.batch_size):
            chosen = order[first : first + plan.batch_size]
            batch = normalize(random_crops(images[chosen], plan.tile, generator))
            with autocast(batch.device, plan.precision):
                logits = classifier(model.features(batch).float().mean(dim=(2, 3)))
            loss = F.cross_entropy(logits.float(), labels[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            correct += int((logits.argmax(1) == labels[chosen]).sum())
        log.step(f"pretraining: epoch {epoch + 1}/{plan.epochs}, loss {loss.item():.3f}")
    seen = (len(images) // plan.batch_size) * plan.batch_size
    return {"train_accuracy": correct / max(seen, 1), "seconds": time.perf_counter() - started, "steps": step}

"""Train a centroid detector on tiles, alone or from a teacher's heatmaps; keep the weights and the threshold
that score best on validation (F1 over whole validation images).

    result = fit_detector(DetectorPlan(model=net, train=train, val=val, classes=("car",), steps=1500, settings=settings,
                                       mean=mean, std=std), teacher)

The loss is ``alpha * centre_loss + (1 - alpha) * heatmap_distillation_loss`` (the classifiers'
distillation, per cell), plus ``feature_weight * feature_distillation_loss`` through a 1x1 projector when
that weight is above 0; without a teacher, ``alpha`` is 1. Evaluation runs on whole images, as the
board will: the network is fully convolutional.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kd_edge import log
from kd_edge.data.yolo import Scene
from kd_edge.interrupt import stop_if_requested
from kd_edge.runtime.detections import score_frames
from kd_edge.settings.detection import SIDE_MULTIPLE, DetectSettings
from kd_edge.training.batches import Normalizer
from kd_edge.training.detection_tiles import draw_tiles
from kd_edge.training.detectors import (
    centre_loss,
    feature_distillation_loss,
    feature_projector,
    heatmap_distillation_loss,
    object_cells,
)
from kd_edge.training.device import autocast, resolve_precision
from kd_edge.training.fit import LaterStage, PaceEstimate
from kd_edge.training.optimizers import make_optimizer, make_scheduler
from kd_edge.training.progress import SilentProgress

THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))  # 0.3 to 0.95: what validation chooses from


EVALUATE_EVERY = 100  # steps between validation scorings (each may keep the weights)


@dataclass(kw_only=True)
class DetectorPlan:
    """What one detector fit trains (``steps`` steps of ``model``), on what, and how: ``settings`` owns every knob
    (tiles, augmentation, loss weights, optimiser, seed); ``mean``/``std`` are the input's normalisation."""

    model: nn.Module
    train: list[Scene]
    val: list[Scene]
    classes: tuple[str, ...]
    steps: int
    settings: DetectSettings
    mean: tuple[float, ...]
    std: tuple[float, ...]
    evaluate_every: int = EVALUATE_EVERY
    stage: str = "detector"  # what the log lines call it: teacher, student
    later: tuple[LaterStage, ...] = ()  # the stages after this one, whose time its pace line estimates


@dataclass
class DetectorResult:
    best_val_f1: float
    threshold: float
    best_step: int
    seconds: float
    history: list[dict]
    precision: str  # what the training steps ran in (``detector_precision``)


def detector_precision(settings: DetectSettings, model: nn.Module) -> str:
    """What ``model``'s forward and backward passes run in: ``--precision`` as the classifiers resolve it (auto:
    bf16 autocast on a CPU with native bf16, unless the network has depthwise convolutions; else fp32). Its
    teacher's forward pass, when it learns from one, runs in the same. Evaluation is always float32."""
    return resolve_precision(settings.run.precision, torch.device("cpu"), (model,))


def fit_detector(plan: DetectorPlan, teacher: nn.Module | None = None) -> DetectorResult:
    """Train ``plan.model`` for ``plan.steps`` steps and leave it holding its best-on-validation weights."""
    model, normalize, knobs = plan.model, Normalizer(plan.mean, plan.std, "cpu"), plan.settings
    precision = detector_precision(knobs, model)
    projector = feature_projector(model, teacher) if teacher is not None and knobs.feature_weight > 0 else None
    optimizer = make_optimizer(model if projector is None else nn.ModuleList([model, projector]), knobs.optim)
    scheduler = make_scheduler(optimizer, knobs.optim, plan.steps)
    generator = torch.Generator().manual_seed(knobs.run.seed)
    average = weight_average(model, knobs.ema_decay)
    scored = model if average is None else average.module  # what validation scores and the best weights come from
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    best = (-1.0, 0.5, 0, None)
    history, started = [], time.perf_counter()
    advice = "a smaller --frame-size or --tile, fewer --steps or --teacher-steps; Ctrl-C stops it"
    # the time left, and the later stages', after its first steps
    pace = PaceEstimate(SilentProgress(), plan.stage, plan.steps, advice, plan.later)
    for step in range(1, plan.steps + 1):
        stop_if_requested(f"detector training step {step} of {plan.steps}")  # Ctrl-C or SIGTERM: stop cleanly
        model.train()
        batch = knobs.optim.batch_size
        images, targets = draw_tiles(
            plan.train, batch, knobs.tile, model.stride, generator, knobs.augment, knobs.scales
        )
        with autocast(images.device, precision):
            loss = detector_loss(model, teacher, projector, normalize(images), targets, knobs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:  # None: --schedule constant
            scheduler.step()
        if average is not None:
            average.update_parameters(model)
        pace.step(loss.item(), len(images) / max(time.perf_counter() - started, 1e-9))
        if step % plan.evaluate_every == 0 or step == plan.steps:
            f1, threshold = best_threshold(scored, plan.val, normalize, plan.classes)
            history.append({"step": step, "loss": loss.item(), "val_f1": f1, "threshold": threshold})
            log.step(f"{plan.stage}: step {step}/{plan.steps}, loss {loss.item():.4f}, val F1 {f1:.3f} at {threshold}")
            if f1 > best[0]:
                best = (f1, threshold, step, copy.deepcopy(scored.state_dict()))
    model.load_state_dict(best[3])
    return DetectorResult(best[0], best[1], best[2], time.perf_counter() - started, history, precision)


def weight_average(model: nn.Module, decay: float):
    """torch's running exponential average of ``model``'s parameters and buffers (BatchNorm's statistics), updated
    after each step; None for ``decay`` 0. Its first update copies the weights."""
    if decay == 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def detector_loss(model, teacher, projector, inputs, targets, knobs: DetectSettings) -> torch.Tensor:
    """The step's loss: the labels' centre loss, mixed with the teacher's heatmaps (and features) when there is
    one. The networks' outputs are taken in float32 (under bf16 autocast they come in bf16)."""
    features, logits = model.features_and_logits(inputs)
    logits = logits.float()
    loss = centre_loss(logits, targets, knobs.object_weight)
    if teacher is None:
        return loss
    with torch.no_grad():
        teacher_features, soft = teacher.features_and_logits(inputs)
    soft = soft.float()
    cells = object_cells(targets, soft, knobs.object_weight) if knobs.kd_cells == "objects" else None
    loss = knobs.alpha * loss + (1 - knobs.alpha) * heatmap_distillation_loss(logits, soft, knobs.temperature, cells)
    if projector is not None:
        projected = projector(features).float()
        loss = loss + knobs.feature_weight * feature_distillation_loss(projected, teacher_features.float())
    return loss


@torch.no_grad()
def scene_logits(model: nn.Module, scenes: list[Scene], normalize: Normalizer) -> list[np.ndarray]:
    """Each scene's (classes + 1, h, w) logits on its whole image, zero-padded to sides the network takes."""
    model.eval()
    out = []
    for scene in scenes:
        image = torch.from_numpy(scene.image).permute(2, 0, 1)[None]
        height, width = image.shape[2:]
        padded = torch.nn.functional.pad(image, (0, -width % SIDE_MULTIPLE, 0, -height % SIDE_MULTIPLE))
        out.append(model(normalize(padded))[0].float().numpy())
    return out


def best_threshold(model: nn.Module, scenes: list[Scene], normalize: Normalizer, classes) -> tuple[float, float]:
    """(F1 over all classes, the threshold giving it): the best of ``THRESHOLDS`` on ``scenes``."""
    logits = scene_logits(model, scenes, normalize)
    results = {t: score_frames(logits, scenes, classes, t, model.stride).overall["f1"] for t in THRESHOLDS}
    threshold = max(results, key=results.get)
    return float(results[threshold]), threshold


def step_seconds(model: nn.Module, tiles: torch.Tensor, precision: str, repeats: int = 3) -> tuple[float, float]:
    """The fastest of ``repeats`` timings (after one to warm up) of ``model``'s training step on ``tiles`` in
    ``precision`` (forward and backward; the optimiser's update is small beside them) and of its forward pass
    without gradients. For a network made to be timed: its batch-norm statistics move, its gradients are dropped."""
    model.train()
    steps, forwards = [], []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with autocast(tiles.device, precision):  # the forward pass under autocast, the backward after, as in training
            total = model(tiles).float().sum()
        total.backward()
        steps.append(time.perf_counter() - started)
        with torch.no_grad(), autocast(tiles.device, precision):
            started = time.perf_counter()
            model(tiles)
            forwards.append(time.perf_counter() - started)
    model.zero_grad(set_to_none=True)
    return min(steps[1:]), min(forwards[1:])

"""``kd-edge detect``: YOLO-labelled frames to a teacher and a distilled student detector, in a run folder.

RUN_DIR/teacher.pt, student.pt   checkpoints (task "detect": the card holds the decoding rule)
RUN_DIR/split.json               the files and groups of each split
RUN_DIR/metrics.json             per network: validation F1 (which chose the weights and the threshold),
                                 test precision, recall and F1 per class, counting error; times
RUN_DIR/config.json              the settings

Every choice (weights, threshold) is made on validation; the test split is only reported.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from kd_edge.data.dataset import channel_stats
from kd_edge.data.ref import DataRef
from kd_edge.data.yolo import Scene, detection_splits, read_classes
from kd_edge.errors import ConfigError
from kd_edge.io import atomic_write_json
from kd_edge.log import step
from kd_edge.runtime.card import ModelCard
from kd_edge.runtime.detections import score_frames
from kd_edge.settings.data import FRAME_RESIZE
from kd_edge.settings.detection import DetectorNetwork, DetectSettings
from kd_edge.training.batches import Normalizer
from kd_edge.training.checkpoint import load_checkpoint, save_checkpoint
from kd_edge.training.detection_fit import (
    DetectorPlan,
    detector_precision,
    fit_detector,
    scene_logits,
    step_seconds,
)
from kd_edge.training.detectors import create_detector
from kd_edge.training.device import seeded, torch_threads
from kd_edge.training.fit import LaterStage
from kd_edge.training.models import ModelSpec, count_macs, count_parameters
from kd_edge.training.run_folder import STUDENT_FILE, TEACHER_FILE, RunFolder

SPLIT_FILE = "split.json"


def train_detectors(settings: DetectSettings, out, *, force: bool = False, resume: bool = False) -> dict:
    """Train the teacher on the labels, then the student from its heatmaps (alone at ``alpha`` 1). With ``resume``,
    a network an earlier run of the same settings in ``out`` finished is loaded, not trained again."""
    with torch_threads(settings.run.threads):
        started = time.perf_counter()
        root = Path(settings.root)
        classes = read_classes(root)
        stride = detector_stride(settings, len(classes))  # an unknown name fails now, not after the teacher
        rule = settings.split_rule()  # the card records it
        splits = detection_splits(root, settings.frame_size, settings.split, rule)
        config = {"stage": "detect", **asdict(settings)}
        run = RunFolder(out, config, [TEACHER_FILE, STUDENT_FILE], force=force, resume=resume)
        if run.finished("student"):
            step(f"detect: {run.dir} finished already (student.pt and its metrics): nothing to resume")
            return run.metrics
        record_split(run, splits, time.perf_counter() - started)
        pixels = np.concatenate([scene.image.reshape(-1, 3) for scene in splits["train"]])
        mean, std = channel_stats(pixels.T[None, :, :, None])  # as (1, 3, pixels, 1)
        card = ModelCard(
            classes=tuple(classes), input_shape=(3, settings.frame_size, settings.frame_size), mean=mean, std=std,
            data=DataRef(dataset=settings.dataset, image_size=settings.frame_size, split=tuple(settings.split)),
            task="detect", resize=FRAME_RESIZE,
            detection={"stride": stride, "threshold": 0.5, **rule},
        )  # fmt: skip
        teacher = None
        if settings.alpha < 1.0 and run.finished("teacher"):
            step(f"teacher: kept from the interrupted run ({run.dir / TEACHER_FILE})")
            teacher = load_checkpoint(run.dir / TEACHER_FILE).build_model()
        elif settings.alpha < 1.0:
            later = (student_after_teacher(settings, card),)
            teacher = train_one(run, "teacher", settings.teacher, settings, splits, card, None, later)
        train_one(run, "student", settings.student, settings, splits, card, teacher)
        return run.metrics


def detector_stride(settings: DetectSettings, classes: int) -> int:
    """The input pixels per output cell of the run's networks: the teacher's and the student's must be the same
    when the student learns from the teacher's heatmap, which is compared with its own cell by cell (and their
    features' too, under --feature-weight)."""
    student, teacher = (create_detector(n.model, classes) for n in (settings.student, settings.teacher))
    if settings.alpha < 1.0:
        remedy = "choose networks of the same cells (`kd-edge models`' cell px: fomo-base-s4 teaches 4 px students)"
        same_cells(settings, teacher.stride, student.stride, "cells", "distillation compares their heatmaps", remedy)
        if settings.feature_weight > 0:
            why, remedy = "--feature-weight compares their features", "drop --feature-weight"
            same_cells(settings, teacher.feature_stride, student.feature_stride, "feature cells", why, remedy)
    return student.stride


def same_cells(settings: DetectSettings, teacher: int, student: int, what: str, why: str, remedy: str) -> None:
    if teacher != student:
        raise ConfigError(
            f"the teacher {settings.teacher.model} has {teacher} px {what} and the student {settings.student.model} "
            f"{student} px: {why} cell by cell; {remedy}, or train the student alone (--alpha 1)"
        )


def record_split(run: RunFolder, splits: dict[str, list[Scene]], seconds: float) -> None:
    files = {name: [scene.file for scene in scenes] for name, scenes in splits.items()}
    groups = {name: sorted({scene.group for scene in scenes}) for name, scenes in splits.items()}
    atomic_write_json(run.dir / SPLIT_FILE, {"files": files, "groups": groups})
    sizes = {name: len(scenes) for name, scenes in splits.items()}
    objects = {name: int(sum(len(scene.labels) for scene in scenes)) for name, scenes in splits.items()}
    empty = {name: sum(not len(scene.labels) for scene in scenes) for name, scenes in splits.items()}
    kept = f", {empty} of them without objects" if any(empty.values()) else ""
    step(f"data: {sizes} images{kept}, {objects} objects, groups by split {groups}")
    record = {**sizes, "objects": objects, "without_objects": empty, "groups": groups, "files": SPLIT_FILE}
    run.record("data", record, seconds)


def student_after_teacher(settings: DetectSettings, card: ModelCard) -> LaterStage:
    """The student's training in the teacher's steps, which the teacher's pace line turns into time: as many steps,
    each differing from the teacher's by the networks' part, timed here on a batch of tiles (a distilled step runs
    the student's forward and backward passes and the teacher's forward pass). The rest of a step, tiles drawn and
    augmented, the loss, the update, is alike for both. Not from MACs: a detector student of a tenth of the
    teacher's MACs takes 0.8 of its step on a CPU (such small networks are bound by memory and overheads)."""
    with seeded(0):  # fresh networks must not move the caller's RNG
        teacher, student = (create_detector(n.model, len(card.classes)) for n in (settings.teacher, settings.student))
    tiles = torch.zeros(settings.optim.batch_size, 3, settings.tile, settings.tile)
    teacher_precision, student_precision = (detector_precision(settings, n) for n in (teacher, student))
    teacher_step, teacher_forward = step_seconds(teacher, tiles, teacher_precision)
    if student_precision != teacher_precision:  # the student's step runs the teacher's forward pass in its own
        _, teacher_forward = step_seconds(teacher, tiles, student_precision)
    student_step, _ = step_seconds(student, tiles, student_precision)
    steps = settings.student.steps
    extra = steps * (student_step + teacher_forward - teacher_step)
    return LaterStage("student", steps, extra_seconds=extra, basis="both networks' steps timed on a batch")


def train_one(run, stage: str, network: DetectorNetwork, settings: DetectSettings, splits, card, teacher, later=()):
    """Train one network (the student from ``teacher`` when there is one), score it, save its checkpoint.
    ``later``: the stages after this one, whose time its pace line estimates too."""
    classes = len(card.classes)
    with seeded(settings.run.seed):  # a student alone or distilled: the same initial weights
        model = create_detector(network.model, classes)
    macs, precision = count_macs(model, card.input_shape), detector_precision(settings, model)
    step(f"{stage}: plan: {network.model} ({macs / 1e6:,.0f} M MACs a {settings.frame_size} px frame), "
         f"{network.steps} steps of {settings.optim.batch_size} {settings.tile} px tiles, {settings.augment} "
         f"augmentation{', distilled from the teacher' if teacher is not None else ''}, {precision}")  # fmt: skip
    plan = DetectorPlan(
        model=model, train=splits["train"], val=splits["val"], classes=card.classes, steps=network.steps,
        settings=settings, mean=card.mean, std=card.std, stage=stage, later=later,
    )  # fmt: skip
    result = fit_detector(plan, teacher)
    logits = scene_logits(model, splits["test"], Normalizer(card.mean, card.std, "cpu"))
    test = score_frames(logits, splits["test"], card.classes, result.threshold, model.stride)
    info = {
        "model": network.model, "parameters": count_parameters(model), "macs": macs, "steps": network.steps,
        "precision": result.precision, "val_f1": result.best_val_f1, "threshold": result.threshold,
        "best_step": result.best_step, "test_f1": test.overall["f1"],  # a detector's test_accuracy
        "test": test.to_dict(), "history": result.history,
        "distilled": teacher is not None,
    }  # fmt: skip
    detection = {**card.detection, "threshold": result.threshold, "val_f1": result.best_val_f1,
                 "test_f1": test.overall["f1"]}  # fmt: skip
    own_card = replace(card, model=network.model, parameters=info["parameters"], macs=macs, detection=detection)
    spec = ModelSpec(network.model, classes, 3, card.input_shape[1], task="detect")
    save_checkpoint(run.dir / f"{stage}.pt", model, spec, own_card, info, run.config)
    run.record(stage, info, result.seconds)
    step(f"{stage}: test F1 {test.overall['f1']:.3f} (precision {test.overall['precision']:.3f}, recall "
         f"{test.overall['recall']:.3f}) at threshold {result.threshold} chosen on validation (F1 "
         f"{result.best_val_f1:.3f}); counting error {test.counting_error:.1f} objects an image")  # fmt: skip
    return model

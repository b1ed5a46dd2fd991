"""The teachers a student learns from: given or trained here, checked against the data and against chance,
their soft labels cached where the images do not change."""

from __future__ import annotations

import time

from torch import nn

from kd_edge.data import ImageDataset
from kd_edge.errors import CheckpointError, StudentTooWeakError, TeacherTooWeakError
from kd_edge.log import step
from kd_edge.settings.training import DistillSettings, teacher_mixing
from kd_edge.training.augment import changes_batches
from kd_edge.training.checkpoint import Checkpoint, file_sha256, load_checkpoint
from kd_edge.training.device import to_channels_last
from kd_edge.training.evaluate import accuracy, chance_threshold
from kd_edge.training.fit import LaterStage
from kd_edge.training.models import count_macs, count_parameters
from kd_edge.training.networks import RunContext, cross_entropy_teacher
from kd_edge.training.run_folder import TEACHER_FILE, RunFolder
from kd_edge.training.soft_labels import FrozenTeachers
from kd_edge.training.splits import DeviceDataset, InputView


def frozen_teachers(
    settings: DistillSettings,
    context: RunContext,
    view: InputView,
    checkpoints: list[Checkpoint],
    cache: dict | None = None,
    later: tuple[LaterStage, ...] = (),
) -> FrozenTeachers:
    """The teacher(s) of offline and multi-teacher distillation: trained here, or loaded and scored; checked
    against chance; their logits on the train split cached unless augmentation changes the images.

    ``cache`` (a dict the caller keeps) reuses loaded teachers' logits across calls on the same data;
    ``later`` is the student's training, whose time a teacher trained here estimates with its own.
    """
    started = time.perf_counter()
    run, splits = context.run, context.splits
    if checkpoints:
        loaded = [load_teacher(checkpoint, splits) for checkpoint in checkpoints]
        models, views, infos = (list(column) for column in zip(*loaded, strict=True))
    elif run.finished("teacher"):  # resuming: the teacher this run trained, as it recorded it
        models, views, infos = [finished_teacher(run, splits)], [view], [run.metrics["teacher"]]
    else:
        trained = cross_entropy_teacher(context, view, settings.teacher, settings.run.seed, later)
        models, views, infos = [trained.model], [view], [trained.info]
    for info in infos:
        check_teacher(info, splits.dataset, settings.kd.min_teacher_accuracy)
    weighting = teacher_mixing(settings.teacher_weights, len(models))
    teachers = FrozenTeachers(models, [v.normalize for v in views], weighting)
    if len(models) == 1:
        run.record("teacher", infos[0], time.perf_counter() - started)
    else:
        run.record(
            "teacher", ensemble_info(teachers, infos, settings.teacher_weights, splits), time.perf_counter() - started
        )
    if changes_batches(context.augment, context.optim.cutmix):  # the teachers see each batch: nothing to cache
        run.record("soft_labels", {"cached": False}, 0.0)
    else:
        started = time.perf_counter()
        reusable = cache is not None and bool(checkpoints)
        key = (  # hashed only when a cache is kept: a plain distill reads no teacher file twice
            (tuple(file_sha256(c.path) for c in checkpoints), run.metrics["data"]["sha256"], splits.precision)
            if reusable
            else None
        )
        if reusable and key in cache:
            teachers.cached = cache[key]
        else:
            teachers.cache(splits.train, splits.precision)
            if reusable:
                cache[key] = teachers.cached
        run.record("soft_labels", {"cached": True, "shape": list(teachers.cached.shape)}, time.perf_counter() - started)
    return teachers


def finished_teacher(run: RunFolder, splits: DeviceDataset) -> nn.Module:
    """The teacher an interrupted run finished before it stopped; refused if the file changed since."""
    path, recorded = run.dir / TEACHER_FILE, run.metrics["teacher"].get("sha256")
    if file_sha256(path) != recorded:
        raise CheckpointError(
            f"cannot resume {str(run.dir)!r}: {path} is not the teacher this run trained (its SHA-256 differs from "
            "the one in metrics.json). Start anew with --force."
        )
    step(f"{run.dir}: the teacher finished earlier; distilling from it")
    return to_channels_last(load_checkpoint(path).build_model().to(splits.device))


def ensemble_info(teachers: FrozenTeachers, members: list[dict], weighting: str, splits: DeviceDataset) -> dict:
    """metrics.json's "teacher" for several: the ensemble's accuracy where one teacher's would be, and each member."""
    return {
        "model": "ensemble of " + ", ".join(member["model"] for member in members),
        "weighting": weighting,
        "val_accuracy": teachers.accuracy(splits.val),
        "test_accuracy": teachers.accuracy(splits.test),
        "members": members,
    }


def check_teacher_fits(checkpoint: Checkpoint, dataset: ImageDataset) -> None:
    """Refuse a teacher trained for other classes, another input shape, or on another dataset."""
    card = checkpoint.card
    trained_on = card.data.dataset if card.data else None
    if list(card.classes) != list(dataset.classes):
        raise CheckpointError(
            f"teacher {str(checkpoint.path)!r} was trained on {trained_on!r} with classes {list(card.classes)}, "
            f"but {dataset.name!r} has classes {list(dataset.classes)}; train a teacher on this dataset (omit "
            "--teacher)"
        )
    if tuple(card.input_shape) != tuple(dataset.input_shape):
        raise CheckpointError(
            f"teacher {str(checkpoint.path)!r} expects input {list(card.input_shape)} but {dataset.name!r} gives "
            f"{list(dataset.input_shape)}; use --image-size to match, or train a teacher on this dataset"
        )
    if trained_on is not None and trained_on != dataset.name:
        raise CheckpointError(
            f"teacher {str(checkpoint.path)!r} was trained on {trained_on!r}, but this run uses {dataset.name!r}: even "
            "with the same classes, its soft labels describe other images. Train a teacher on this dataset (omit "
            "--teacher)."
        )


def load_teacher(checkpoint: Checkpoint, splits: DeviceDataset):
    """Load a frozen teacher (checked with ``check_teacher_fits``) and score it on this data."""
    dataset, card = splits.dataset, checkpoint.card
    check_teacher_fits(checkpoint, dataset)
    teacher = to_channels_last(checkpoint.build_model().to(splits.device))
    view = InputView(splits, card.mean, card.std)
    info = {
        "model": checkpoint.spec.name,
        "source": str(checkpoint.path),
        "sha256": file_sha256(checkpoint.path),
        "parameters": count_parameters(teacher),
        "macs": count_macs(teacher, dataset.input_shape),
        "val_accuracy": accuracy(teacher, splits.val, view.normalize),
        "test_accuracy": accuracy(teacher, splits.test, view.normalize),
    }
    return teacher, view, info


def check_student(info: dict, val_labels, run_dir) -> None:
    """Stop a run whose student is no better than chance on validation: exporting or deploying it would ship a
    guesser, and the run would otherwise end as a success."""
    chance, threshold = chance_threshold(val_labels)
    if info["val_accuracy"] > threshold:
        return
    why = fits_only_in_training(info, threshold, "more --epochs or --steps") or (
        "its training did not take off: try a lower --lr, more --epochs or another --student-model, and check "
        "that the images and labels match (`kd-edge datasets`)"
    )
    raise StudentTooWeakError(
        f"the student ({info['model']}) reaches {info['val_accuracy']:.1%} on the validation split, no better than "
        f"chance ({chance:.1%}; a guesser stays below {threshold:.1%}): {why}. Its checkpoint and metrics are kept in "
        f"{run_dir}."
    )


def fits_only_in_training(info: dict, threshold: float, more_steps: str) -> str | None:
    """Why a network at chance on validation got there, when its last epoch's training batches say it learnt:
    evaluation mode (BatchNorm's running statistics) is what fails, not the learning."""
    train = info["history"][-1]["train_accuracy"] if info.get("history") else 0.0
    if train <= threshold:
        return None
    return (
        f"it fits its training batches ({train:.1%} train accuracy in its last epoch) but not in evaluation mode: "
        f"its BatchNorm running statistics lag its weights (too few optimiser steps: {more_steps}, a smaller "
        "--batch-size) or it memorises the training split (--augment)"
    )


def check_teacher(info: dict, dataset: ImageDataset, min_accuracy: float) -> None:
    """Stop before a student learns from a teacher (``info``: its metrics) that is no better than chance, or below
    the user's bar."""
    source, val_accuracy = info.get("source", "trained"), info["val_accuracy"]
    name = "the teacher" if source == "trained" else f"the teacher {source!r}"
    chance, threshold = chance_threshold(dataset.val.labels)
    if val_accuracy <= threshold:
        why = fits_only_in_training(info, threshold, "more --teacher-epochs or --teacher-steps") or (
            "its training collapsed, as the reference recipe (Adam, lr 0.01) sometimes does: train it again with "
            "another --seed, a lower --lr or more --teacher-epochs"
        )
        raise TeacherTooWeakError(
            f"{name} reaches {val_accuracy:.1%} on the validation split, no better than chance ({chance:.1%}; a "
            f"guesser stays below {threshold:.1%}): {why}. Distilling from it would teach the student nothing."
        )
    if val_accuracy < min_accuracy:
        raise TeacherTooWeakError(
            f"{name} reaches {val_accuracy:.1%} on the validation split, below --min-teacher-accuracy "
            f"{min_accuracy:.1%}; train it longer (--teacher-epochs) or lower the bar."
        )

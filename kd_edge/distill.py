"""The teacher and distill stages: ``train_teacher(config)`` and ``distill(config)``.

Offline distillation, as in the reference workflow: train (or load) a teacher,
check that it is worth learning from, compute its soft labels once, then train
the student on ``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``.
Each returns the metrics it also writes to ``RUN_DIR/metrics.json``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from kd_edge import __version__
from kd_edge.checkpoint import Checkpoint, file_sha256, load_checkpoint, save_checkpoint
from kd_edge.config import DistillConfig, TeacherConfig, TrainConfig
from kd_edge.data import ImageDataset, load_dataset
from kd_edge.errors import CheckpointError, OutputError, TeacherTooWeakError
from kd_edge.io import atomic_write_json, ensure_writable_dir
from kd_edge.losses import distillation_loss
from kd_edge.models import ModelSpec, count_macs, count_parameters
from kd_edge.train import (
    DeviceSplit,
    Normalizer,
    accuracy,
    chance_threshold,
    cross_entropy_step,
    fit,
    normalization,
    predict_logits,
    resolve_device,
)

TEACHER_FILE = "teacher.pt"
STUDENT_FILE = "student.pt"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"


class Run:
    """A run folder: refuses to overwrite earlier results, records metrics after every stage."""

    def __init__(self, out: str, artifacts: list[str], force: bool, config: dict):
        self.dir = ensure_writable_dir(out)
        existing = [name for name in artifacts + [METRICS_FILE] if (self.dir / name).exists()]
        if existing and not force:
            raise OutputError(f"{str(self.dir)!r} already holds {', '.join(existing)} from an earlier run; choose another --out or pass --force to replace them")
        self.config = config
        self.started = time.perf_counter()
        self.metrics = {"kd_edge_version": __version__, "torch_version": str(torch.__version__), "python_version": platform.python_version(), "wall_time_s": {}}
        atomic_write_json(self.dir / CONFIG_FILE, config)

    def record(self, section: str, values: dict, seconds: float | None = None) -> None:
        self.metrics[section] = values
        if seconds is not None:
            self.metrics["wall_time_s"][section] = round(seconds, 3)
        self.metrics["wall_time_s"]["total"] = round(time.perf_counter() - self.started, 3)
        atomic_write_json(self.dir / METRICS_FILE, self.metrics)


class Stage:
    """What one network needs during training: data on the device and its own normalisation."""

    def __init__(self, dataset: ImageDataset, mean, std, device):
        self.dataset = dataset
        self.device = device
        self.mean, self.std = tuple(mean), tuple(std)
        self.normalize = Normalizer(mean, std, device)
        self.train, self.val, self.test = (DeviceSplit(getattr(dataset, name), device) for name in ("train", "val", "test"))

    def data_metadata(self) -> dict:
        return {**self.dataset.metadata(), "mean": list(self.mean), "std": list(self.std)}

    def spec(self, model_name: str) -> ModelSpec:
        channels, size, _ = self.dataset.input_shape
        return ModelSpec(model_name, self.dataset.num_classes, channels, size)


def setup(run_config, data_config):
    torch.manual_seed(run_config.seed)
    if run_config.threads:
        torch.set_num_threads(run_config.threads)
    device = resolve_device(run_config.device)
    started = time.perf_counter()
    dataset = load_dataset(data_config.dataset, data_config.data_dir, data_config.image_size)
    return device, dataset, time.perf_counter() - started


def train_network(stage: Stage, config: TrainConfig, step_fn, *, name: str, run: Run, seed: int, augment: bool, extra_metrics: dict, progress):
    """Build, fit, test and save ``RUN_DIR/<name>.pt``; returns (model, its metrics)."""
    spec = stage.spec(config.model)
    model = spec.build().to(stage.device)
    path = run.dir / f"{name}.pt"
    info = {"model": config.model, "parameters": count_parameters(model), "macs": count_macs(model, stage.dataset.input_shape)}

    def save_best(net, progress_info):
        save_checkpoint(path, net, spec, stage.data_metadata(), {**info, **progress_info, "complete": False}, run.config)
        return str(path)

    result = fit(model, stage.train, stage.val, stage.normalize, config, step_fn, stage=name, seed=seed, augment=augment, save_best=save_best, progress=progress)
    info.update(
        epochs=config.epochs,
        best_epoch=result.best_epoch,
        val_accuracy=result.best_val_accuracy,
        test_accuracy=accuracy(model, stage.test, stage.normalize),
        train_seconds=round(result.seconds, 3),
        images_per_second=round(sum(log.images_per_second for log in result.history) / len(result.history), 1),
        history=[{"epoch": log.epoch, "loss": log.loss, **log.terms, "train_accuracy": log.train_accuracy, "val_accuracy": log.val_accuracy} for log in result.history],
        **extra_metrics,
    )
    save_checkpoint(path, model, spec, stage.data_metadata(), {**info, "complete": True}, run.config)
    info["checkpoint"] = str(path)
    info["sha256"] = file_sha256(path)
    return model, info


def train_teacher(config: TeacherConfig, progress=None) -> dict:
    """Train a teacher with cross-entropy; writes teacher.pt, metrics.json and config.json."""
    run = Run(config.run.out, [TEACHER_FILE], config.run.force, config.to_dict())
    device, dataset, load_seconds = setup(config.run, config.data)
    run.record("data", {"dataset": dataset.name, "train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)}, load_seconds)
    stage = Stage(dataset, *normalization(dataset, config.data.normalization), device)
    started = time.perf_counter()
    _, info = train_network(
        stage, config.teacher, cross_entropy_step(stage.normalize), name="teacher", run=run,
        seed=config.run.seed, augment=config.data.augment, extra_metrics={"source": "trained"}, progress=progress,
    )
    run.record("teacher", info, time.perf_counter() - started)
    check_teacher(info["val_accuracy"], dataset, min_accuracy=0.0)
    return run.metrics


def distill(config: DistillConfig, progress=None) -> dict:
    """Distil a student from a frozen teacher; trains the teacher first unless ``config.teacher_path`` is set."""
    artifacts = [STUDENT_FILE] if config.teacher_path else [TEACHER_FILE, STUDENT_FILE]
    teacher_checkpoint = load_checkpoint(config.teacher_path) if config.teacher_path else None
    run = Run(config.run.out, artifacts, config.run.force, config.to_dict())
    device, dataset, load_seconds = setup(config.run, config.data)
    run.record("data", {"dataset": dataset.name, "train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)}, load_seconds)

    started = time.perf_counter()
    if teacher_checkpoint is not None:
        teacher, teacher_stage, info = load_teacher(teacher_checkpoint, dataset, device)
    else:
        teacher_stage = Stage(dataset, *normalization(dataset, config.data.normalization), device)
        teacher, info = train_network(
            teacher_stage, config.teacher, cross_entropy_step(teacher_stage.normalize), name="teacher", run=run,
            seed=config.run.seed, augment=config.data.augment, extra_metrics={"source": "trained"}, progress=progress,
        )
    run.record("teacher", info, time.perf_counter() - started)
    check_teacher(info["val_accuracy"], dataset, config.kd.min_teacher_accuracy)

    teacher.eval()
    teacher.requires_grad_(False)
    student_stage = Stage(dataset, *normalization(dataset, config.data.normalization), device)
    started = time.perf_counter()
    # With augmentation every epoch sees new images, so the teacher must see them too.
    soft_labels = None if config.data.augment else predict_logits(teacher, teacher_stage.train, teacher_stage.normalize)
    run.record("soft_labels", {"cached": soft_labels is not None}, time.perf_counter() - started)

    def kd_step(model, index, images, labels):
        if soft_labels is not None:
            teacher_logits = soft_labels[index]
        else:
            with torch.no_grad():
                teacher_logits = teacher(teacher_stage.normalize(images))
        logits = model(student_stage.normalize(images))
        terms = distillation_loss(logits, teacher_logits, labels, config.kd.temperature, config.kd.alpha, config.kd.kd_loss)
        return {**terms, "logits": logits}

    started = time.perf_counter()
    kd_info = {"temperature": config.kd.temperature, "alpha": config.kd.alpha, "kd_loss": config.kd.kd_loss, "teacher_sha256": info.get("sha256")}
    _, student_info = train_network(
        student_stage, config.student, kd_step, name="student", run=run,
        seed=config.run.seed + 1, augment=config.data.augment, extra_metrics={"distillation": kd_info}, progress=progress,
    )
    run.record("student", student_info, time.perf_counter() - started)
    return run.metrics


def load_teacher(checkpoint: Checkpoint, dataset: ImageDataset, device):
    """Load a frozen teacher, refusing one trained for other classes or another input shape."""
    data = checkpoint.data
    if list(data.get("classes", [])) != list(dataset.classes):
        raise CheckpointError(
            f"teacher {str(checkpoint.path)!r} was trained on {data.get('dataset')!r} with classes {data.get('classes')}, "
            f"but {dataset.name!r} has classes {list(dataset.classes)}; train a teacher on this dataset (omit --teacher)"
        )
    if list(data.get("input_shape", [])) != list(dataset.input_shape):
        raise CheckpointError(
            f"teacher {str(checkpoint.path)!r} expects input {data.get('input_shape')} but {dataset.name!r} gives "
            f"{list(dataset.input_shape)}; use --image-size to match, or train a teacher on this dataset"
        )
    teacher = checkpoint.build_model().to(device)
    stage = Stage(dataset, data["mean"], data["std"], device)
    info = {
        "model": checkpoint.spec.name,
        "source": str(checkpoint.path),
        "sha256": file_sha256(checkpoint.path),
        "parameters": count_parameters(teacher),
        "macs": count_macs(teacher, dataset.input_shape),
        "val_accuracy": accuracy(teacher, stage.val, stage.normalize),
        "test_accuracy": accuracy(teacher, stage.test, stage.normalize),
    }
    return teacher, stage, info


def check_teacher(val_accuracy: float, dataset: ImageDataset, min_accuracy: float) -> None:
    """Stop before a student learns from a teacher that is no better than chance, or below the user's bar."""
    chance, threshold = chance_threshold(dataset.val.labels)
    if val_accuracy <= threshold:
        raise TeacherTooWeakError(
            f"the teacher reaches {val_accuracy:.1%} on the validation split, no better than chance "
            f"({chance:.1%}; a guesser stays below {threshold:.1%}). Its training collapsed, as the reference "
            "recipe (Adam, lr 0.01) sometimes does: distilling from it would teach the student nothing. "
            "Train it again with another --seed, a lower --lr or more --teacher-epochs."
        )
    if val_accuracy < min_accuracy:
        raise TeacherTooWeakError(
            f"the teacher reaches {val_accuracy:.1%} on the validation split, below --min-teacher-accuracy "
            f"{min_accuracy:.1%}; train it longer (--teacher-epochs) or lower the bar."
        )

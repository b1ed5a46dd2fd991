"""The teacher and distill stages: ``train_teacher(config)`` and ``distill(config)``.

Offline distillation, as in the reference workflow: train (or load) a teacher,
check that it is worth learning from, compute its soft labels once, then train
the student on ``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``.
Each returns the metrics it also writes to ``RUN_DIR/metrics.json``.
"""

from __future__ import annotations

import platform
import time

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
    keep_freed_memory,
    normalization,
    predict_logits,
    resolve_device,
    resolve_precision,
    to_channels_last,
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


class DeviceData:
    """The dataset's three splits on the device, shared by teacher and student."""

    def __init__(self, dataset: ImageDataset, device, precision: str):
        self.dataset = dataset
        self.device = device
        self.precision = precision
        self.train, self.val, self.test = (DeviceSplit(getattr(dataset, name), device) for name in ("train", "val", "test"))

    def spec(self, model_name: str) -> ModelSpec:
        channels, size, _ = self.dataset.input_shape
        return ModelSpec(model_name, self.dataset.num_classes, channels, size)


class InputView:
    """How one network sees the data: its normalisation, recorded in its checkpoint."""

    def __init__(self, data: DeviceData, mean, std):
        self.mean, self.std = tuple(mean), tuple(std)
        self.normalize = Normalizer(mean, std, data.device)
        self.metadata = {**data.dataset.metadata(), "mean": list(self.mean), "std": list(self.std)}


def setup(run_config, data_config) -> tuple[DeviceData, float]:
    torch.manual_seed(run_config.seed)
    if run_config.threads:
        torch.set_num_threads(run_config.threads)
    device = resolve_device(run_config.device)
    keep_freed_memory()
    started = time.perf_counter()
    dataset = load_dataset(data_config.dataset, data_config.data_dir, data_config.image_size)
    return DeviceData(dataset, device, resolve_precision(run_config.precision, device)), time.perf_counter() - started


def record_data(run: "Run", data: DeviceData, seconds: float) -> None:
    sizes = {name: len(getattr(data, name)) for name in ("train", "val", "test")}
    run.record("data", {"dataset": data.dataset.name, **sizes, "input_shape": list(data.dataset.input_shape), "device": str(data.device), "precision": data.precision}, seconds)


def train_network(data: DeviceData, view: InputView, config: TrainConfig, step_fn, *, name: str, run: Run, seed: int, augment: bool, extra_metrics: dict, progress):
    """Build, fit, test and save ``RUN_DIR/<name>.pt``; returns (model, its metrics)."""
    spec = data.spec(config.model)
    model = to_channels_last(spec.build().to(data.device))
    path = run.dir / f"{name}.pt"
    info = {"model": config.model, "parameters": count_parameters(model), "macs": count_macs(model, data.dataset.input_shape)}

    def save_best(net, progress_info):
        save_checkpoint(path, net, spec, view.metadata, {**info, **progress_info, "complete": False}, run.config)
        return str(path)

    result = fit(
        model, data.train, data.val, view.normalize, config, step_fn,
        stage=name, seed=seed, augment=augment, precision=data.precision, save_best=save_best, progress=progress,
    )
    info.update(
        epochs=config.epochs,
        best_epoch=result.best_epoch,
        val_accuracy=result.best_val_accuracy,
        test_accuracy=accuracy(model, data.test, view.normalize),
        train_seconds=round(result.seconds, 3),
        images_per_second=round(sum(log.images_per_second for log in result.history) / len(result.history), 1),
        history=[{"epoch": log.epoch, "loss": log.loss, **log.terms, "train_accuracy": log.train_accuracy, "val_accuracy": log.val_accuracy} for log in result.history],
        **extra_metrics,
    )
    save_checkpoint(path, model, spec, view.metadata, {**info, "complete": True}, run.config)
    info["checkpoint"] = str(path)
    info["sha256"] = file_sha256(path)
    return model, info


def fit_teacher(data: DeviceData, view: InputView, config: TrainConfig, run: Run, run_config, augment: bool, progress):
    return train_network(
        data, view, config, cross_entropy_step(view.normalize), name="teacher", run=run,
        seed=run_config.seed, augment=augment, extra_metrics={"source": "trained"}, progress=progress,
    )


def train_teacher(config: TeacherConfig, progress=None) -> dict:
    """Train a teacher with cross-entropy; writes teacher.pt, metrics.json and config.json."""
    data, load_seconds = setup(config.run, config.data)  # bad data fails before the run folder is touched
    run = Run(config.run.out, [TEACHER_FILE], config.run.force, config.to_dict())
    record_data(run, data, load_seconds)
    view = InputView(data, *normalization(data.dataset, config.data.normalization))
    started = time.perf_counter()
    _, info = fit_teacher(data, view, config.teacher, run, config.run, config.data.augment, progress)
    run.record("teacher", info, time.perf_counter() - started)
    check_teacher(info["val_accuracy"], data.dataset, min_accuracy=0.0)
    return run.metrics


def distill(config: DistillConfig, progress=None) -> dict:
    """Distil a student from a frozen teacher; trains the teacher first unless ``config.teacher_path`` is set.

    With ``alpha = 1`` the student learns from the labels alone and no teacher is used.
    """
    needs_teacher = config.kd.alpha < 1.0
    trains_teacher = needs_teacher and config.teacher_path is None
    teacher_checkpoint = load_checkpoint(config.teacher_path) if needs_teacher and config.teacher_path else None
    data, load_seconds = setup(config.run, config.data)
    run = Run(config.run.out, [TEACHER_FILE, STUDENT_FILE] if trains_teacher else [STUDENT_FILE], config.run.force, config.to_dict())
    record_data(run, data, load_seconds)
    student_view = InputView(data, *normalization(data.dataset, config.data.normalization))

    teacher_logits = None
    if needs_teacher:
        started = time.perf_counter()
        if teacher_checkpoint is not None:
            teacher, teacher_view, info = load_teacher(teacher_checkpoint, data)
        else:
            teacher_view = student_view
            teacher, info = fit_teacher(data, teacher_view, config.teacher, run, config.run, config.data.augment, progress)
        run.record("teacher", info, time.perf_counter() - started)
        check_teacher(info["val_accuracy"], data.dataset, config.kd.min_teacher_accuracy)
        teacher_logits = soft_label_source(teacher, teacher_view, data, config.data.augment, run)

    def kd_step(model, index, images, labels):
        logits = model(student_view.normalize(images))
        target = teacher_logits(index, images) if teacher_logits else None
        terms = distillation_loss(logits, target, labels, config.kd.temperature, config.kd.alpha, config.kd.kd_loss)
        return {**terms, "logits": logits}

    started = time.perf_counter()
    kd_info = {"temperature": config.kd.temperature, "alpha": config.kd.alpha, "kd_loss": config.kd.kd_loss, "teacher_sha256": run.metrics.get("teacher", {}).get("sha256")}
    _, student_info = train_network(
        data, student_view, config.student, kd_step, name="student", run=run,
        seed=config.run.seed + 1, augment=config.data.augment, extra_metrics={"distillation": kd_info}, progress=progress,
    )
    run.record("student", student_info, time.perf_counter() - started)
    return run.metrics


def soft_label_source(teacher, view: InputView, data: DeviceData, augment: bool, run: Run):
    """A function (indices, uint8 images) -> teacher logits for the frozen teacher.

    Without augmentation a training image is the same every epoch, so the teacher's
    logits are computed once for the whole train split and looked up by index.
    """
    teacher.eval()
    teacher.requires_grad_(False)
    started = time.perf_counter()
    if augment:
        run.record("soft_labels", {"cached": False}, 0.0)

        @torch.no_grad()
        def live(index, images):
            return teacher(view.normalize(images)).float()

        return live
    cached = predict_logits(teacher, data.train, view.normalize, data.precision)
    run.record("soft_labels", {"cached": True, "shape": list(cached.shape)}, time.perf_counter() - started)
    return lambda index, images: cached[index]


def load_teacher(checkpoint: Checkpoint, data: DeviceData):
    """Load a frozen teacher, refusing one trained for other classes or another input shape."""
    dataset, meta = data.dataset, checkpoint.data
    if list(meta.get("classes", [])) != list(dataset.classes):
        raise CheckpointError(
            f"teacher {str(checkpoint.path)!r} was trained on {meta.get('dataset')!r} with classes {meta.get('classes')}, "
            f"but {dataset.name!r} has classes {list(dataset.classes)}; train a teacher on this dataset (omit --teacher)"
        )
    if list(meta.get("input_shape", [])) != list(dataset.input_shape):
        raise CheckpointError(
            f"teacher {str(checkpoint.path)!r} expects input {meta.get('input_shape')} but {dataset.name!r} gives "
            f"{list(dataset.input_shape)}; use --image-size to match, or train a teacher on this dataset"
        )
    teacher = to_channels_last(checkpoint.build_model().to(data.device))
    view = InputView(data, meta["mean"], meta["std"])
    info = {
        "model": checkpoint.spec.name,
        "source": str(checkpoint.path),
        "sha256": file_sha256(checkpoint.path),
        "parameters": count_parameters(teacher),
        "macs": count_macs(teacher, dataset.input_shape),
        "val_accuracy": accuracy(teacher, data.val, view.normalize),
        "test_accuracy": accuracy(teacher, data.test, view.normalize),
    }
    return teacher, view, info


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

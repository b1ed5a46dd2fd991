"""The teacher and distill stages: ``train_teacher(config)`` and ``distill(config)``.

Offline distillation, as in the reference workflow: train (or load) a teacher,
check that it is worth learning from, compute its soft labels once, then train
the student on ``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``.
Each returns the metrics it also writes to ``RUN_DIR/metrics.json``.
"""

from __future__ import annotations

import platform
import time
from dataclasses import replace

import torch

from kd_edge import __version__
from kd_edge.checkpoint import Checkpoint, file_sha256, load_checkpoint, save_checkpoint
from kd_edge.config import DataConfig, DistillConfig, RunConfig, TeacherConfig, TrainConfig
from kd_edge.data import ImageDataset, load_dataset
from kd_edge.errors import CheckpointError, OutputError, TeacherTooWeakError
from kd_edge.io import atomic_write_json, ensure_writable_dir
from kd_edge.losses import distillation_loss
from kd_edge.models import ModelSpec, count_macs, count_parameters
from kd_edge.runtime.card import DataRef, ModelCard
from kd_edge.train import (
    DeviceSplit,
    Normalizer,
    accuracy,
    build_seeded,
    chance_threshold,
    cross_entropy_step,
    fit,
    normalization,
    predict_logits,
    resolve_device,
    resolve_precision,
    to_channels_last,
    torch_threads,
)

TEACHER_FILE = "teacher.pt"
STUDENT_FILE = "student.pt"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"


class RunFolder:
    """A run folder: refuses to overwrite earlier results, records metrics after every stage."""

    def __init__(self, out: str, artifacts: list[str], force: bool, config: dict):
        self.dir = ensure_writable_dir(out)
        existing = [name for name in [*artifacts, METRICS_FILE] if (self.dir / name).exists()]
        if existing and not force:
            reuse = ""
            if TEACHER_FILE in existing and not (self.dir / STUDENT_FILE).exists():
                teacher = self.dir / TEACHER_FILE
                reuse = f" It holds a trained teacher: to distil from it, pass --teacher {teacher} and another --out."
            raise OutputError(
                f"{str(self.dir)!r} already holds {', '.join(existing)} from an earlier run; choose another --out "
                f"or pass --force to replace them.{reuse}"
            )
        self.config = config
        self.started = time.perf_counter()
        self.metrics = {
            "kd_edge_version": __version__,
            "torch_version": str(torch.__version__),
            "python_version": platform.python_version(),
            "wall_time_s": {},
        }
        atomic_write_json(self.dir / CONFIG_FILE, config)

    def record(self, section: str, values: dict, seconds: float | None = None) -> None:
        self.metrics[section] = values
        if seconds is not None:
            self.metrics["wall_time_s"][section] = round(seconds, 3)
        self.metrics["wall_time_s"]["total"] = round(time.perf_counter() - self.started, 3)
        atomic_write_json(self.dir / METRICS_FILE, self.metrics)


class DeviceDataset:
    """The dataset's three splits on the training device, shared by teacher and student."""

    def __init__(self, dataset: ImageDataset, ref: DataRef, device, precision: str):
        self.dataset = dataset
        self.ref = ref
        self.device = device
        self.precision = precision
        self.train, self.val, self.test = (
            DeviceSplit(getattr(dataset, name), device) for name in ("train", "val", "test")
        )

    def spec(self, model_name: str) -> ModelSpec:
        channels, size, _ = self.dataset.input_shape
        return ModelSpec(model_name, self.dataset.num_classes, channels, size)


class InputView:
    """How one network sees the data: its normalisation, and the model card its checkpoint carries."""

    def __init__(self, splits: DeviceDataset, mean, std):
        self.normalize = Normalizer(mean, std, splits.device)
        dataset = splits.dataset
        self.card = ModelCard(
            classes=dataset.classes, input_shape=dataset.input_shape, mean=mean, std=std, data=splits.ref
        )


def load_splits(run_config: RunConfig, data_config: DataConfig) -> tuple[DeviceDataset, float]:
    started = time.perf_counter()
    ref = DataRef(dataset=data_config.dataset, data_dir=data_config.data_dir, image_size=data_config.image_size)
    dataset = load_dataset(ref.dataset, ref.data_dir, ref.image_size)
    device = resolve_device(run_config.device)
    splits = DeviceDataset(dataset, ref, device, resolve_precision(run_config.precision, device))
    return splits, time.perf_counter() - started


def record_data(run: RunFolder, splits: DeviceDataset, seconds: float) -> None:
    sizes = {name: len(getattr(splits, name)) for name in ("train", "val", "test")}
    info = {
        "dataset": splits.dataset.name,
        **sizes,
        "input_shape": list(splits.dataset.input_shape),
        "device": str(splits.device),
        "precision": splits.precision,
        "sha256": splits.dataset.sha256(),
    }
    run.record("data", info, seconds)


def train_and_save(
    splits: DeviceDataset,
    view: InputView,
    config: TrainConfig,
    step_fn,
    *,
    name: str,
    run: RunFolder,
    seed: int,
    augment: bool,
    extra_metrics: dict,
    progress,
):
    """Build (weights from ``seed``), fit, test and save ``RUN_DIR/<name>.pt``; returns (model, its metrics)."""
    spec = splits.spec(config.model)
    model = to_channels_last(build_seeded(spec, seed).to(splits.device))
    path = run.dir / f"{name}.pt"
    info = {
        "model": config.model,
        "parameters": count_parameters(model),
        "macs": count_macs(model, splits.dataset.input_shape),
    }
    card = replace(view.card, model=config.model, parameters=info["parameters"], macs=info["macs"])

    def save_best(net, progress_info):
        save_checkpoint(path, net, spec, card, {**info, **progress_info, "complete": False}, run.config)
        return str(path)

    result = fit(
        model,
        splits.train,
        splits.val,
        view.normalize,
        config,
        step_fn,
        stage=name,
        seed=seed,
        augment=augment,
        precision=splits.precision,
        save_best=save_best,
        progress=progress,
    )
    info.update(
        epochs=config.epochs,
        best_epoch=result.best_epoch,
        val_accuracy=result.best_val_accuracy,
        test_accuracy=accuracy(model, splits.test, view.normalize),
        train_seconds=round(result.seconds, 3),
        images_per_second=round(sum(log.images_per_second for log in result.history) / len(result.history), 1),
        history=[
            {
                "epoch": log.epoch,
                "loss": log.loss,
                **log.terms,
                "train_accuracy": log.train_accuracy,
                "val_accuracy": log.val_accuracy,
            }
            for log in result.history
        ],
        **extra_metrics,
    )
    save_checkpoint(
        path, model, spec, replace(card, test_accuracy=info["test_accuracy"]), {**info, "complete": True}, run.config
    )
    info["checkpoint"] = str(path)
    info["sha256"] = file_sha256(path)
    return model, info


def cross_entropy_teacher(
    splits: DeviceDataset, view: InputView, config: TrainConfig, run: RunFolder, seed: int, augment: bool, progress
):
    return train_and_save(
        splits,
        view,
        config,
        cross_entropy_step(view.normalize),
        name="teacher",
        run=run,
        seed=seed,
        augment=augment,
        extra_metrics={"source": "trained"},
        progress=progress,
    )


def train_teacher(config: TeacherConfig, progress=None) -> dict:
    """Train a teacher with cross-entropy; writes teacher.pt, metrics.json and config.json."""
    with torch_threads(config.run.threads):
        splits, load_seconds = load_splits(config.run, config.data)  # bad data fails before the run folder is touched
        check_models_build(splits, [config.teacher.model])
        run = RunFolder(config.run.out, [TEACHER_FILE], config.run.force, config.to_dict())
        record_data(run, splits, load_seconds)
        view = InputView(splits, *normalization(splits.dataset, config.data.normalization))
        started = time.perf_counter()
        _, info = cross_entropy_teacher(
            splits, view, config.teacher, run, config.run.seed, config.data.augment, progress
        )
        run.record("teacher", info, time.perf_counter() - started)
        check_teacher(info["val_accuracy"], splits.dataset, min_accuracy=0.0)
        return run.metrics


def distill(config: DistillConfig, progress=None) -> dict:
    """Distil a student from a frozen teacher; trains the teacher first unless ``config.teacher_path`` is set.

    With ``alpha = 1`` the student learns from the labels alone and no teacher is used.
    The student's weights and data order depend on ``seed + 1`` only, so that runs
    which differ in their loss alone start from the same point.
    """
    with torch_threads(config.run.threads):
        return distill_in_process(config, progress)


def distill_in_process(config: DistillConfig, progress) -> dict:
    needs_teacher = config.kd.alpha < 1.0
    trains_teacher = needs_teacher and config.teacher_path is None
    teacher_checkpoint = load_checkpoint(config.teacher_path) if needs_teacher and config.teacher_path else None
    splits, load_seconds = load_splits(config.run, config.data)
    # Everything that can be refused is refused here, before the run folder is touched or any epoch runs.
    check_models_build(splits, [config.student.model, *([config.teacher.model] if trains_teacher else [])])
    if teacher_checkpoint is not None:
        check_teacher_fits(teacher_checkpoint, splits.dataset)
    run = RunFolder(
        config.run.out,
        [TEACHER_FILE, STUDENT_FILE] if trains_teacher else [STUDENT_FILE],
        config.run.force,
        config.to_dict(),
    )
    record_data(run, splits, load_seconds)
    student_view = InputView(splits, *normalization(splits.dataset, config.data.normalization))

    teacher_logits = None
    if needs_teacher:
        started = time.perf_counter()
        if teacher_checkpoint is not None:
            teacher, teacher_view, info = load_teacher(teacher_checkpoint, splits)
        else:
            teacher_view = student_view
            teacher, info = cross_entropy_teacher(
                splits, teacher_view, config.teacher, run, config.run.seed, config.data.augment, progress
            )
        run.record("teacher", info, time.perf_counter() - started)
        check_teacher(info["val_accuracy"], splits.dataset, config.kd.min_teacher_accuracy)
        teacher_logits = soft_label_source(teacher, teacher_view, splits, config.data.augment, run)

    def kd_step(model, index, images, labels):
        logits = model(student_view.normalize(images))
        target = teacher_logits(index, images) if teacher_logits else None
        terms = distillation_loss(logits, target, labels, config.kd.temperature, config.kd.alpha, config.kd.kd_loss)
        return {**terms, "logits": logits}

    started = time.perf_counter()
    kd_info = {
        "temperature": config.kd.temperature,
        "alpha": config.kd.alpha,
        "kd_loss": config.kd.kd_loss,
        "teacher_sha256": run.metrics.get("teacher", {}).get("sha256"),
    }
    _, student_info = train_and_save(
        splits,
        student_view,
        config.student,
        kd_step,
        name="student",
        run=run,
        seed=config.run.seed + 1,
        augment=config.data.augment,
        extra_metrics={"distillation": kd_info},
        progress=progress,
    )
    run.record("student", student_info, time.perf_counter() - started)
    return run.metrics


def soft_label_source(teacher, view: InputView, splits: DeviceDataset, augment: bool, run: RunFolder):
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
    cached = predict_logits(teacher, splits.train, view.normalize, splits.precision)
    run.record("soft_labels", {"cached": True, "shape": list(cached.shape)}, time.perf_counter() - started)
    return lambda index, images: cached[index]


def check_models_build(splits: DeviceDataset, names: list[str]) -> None:
    """Unknown names and arguments that do not fit the data (an image size a model cannot take) fail now."""
    for name in names:
        build_seeded(splits.spec(name), seed=0)  # seeded: a check must not move the caller's RNG


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

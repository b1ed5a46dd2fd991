"""The teacher and distill stages: ``train_teacher(config)`` and ``distill(config)``.

The student learns ``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``
in one of the reference workflow's three modes:

* offline: train (or load) a teacher, check that it is worth learning from, compute its
  soft labels once, train the student;
* multi: the same from several loaded teachers, their softened outputs mixed;
* online: teacher and student trained together, each learning from the other.

Soft labels and the KD step come from ``kd_edge.training.soft_labels``, shared with QAT. Each
stage returns the metrics it also writes to ``RUN_DIR/metrics.json``.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from kd_edge import __version__
from kd_edge.training.checkpoint import (
    Checkpoint,
    TrainingStateFile,
    file_sha256,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    transfer_matching,
)
from kd_edge.config import DataConfig, DistillConfig, RunConfig, TeacherConfig, TrainConfig
from kd_edge.data import ImageDataset, load_dataset
from kd_edge.training.distributed import barrier, describe, is_main, world
from kd_edge.errors import CheckpointError, ConfigError, OutputError, TeacherTooWeakError
from kd_edge.io import atomic_write_json, ensure_writable_dir
from kd_edge.log import step
from kd_edge.training.models import ModelSpec, count_macs, count_parameters
from kd_edge.runtime.card import DataRef, ModelCard
from kd_edge.training.soft_labels import FrozenTeachers, KDWeights, MutualPair, kd_step, mutual_step
from kd_edge.training.fit import (
    DeviceSplit,
    Normalizer,
    accuracy,
    build_seeded,
    chance_threshold,
    cross_entropy_step,
    fit,
    normalization,
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
    """A run folder: refuses to overwrite earlier results, records metrics after every stage.

    With ``resume`` it continues an earlier run of the same configuration instead: its
    metrics are kept, and a different configuration is refused, naming what differs.
    """

    def __init__(self, settings: RunConfig, artifacts: list[str], config: dict):
        self.dir = ensure_writable_dir(settings.out) if is_main() else Path(settings.out)
        self.config = config
        self.deterministic = settings.deterministic
        self.started = time.perf_counter()
        earlier = self.dir / CONFIG_FILE
        self.resuming = settings.resume and earlier.is_file()
        barrier()  # every rank has looked before rank 0 writes anything
        if self.resuming:
            check_same_config(json.loads(earlier.read_text()), config, self.dir)
            self.metrics = (
                json.loads((self.dir / METRICS_FILE).read_text()) if (self.dir / METRICS_FILE).is_file() else {}
            )
            self.metrics.setdefault("wall_time_s", {})
            self.metrics["resumed"] = self.metrics.get("resumed", 0) + 1
            return
        existing = [name for name in [*artifacts, METRICS_FILE] if (self.dir / name).exists()]
        if existing and not settings.force and is_main():  # rank 0 decides; torchrun stops the others
            reuse = ""
            if TEACHER_FILE in existing and not (self.dir / STUDENT_FILE).exists():
                teacher = self.dir / TEACHER_FILE
                reuse = (
                    f" It holds a teacher: to distil from it, pass --teacher {teacher} and another --out, or --resume "
                    "to continue this run."
                )
            raise OutputError(
                f"{str(self.dir)!r} already holds {', '.join(existing)} from an earlier run; choose another --out, "
                f"pass --resume to continue it, or --force to replace it.{reuse}"
            )
        for stale in [*self.dir.glob("*.state.pt"), *self.dir.glob("*.state.prev.pt")] if is_main() else []:
            stale.unlink()  # a fresh run must never resume from an older run's state
        self.metrics = {
            "kd_edge_version": __version__,
            "torch_version": str(torch.__version__),
            "python_version": platform.python_version(),
            "wall_time_s": {},
        }
        if is_main():  # under torchrun only rank 0 writes
            atomic_write_json(self.dir / CONFIG_FILE, config)

    def finished(self, stage: str) -> bool:
        """Did an earlier run in this folder complete ``stage`` (its metrics recorded, its checkpoint there)?"""
        return self.resuming and stage in self.metrics and (self.dir / f"{stage}.pt").is_file()

    def record(self, section: str, values: dict, seconds: float | None = None) -> None:
        self.metrics[section] = values
        if seconds is not None:
            self.metrics["wall_time_s"][section] = round(seconds, 3)
        self.metrics["wall_time_s"]["total"] = round(time.perf_counter() - self.started, 3)
        if is_main():
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

    def images_per_process(self) -> int:
        """Training images each process takes an epoch (all of them, outside torchrun): what a step budget
        counts in, so that N processes plan as many optimiser steps as one."""
        return len(self.train) // world()[1]

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
    before = run.metrics.get("data", {}).get("sha256")
    if run.resuming and before not in (None, info["sha256"]):
        raise ConfigError(
            f"cannot resume {str(run.dir)!r}: its data has changed since the run started (SHA-256 {before[:12]}... "
            f"then, {info['sha256'][:12]}... now). Resume with the same data, or start anew with --force."
        )
    run.record("data", info, seconds)


@dataclass
class Network:
    """A network in training and what its checkpoint, ``RUN_DIR/<name>.pt``, records."""

    name: str
    spec: ModelSpec
    model: nn.Module
    card: ModelCard
    info: dict


def new_network(
    splits: DeviceDataset, view: InputView, config: TrainConfig, name: str, seed: int, init: dict | None = None
) -> Network:
    """Build ``config.model`` with weights from ``seed`` alone, then copy in ``init``'s matching tensors."""
    spec = splits.spec(config.model)
    model = build_seeded(spec, seed)
    info = {
        "model": config.model,
        "parameters": count_parameters(model),
        "macs": count_macs(model, splits.dataset.input_shape),
    }
    if init is not None:
        info["init"] = transfer_matching(model, init["weights"], init["source"])
    card = replace(view.card, model=config.model, parameters=info["parameters"], macs=info["macs"])
    return Network(name, spec, to_channels_last(model.to(splits.device)), card, info)


def save_network(run: RunFolder, network: Network, extra: dict) -> Path:
    path = run.dir / f"{network.name}.pt"
    if is_main():
        save_checkpoint(path, network.model, network.spec, network.card, {**network.info, **extra}, run.config)
    return path


def train_and_save(
    splits: DeviceDataset,
    normalize: Normalizer,
    config: TrainConfig,
    step_fn,
    networks: list[Network],
    *,
    run: RunFolder,
    seed: int,
    augment: bool,
    extra_metrics: dict,
    progress,
    model: nn.Module | None = None,
    before_epoch=None,
    fingerprint: dict | None = None,
) -> list[dict]:
    """Fit, test and save every network (``model``, default the only network, is what ``fit`` trains and
    selects on: the student); returns each network's metrics.

    The training state goes to ``RUN_DIR/<last network>.state.pt`` as it trains; a resumed run
    continues from it (``fingerprint`` must match), and it is removed once the stage is done.
    """
    model = model or networks[0].model
    state_file = TrainingStateFile(run.dir, networks[-1].name, fingerprint)
    resume_from = state_file.load() if run.resuming else None
    if resume_from is not None:
        step(f"{networks[-1].name}: resuming at epoch {resume_from['epoch']}, step {resume_from['steps_done']}")

    def save_best(_, progress_info):
        paths = [save_network(run, network, {**progress_info, "complete": False}) for network in networks]
        return str(paths[-1])

    result = fit(
        model,
        splits.train,
        splits.val,
        normalize,
        config,
        step_fn,
        stage=networks[-1].name if len(networks) == 1 else "+".join(n.name for n in networks),
        seed=seed,
        augment=augment,
        precision=splits.precision,
        save_best=save_best,
        progress=progress,
        networks=[network.model for network in networks],
        before_epoch=before_epoch,
        state_file=state_file,
        resume_from=resume_from,
        deterministic=run.deterministic,
    )
    history = [
        {
            "epoch": log.epoch,
            **log.values,
            "loss": log.loss,
            **log.terms,
            "train_accuracy": log.train_accuracy,
            "val_accuracy": log.val_accuracy,
        }
        for log in result.history
    ]
    for network in networks:
        network.info.update(
            epochs=config.epochs,
            best_epoch=result.best_epoch,
            val_accuracy=accuracy(network.model, splits.val, normalize),
            test_accuracy=accuracy(network.model, splits.test, normalize),
            train_seconds=round(result.seconds, 3),
            images_per_second=round(sum(log.images_per_second for log in result.history) / len(result.history), 1),
            distributed=describe(config.batch_size, config.lr, config.lr_scaling, result.images_per_rank),
            history=history,
            **extra_metrics,
        )
        network.card = replace(network.card, test_accuracy=network.info["test_accuracy"])
        path = save_network(run, network, {"complete": True})
        network.info.update(checkpoint=str(path), sha256=file_sha256(path) if is_main() else None)
    if is_main():
        state_file.remove()
    return [network.info for network in networks]


def cross_entropy_teacher(
    splits: DeviceDataset, view: InputView, config: TrainConfig, run: RunFolder, seed: int, augment: bool, progress
) -> Network:
    teacher = new_network(splits, view, config, "teacher", seed)
    teacher.info["source"] = "trained"
    train_and_save(
        splits,
        view.normalize,
        config,
        cross_entropy_step(view.normalize),
        [teacher],
        run=run,
        seed=seed,
        augment=augment,
        extra_metrics={},
        progress=progress,
    )
    return teacher


def train_teacher(config: TeacherConfig, progress=None) -> dict:
    """Train a teacher with cross-entropy; writes teacher.pt, metrics.json and config.json."""
    with torch_threads(config.run.threads):
        splits, load_seconds = load_splits(config.run, config.data)  # bad data fails before the run folder is touched
        config = replace(config, teacher=config.teacher.planned(splits.images_per_process()))
        check_models_build(splits, [config.teacher.model])
        run = RunFolder(config.run, [TEACHER_FILE], config.to_dict())
        record_data(run, splits, load_seconds)
        if run.finished("teacher"):
            step(f"{run.dir}: the teacher finished earlier; nothing to resume")
            return run.metrics
        view = InputView(splits, *normalization(splits.dataset, config.data.normalization))
        started = time.perf_counter()
        teacher = cross_entropy_teacher(
            splits, view, config.teacher, run, config.run.seed, config.data.augment, progress
        )
        run.record("teacher", teacher.info, time.perf_counter() - started)
        check_teacher(teacher.info["val_accuracy"], splits.dataset, min_accuracy=0.0)
        return run.metrics


def distill(config: DistillConfig, progress=None, soft_label_cache: dict | None = None) -> dict:
    """Distil a student (``config.mode``: offline, online or multi-teacher); writes student.pt, metrics.json and
    config.json, and teacher.pt when a teacher is trained.

    With ``alpha = 1`` (and no alpha schedule) the student learns from the labels alone and no
    teacher is used. The student's weights and data order depend on ``seed + 1`` only, so that
    runs which differ in their loss alone start from the same point.

    ``soft_label_cache`` (a dict the caller keeps) reuses frozen teachers' cached logits across
    calls on the same data, as ``kd-edge search`` does for its candidates.
    """
    with torch_threads(config.run.threads):
        return distill_in_process(config, progress, soft_label_cache)


def distill_in_process(config: DistillConfig, progress, soft_label_cache: dict | None = None) -> dict:
    checkpoints = [load_checkpoint(path) for path in config.teacher_paths] if config.needs_teacher else []
    init = {"weights": load_weights(config.init), "source": config.init} if config.init != "scratch" else None
    splits, load_seconds = load_splits(config.run, config.data)
    config = replace(
        config,
        teacher=config.teacher.planned(splits.images_per_process()),
        student=config.student.planned(splits.images_per_process()),
    )
    # Everything that can be refused is refused here, before the run folder is touched or any epoch runs.
    trains_teacher = config.trains_teacher or config.mode == "online"
    check_models_build(splits, [config.student.model, *([config.teacher.model] if trains_teacher else [])])
    for checkpoint in checkpoints:
        check_teacher_fits(checkpoint, splits.dataset)
    if init is not None:
        check_init_fits(init, splits.spec(config.student.model))
    run = RunFolder(config.run, [TEACHER_FILE, STUDENT_FILE] if trains_teacher else [STUDENT_FILE], config.to_dict())
    record_data(run, splits, load_seconds)
    if run.finished("student"):
        step(f"{run.dir}: the student finished earlier; nothing to resume")
        return run.metrics
    view = InputView(splits, *normalization(splits.dataset, config.data.normalization))
    weights = KDWeights(config.kd)
    student = new_network(splits, view, config.student, "student", config.run.seed + 1, init)
    kd_info = {
        "mode": config.mode,
        "temperature": config.kd.temperature,
        "alpha": config.kd.alpha,
        "temperature_schedule": config.kd.temperature_schedule,
        "alpha_schedule": config.kd.alpha_schedule,
        "kd_loss": config.kd.kd_loss,
    }
    if config.mode == "online":
        return distill_online(config, splits, view, student, weights, kd_info, run, progress)

    teachers = (
        frozen_teachers(config, splits, view, checkpoints, run, progress, soft_label_cache)
        if config.needs_teacher
        else None
    )
    started = time.perf_counter()
    shas = [file_sha256(checkpoint.path) for checkpoint in checkpoints]
    kd_info["teacher_sha256"] = (shas[0] if len(shas) == 1 else shas) or run.metrics.get("teacher", {}).get("sha256")
    (student_info,) = train_and_save(
        splits,
        view.normalize,
        config.student,
        kd_step(view.normalize, teachers, weights),
        [student],
        run=run,
        seed=config.run.seed + 1,
        augment=config.data.augment,
        extra_metrics={"distillation": kd_info},
        progress=progress,
        before_epoch=weights.begin_epoch if config.kd.scheduled else None,
        fingerprint={"teacher_sha256": kd_info["teacher_sha256"]},
    )
    run.record("student", student_info, time.perf_counter() - started)
    return run.metrics


def distill_online(config, splits, view, student, weights, kd_info, run, progress) -> dict:
    """Teacher and student learn together, each from the other (``mutual_step``), each with its own
    optimiser; the student's best validation epoch decides the checkpoint of both."""
    started = time.perf_counter()
    teacher = new_network(splits, view, config.teacher, "teacher", config.run.seed)
    teacher.info["source"] = "trained online, with the student"
    teacher_info, student_info = train_and_save(
        splits,
        view.normalize,
        config.student,
        mutual_step(view.normalize, weights),
        [teacher, student],
        model=MutualPair(teacher.model, student.model),
        run=run,
        seed=config.run.seed + 1,
        augment=config.data.augment,
        extra_metrics={"distillation": kd_info},
        progress=progress,
        before_epoch=weights.begin_epoch if config.kd.scheduled else None,
    )
    seconds = time.perf_counter() - started
    run.record("teacher", teacher_info, seconds)
    run.record("student", student_info, seconds)
    return run.metrics


def frozen_teachers(
    config: DistillConfig,
    splits: DeviceDataset,
    view: InputView,
    checkpoints: list[Checkpoint],
    run,
    progress,
    cache: dict | None = None,
) -> FrozenTeachers:
    """The teacher(s) of offline and multi-teacher distillation: trained here, or loaded and scored; checked
    against chance; their logits on the train split cached unless augmentation changes the images."""
    started = time.perf_counter()
    if checkpoints:
        loaded = [load_teacher(checkpoint, splits) for checkpoint in checkpoints]
        models, views, infos = (list(column) for column in zip(*loaded, strict=True))
    elif run.finished("teacher"):  # resuming: the teacher this run trained, as it recorded it
        models, views, infos = [finished_teacher(run, splits)], [view], [run.metrics["teacher"]]
    else:
        trained = cross_entropy_teacher(
            splits, view, config.teacher, run, config.run.seed, config.data.augment, progress
        )
        models, views, infos = [trained.model], [view], [trained.info]
    for info in infos:
        check_teacher(info["val_accuracy"], splits.dataset, config.kd.min_teacher_accuracy, info["source"])
    teachers = FrozenTeachers(models, [v.normalize for v in views], config.mixing_weights())
    if len(models) == 1:
        run.record("teacher", infos[0], time.perf_counter() - started)
    else:
        run.record(
            "teacher", ensemble_info(teachers, infos, config.teacher_weights, splits), time.perf_counter() - started
        )
    if config.data.augment:
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


def check_init_fits(init: dict, spec: ModelSpec) -> None:
    """Refuse an --init file of which no tensor fits the student (a typo'd path to the wrong model)."""
    report = transfer_matching(build_seeded(spec, seed=0), init["weights"], init["source"])
    if not report["loaded"]:
        raise CheckpointError(
            f"--init {init['source']!r}: none of its {len(init['weights'])} tensors matches a parameter of "
            f"{spec.name!r} by name and shape (the student has {', '.join(report['not_in_source'][:4])}, ...); "
            "give weights of the same or a related architecture, or --init scratch"
        )


# Settings that may change between a run and its resumption: where and how fast it runs, not what it computes.
RESUMABLE_CHANGES = {("run", "resume"), ("run", "force"), ("run", "threads"), ("run", "device")}


def check_same_config(earlier: dict, now: dict, run_dir: Path) -> None:
    """Refuse to resume a run with other settings: the result would match neither configuration."""
    differences = [
        f"{section}.{key}: {earlier.get(section, {}).get(key)!r} then, {value!r} now"
        for section, values in now.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if (section, key) not in RESUMABLE_CHANGES and earlier.get(section, {}).get(key) != jsonable(value)
    ]
    differences += [
        f"{key}: {earlier.get(key)!r} then, {value!r} now"
        for key, value in now.items()
        if not isinstance(value, dict) and earlier.get(key) != jsonable(value)
    ]
    if differences:
        raise ConfigError(
            f"cannot resume {str(run_dir)!r} with other settings ({'; '.join(differences)}). Resume with the "
            "settings it started with, or start anew with --force or another --out."
        )


def jsonable(value):
    return json.loads(json.dumps(value))


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


def check_teacher(val_accuracy: float, dataset: ImageDataset, min_accuracy: float, source: str = "trained") -> None:
    """Stop before a student learns from a teacher that is no better than chance, or below the user's bar."""
    name = "the teacher" if source == "trained" else f"the teacher {source!r}"
    chance, threshold = chance_threshold(dataset.val.labels)
    if val_accuracy <= threshold:
        raise TeacherTooWeakError(
            f"{name} reaches {val_accuracy:.1%} on the validation split, no better than chance "
            f"({chance:.1%}; a guesser stays below {threshold:.1%}). Its training collapsed, as the reference "
            "recipe (Adam, lr 0.01) sometimes does: distilling from it would teach the student nothing. "
            "Train it again with another --seed, a lower --lr or more --teacher-epochs."
        )
    if val_accuracy < min_accuracy:
        raise TeacherTooWeakError(
            f"{name} reaches {val_accuracy:.1%} on the validation split, below --min-teacher-accuracy "
            f"{min_accuracy:.1%}; train it longer (--teacher-epochs) or lower the bar."
        )

"""The teacher and distill stages: ``train_teacher(settings, out)`` and ``distill(settings, out)``.

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

import time
from dataclasses import asdict, replace

from kd_edge.log import step
from kd_edge.settings.data import chosen_by_size
from kd_edge.settings.training import DistillSettings, NetworkSettings, TeacherSettings
from kd_edge.training.augment import changes_batches
from kd_edge.training.batches import normalization
from kd_edge.training.checkpoint import file_sha256, load_checkpoint, load_weights
from kd_edge.training.device import build_seeded, torch_threads
from kd_edge.training.fit import LaterStage, distilled_student
from kd_edge.training.models import count_macs
from kd_edge.training.networks import (
    Network,
    RunContext,
    check_init_fits,
    check_models_build,
    cross_entropy_teacher,
    new_network,
    train_and_save,
)
from kd_edge.training.run_folder import STUDENT_FILE, TEACHER_FILE, RunFolder
from kd_edge.training.soft_labels import KDWeights, MutualPair, kd_step, mutual_step
from kd_edge.training.splits import InputView, load_splits, record_data
from kd_edge.training.teachers import check_student, check_teacher, check_teacher_fits, frozen_teachers


def train_teacher(
    settings: TeacherSettings,
    out,
    *,
    force: bool = False,
    resume: bool = False,
    progress=None,
    then: DistillSettings | None = None,
) -> dict:
    """Train a teacher with cross-entropy; writes OUT/teacher.pt, metrics.json and config.json. ``then``: the
    distillation that follows (the pipeline's student stage), whose time the teacher's pace line estimates."""
    with torch_threads(settings.run.threads):
        splits, load_seconds = load_splits(settings.run, settings.data)  # bad data fails before OUT is touched
        settings = for_images(settings, splits)
        check_models_build(splits, [settings.teacher.model])
        # The settings as given (a step budget, not the epochs it makes on this many processes) are what a
        # resume must match: a run started on 1 process continues on 2, its epochs planned for 2.
        run = RunFolder(out, {"stage": "teacher", **asdict(settings)}, [TEACHER_FILE], force=force, resume=resume)
        settings = replace(settings, teacher=planned(settings.teacher, splits, settings.optim.batch_size))
        record_data(run, splits, load_seconds)
        if run.finished("teacher"):
            step(f"{run.dir}: the teacher finished earlier; nothing to resume")
            return run.metrics
        view = InputView(splits, *normalization(splits.dataset, settings.data.normalization))
        context = run_context(settings, splits, run, progress)
        started = time.perf_counter()
        later = (student_after_teacher(for_images(then, splits), splits),) if then and then.needs_teacher else ()
        teacher = cross_entropy_teacher(context, view, settings.teacher, settings.run.seed, later)
        run.record("teacher", teacher.info, time.perf_counter() - started)
        check_teacher(teacher.info, splits.dataset, min_accuracy=0.0)
        return run.metrics


def distill(
    settings: DistillSettings,
    out,
    *,
    teachers: tuple[str, ...] = (),
    force: bool = False,
    resume: bool = False,
    progress=None,
    soft_label_cache: dict | None = None,
    stop_at_chance: bool = True,
) -> dict:
    """Distil a student (``settings.mode``: offline, online or multi-teacher) from ``teachers`` (teacher.pt
    files; offline without one trains a teacher first); writes OUT/student.pt, metrics.json and config.json,
    and teacher.pt when a teacher is trained.

    With ``alpha = 1`` (and no alpha schedule) the student learns from the labels alone and no
    teacher is used. The student's weights and data order depend on ``seed + 1`` only, so that
    runs which differ in their loss alone start from the same point.

    ``soft_label_cache`` (a dict the caller keeps) reuses frozen teachers' cached logits across
    calls on the same data, as ``kd-edge search`` does for its candidates. A student no better than chance
    on validation is an error (``StudentTooWeakError``, after its files are written) unless
    ``stop_at_chance`` is off, as for a search's short rungs and a sweep's cells, where it is a result.
    """
    settings.check_teachers(len(teachers))
    with torch_threads(settings.run.threads):
        metrics, val_labels = distill_in_process(settings, out, tuple(str(t) for t in teachers), force, resume,
                                                 progress, soft_label_cache)  # fmt: skip
    if stop_at_chance:
        check_student(metrics["student"], val_labels, out)
    return metrics


def distill_in_process(settings: DistillSettings, out, teachers, force, resume, progress, soft_label_cache):
    """The run; returns its metrics and the validation labels (what chance is measured against)."""
    checkpoints = [load_checkpoint(path) for path in teachers] if settings.needs_teacher else []
    init = {"weights": load_weights(settings.init), "source": settings.init} if settings.init != "scratch" else None
    splits, load_seconds = load_splits(settings.run, settings.data)
    settings = for_images(settings, splits)
    # Everything that can be refused is refused here, before the run folder is touched or any epoch runs.
    trains_teacher = settings.mode == "online" or (settings.needs_teacher and not teachers)
    check_models_build(splits, [settings.student.model, *([settings.teacher.model] if trains_teacher else [])])
    for checkpoint in checkpoints:
        check_teacher_fits(checkpoint, splits.dataset)
    if init is not None:
        check_init_fits(init, splits.spec(settings.student.model))
    # As for the teacher, the step budget as given; and the teachers by content, so that a replaced file is
    # another run.
    shas = [file_sha256(checkpoint.path) for checkpoint in checkpoints]
    config = {"stage": "distill", **asdict(settings), "teacher_paths": list(teachers), "teacher_sha256": shas}
    artifacts = [TEACHER_FILE, STUDENT_FILE] if trains_teacher else [STUDENT_FILE]
    run = RunFolder(out, config, artifacts, force=force, resume=resume)
    batch = settings.optim.batch_size
    settings = replace(
        settings, teacher=planned(settings.teacher, splits, batch), student=planned(settings.student, splits, batch)
    )
    record_data(run, splits, load_seconds)
    if run.finished("student"):
        step(f"{run.dir}: the student finished earlier; nothing to resume")
        return run.metrics, splits.dataset.val.labels
    view = InputView(splits, *normalization(splits.dataset, settings.data.normalization))
    context = run_context(settings, splits, run, progress)
    weights = KDWeights(settings.kd)
    student = new_network(splits, view, settings.student.model, "student", settings.run.seed + 1, init)
    kd_info = {"mode": settings.mode, **{name: getattr(settings.kd, name) for name in KD_RECORDED}}
    if settings.mode == "online":
        return distill_online(settings, context, view, student, weights, kd_info), splits.dataset.val.labels

    frozen = None
    if settings.needs_teacher:
        later = () if checkpoints else (student_after_teacher(settings, splits),)  # when a teacher trains here
        frozen = frozen_teachers(settings, context, view, checkpoints, soft_label_cache, later)
    started = time.perf_counter()
    kd_info["teacher_sha256"] = (shas[0] if len(shas) == 1 else shas) or run.metrics.get("teacher", {}).get("sha256")
    (student_info,) = train_and_save(
        context,
        [student],
        epochs=settings.student.epochs,
        step_fn=kd_step(view.normalize, frozen, weights),
        normalize=view.normalize,
        seed=settings.run.seed + 1,
        before_epoch=weights.begin_epoch if settings.kd.scheduled else None,
        extra_metrics={"distillation": kd_info},
        fingerprint={"teacher_sha256": kd_info["teacher_sha256"]},
    )
    run.record("student", student_info, time.perf_counter() - started)
    return run.metrics, splits.dataset.val.labels


KD_RECORDED = ("temperature", "alpha", "temperature_schedule", "alpha_schedule", "kd_loss")


def distill_online(
    settings: DistillSettings, context: RunContext, view: InputView, student: Network, weights: KDWeights, kd_info: dict
) -> dict:
    """Teacher and student learn together, each from the other (``mutual_step``), each with its own
    optimiser; the student's best validation epoch decides the checkpoint of both."""
    started = time.perf_counter()
    teacher = new_network(context.splits, view, settings.teacher.model, "teacher", settings.run.seed)
    teacher.info["source"] = "trained online, with the student"
    teacher_info, student_info = train_and_save(
        context,
        [teacher, student],
        epochs=settings.student.epochs,
        step_fn=mutual_step(view.normalize, weights),
        normalize=view.normalize,
        seed=settings.run.seed + 1,
        trained=MutualPair(teacher.model, student.model),
        before_epoch=weights.begin_epoch if settings.kd.scheduled else None,
        extra_metrics={"distillation": kd_info},
    )
    seconds = time.perf_counter() - started
    context.run.record("teacher", teacher_info, seconds)
    context.run.record("student", student_info, seconds)
    return context.run.metrics


def for_images(settings: TeacherSettings | DistillSettings, splits):
    """``settings`` with each A|B choice (models, budgets, augmentation, batch, alpha and temperature) made for the
    run's images (``chosen_by_size``): what the run folder's config.json records."""
    side = min(splits.dataset.input_shape[1:])
    chosen = {"data": chosen_by_size(settings.data, side, augment=str)}
    chosen["teacher"] = settings.teacher.for_images(side)
    chosen["optim"] = settings.optim.for_images(side)
    if isinstance(settings, DistillSettings):
        chosen["student"] = settings.student.for_images(side)
        chosen["kd"] = settings.kd.for_images(side)
    return replace(settings, **chosen)


def student_after_teacher(settings: DistillSettings, splits) -> LaterStage:
    """The student's training counted in the teacher's optimiser steps (``distilled_student``): how the
    teacher's pace line estimates the student's time before it starts. The teacher sees every augmented (or
    mixed) batch; without either its soft labels are one pass over the train split.
    Measured: 13 % long on RSSCN7's default student, 24 % short on Fashion-MNIST's smaller networks, which do
    fewer MACs a second than their teacher (benchmarks/results/aerial.md)."""

    def macs(name: str) -> int:
        return count_macs(build_seeded(splits.spec(name), seed=0), splits.dataset.input_shape)

    steps_per_epoch = max(splits.images_per_process() // settings.optim.batch_size, 1)
    steps = planned(settings.student, splits, settings.optim.batch_size).epochs * steps_per_epoch
    teacher_passes = steps if changes_batches(settings.data.augment, settings.optim.cutmix) else steps_per_epoch
    return distilled_student(macs(settings.teacher.model), macs(settings.student.model), steps, teacher_passes)


def planned(network: NetworkSettings, splits, batch_size: int) -> NetworkSettings:
    """``network`` with its epochs planned for the images each of this run's processes takes."""
    return network.planned(splits.images_per_process(), batch_size)


def run_context(settings: TeacherSettings | DistillSettings, splits, run: RunFolder, progress) -> RunContext:
    return RunContext(
        splits=splits,
        run=run,
        optim=settings.optim,
        augment=settings.data.augment,
        deterministic=settings.run.deterministic,
        progress=progress,
    )

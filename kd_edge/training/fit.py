"""The fit loop: train one network (or two, for online distillation) and keep its best epoch on validation.

    result = fit(FitPlan(model=net, train=splits.train, val=splits.val, normalize=normalize, epochs=10,
                         optim=OptimSettings(), step_fn=cross_entropy_step(normalize), stage="teacher", seed=0))

``FitPlan`` says what is trained, on what, and how; ``FitHooks`` what the caller is told and
keeps (checkpoints, progress, the saved state a resumed run continues from).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kd_edge import log
from kd_edge.errors import TrainingDivergedError
from kd_edge.settings.training import OptimSettings
from kd_edge.training import distributed
from kd_edge.training.augment import augment, cutmix
from kd_edge.training.batches import DeviceSplit, Normalizer
from kd_edge.training.device import autocast, seeded
from kd_edge.training.evaluate import accuracy
from kd_edge.training.fit_state import FitState
from kd_edge.training.optimizers import Optimizer, Schedule
from kd_edge.training.progress import EpochLog, SilentProgress

# A step function maps (model, indices, uint8 images, labels) to named loss terms;
# "loss" is what is minimised, "logits" the model's output, the rest is logged.
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], dict]


@dataclass(kw_only=True)
class FitPlan:
    """What one fit trains (``model``; ``networks``, default ``[model]``, each get an optimiser and a
    learning-rate schedule of their own, as online distillation's two do), on what, and how."""

    model: nn.Module
    train: DeviceSplit
    val: DeviceSplit
    normalize: Normalizer
    epochs: int
    optim: OptimSettings
    step_fn: StepFn
    stage: str
    seed: int
    augment: str = "none"  # a policy of kd_edge.training.augment
    precision: str = "fp32"
    deterministic: bool = False  # torch refuses nondeterministic kernels
    networks: list[nn.Module] = field(default_factory=list)
    summary: str = ""  # what is trained, for the plan line: "cnn-base (4.2 M MACs an image)"
    classes: int = 0  # the number of classes: the width of CutMix's targets (optim.cutmix)

    def __post_init__(self):
        self.networks = self.networks or [self.model]
        self.optim = self.optim.for_images(min(self.train.images.shape[-2:]))  # a batch size of A|B chosen here
        if self.optim.cutmix and self.classes < 2:
            raise ValueError("CutMix (optim.cutmix) needs the plan's number of classes")


@dataclass(frozen=True)
class LaterStage:
    """A stage that trains after this one, in the same command or pipeline. Its time is estimated before it
    starts from this stage's measured pace: ``step_equivalents`` says how many of this stage's optimiser steps
    its work comes to (``distilled_student`` counts a student's in MACs), and ``extra_seconds`` what it takes
    beyond them (negative: less); ``basis`` says where those come from."""

    stage: str
    step_equivalents: float
    extra_seconds: float = 0.0
    basis: str = "the networks' MACs"

    def seconds(self, seconds_per_step: float) -> float:
        return max(seconds_per_step * self.step_equivalents + self.extra_seconds, 0.0)


def distilled_student(teacher_macs: int, student_macs: int, steps: int, teacher_passes: int) -> LaterStage:
    """A student's ``steps`` of distillation counted in its teacher's training steps, by MACs: a training step
    costs about 3 forward passes (the backward pass two), and the teacher's forward pass comes on top for
    ``teacher_passes`` batches (every step's, or once over the train split for cached soft labels)."""
    work = 3 * student_macs * steps + teacher_macs * teacher_passes
    return LaterStage("student", work / (3 * teacher_macs))


@dataclass(kw_only=True)
class FitHooks:
    """What the caller hears and keeps.

    ``save_best(model, info)`` writes a checkpoint after every epoch that improves validation
    accuracy, so a crash or divergence keeps the last good one; ``before_epoch(epoch, epochs,
    validation accuracies so far)`` sets what changes per epoch (a temperature schedule) and
    returns the values in force; with ``state_file`` (a ``TrainingStateFile``) the whole state is
    saved at every epoch's end, every ``STATE_INTERVAL_S`` and when a signal asks training to stop,
    and ``resume_from`` (a state it saved) continues from there exactly.
    """

    save_best: Callable[[nn.Module, dict], str] | None = None
    progress: object = field(default_factory=SilentProgress)
    before_epoch: Callable[[int, int, list[float]], dict] | None = None
    state_file: object = None
    resume_from: dict | None = None
    later: tuple[LaterStage, ...] = ()  # stages that train after this one, in the same command or pipeline


@dataclass
class FitResult:
    best_val_accuracy: float
    best_epoch: int
    history: list[EpochLog]
    seconds: float
    images_per_rank: list[int]  # training images each process saw (one entry without torchrun)


def check_finite(terms: dict, stage: str, epoch: int, step: int, last_saved: str | None) -> None:
    bad = [name for name, value in terms.items() if name != "logits" and not math.isfinite(value.item())]
    if not bad:
        return
    values = ", ".join(f"{name}={terms[name].item():.4g}" for name in terms if name != "logits")
    kept = (
        f"The last good checkpoint is kept at {last_saved}."
        if last_saved
        else "No checkpoint had been saved yet, so nothing was overwritten."
    )
    raise TrainingDivergedError(
        f"{stage} training diverged at epoch {epoch}, step {step}: the {' and '.join(bad)} term became "
        f"non-finite ({values}). {kept} Lower --lr, use --optimizer adamw, or lower --temperature, then run again."
    )


def fit(plan: FitPlan, hooks: FitHooks | None = None) -> FitResult:
    """Train ``plan.model`` for ``plan.epochs`` and leave it holding its best-on-validation weights.

    Data order, augmentation and dropout draw from ``plan.seed`` alone.
    """
    hooks = hooks or FitHooks()
    with seeded(plan.seed, plan.train.images.device), deterministic_algorithms(plan.deterministic):
        state = FitState(plan, hooks.state_file)
        if hooks.resume_from is not None:
            state.restore(hooks.resume_from)
        trained = distributed.wrap(plan.model)  # under torchrun, DistributedDataParallel averages the gradients
        left = (plan.epochs - state.epoch + 1) * state.steps_per_epoch - state.steps_done
        say_plan(plan, state.steps_per_epoch)
        progress = PaceEstimate(hooks.progress, plan.stage, left, later=hooks.later)
        progress.start(plan.stage, plan.epochs, state.steps_per_epoch)
        for epoch in range(state.epoch, plan.epochs + 1):
            state.epoch = epoch
            values = hooks.before_epoch(epoch, plan.epochs, state.val_history()) if hooks.before_epoch else {}
            step = OptimizerStep(trained, state.optimizers, state.schedulers, plan, epoch, state.last_saved)
            means, train_accuracy, seen, seconds = train_epoch(step, plan, progress, state)
            distributed.share_main_buffers(plan.model)  # every rank evaluates, and keeps, rank 0's model
            val_accuracy = accuracy(plan.model, plan.val, plan.normalize)
            epoch_log = EpochLog(
                plan.stage, epoch, plan.epochs, means.pop("loss"), train_accuracy, val_accuracy, seen / seconds,
                seconds, means, values,
            )  # fmt: skip
            state.history.append(epoch_log)
            if val_accuracy > state.best_val_accuracy:
                state.best_val_accuracy, state.best_epoch = val_accuracy, epoch
                state.best_state = copy.deepcopy(plan.model.state_dict())
                if hooks.save_best is not None:
                    state.last_saved = hooks.save_best(plan.model, {"epoch": epoch, "val_accuracy": val_accuracy})
            state.epoch_finished()
            progress.epoch_done(epoch_log)
    plan.model.load_state_dict(state.best_state)
    images = distributed.per_rank(sum(round(e.images_per_second * e.seconds) for e in state.history))
    return FitResult(state.best_val_accuracy, state.best_epoch, state.history, state.elapsed(), images)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool):
    """Within the block, torch refuses kernels whose results can differ between runs (when enabled).

    Torch's switch imports torch._inductor, so it is touched only when it changes."""
    before = torch.are_deterministic_algorithms_enabled()
    if not enabled or before:
        yield
        return
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


@dataclass
class OptimizerStep:
    """One optimiser step of one epoch: forward through ``step_fn``, check, backward, update."""

    model: nn.Module
    optimizers: list[Optimizer]
    schedulers: list[Schedule | None]
    plan: FitPlan
    epoch: int
    last_saved: str | None

    def __call__(self, number: int, index, images, labels) -> dict:
        with autocast(images.device, self.plan.precision):
            terms = self.plan.step_fn(self.model, index, images, labels)
        check_finite(terms, self.plan.stage, self.epoch, number, self.last_saved)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        for optimizer, scheduler in zip(self.optimizers, self.schedulers, strict=True):
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        return terms


def say_plan(plan: FitPlan, steps_per_epoch: int) -> None:
    _, channels, height, width = plan.train.images.shape
    what = f"{plan.summary} " if plan.summary else ""
    augmentation = "no augmentation" if plan.augment == "none" else f"{plan.augment} augmentation"
    if plan.augment == "aerial" and plan.train.sources is not None:
        augmentation += f" cropped from the photos at {plan.train.sources.shape[-1]} px"
    log.step(
        f"{plan.stage}: plan: {what}on {width}x{height}x{channels} images, {plan.epochs} epoch(s) of "
        f"{steps_per_epoch} steps (batch {plan.optim.batch_size}, {augmentation}, {plan.precision})"
    )


# Steps timed (after the first two, which pay for warm-up) before the stage's time is estimated; a stage
# estimated under half a minute is not worth a line.
PACE_STEPS = 10
SAY_PACE_SECONDS = 30
LONG_PLAN_SECONDS = 30 * 60


class PaceEstimate:
    """A progress that passes everything on and, once ``PACE_STEPS`` steps are timed, says how long the
    stage's remaining ``steps`` will take at that pace (evaluation comes on top), and the ``later`` stages of
    the same training after it, with a warning and what to change when all of it is over half an hour. The
    live bar's remaining time follows the pace from then on."""

    def __init__(self, progress, stage: str, steps: int, advice: str = "", later: tuple[LaterStage, ...] = ()):
        self.progress, self.stage, self.steps, self.later = progress, stage, steps, later
        self.advice = advice or (
            "a smaller --image-size, fewer epochs (--epochs / --steps, or the teacher's and student's own), or a "
            "smaller model (`kd-edge models`); Ctrl-C stops it and --resume continues it"
        )
        self.count, self.started = 0, None

    def __getattr__(self, name):
        return getattr(self.progress, name)

    def step(self, loss: float, images_per_second: float) -> None:
        self.progress.step(loss, images_per_second)
        self.count += 1
        if self.count == 2:
            self.started = time.perf_counter()
        elif self.count == 2 + PACE_STEPS:
            self.tell((time.perf_counter() - self.started) / PACE_STEPS)

    def tell(self, seconds_per_step: float) -> None:
        seconds = seconds_per_step * (self.steps - self.count)
        later = {stage.stage: stage.seconds(seconds_per_step) for stage in self.later}
        total = seconds + sum(later.values())
        if total < SAY_PACE_SECONDS:
            return
        log.step(
            f"{self.stage}: about {duration(seconds)} more on this machine ({1e3 * seconds_per_step:,.0f} ms a "
            f"step over {PACE_STEPS} steps; each epoch's evaluation comes on top)"
        )
        if later:
            after = ", ".join(f"the {name} about {duration(value)}" for name, value in later.items())
            log.step(
                f"{self.stage}: then {after} (estimated from this pace and {self.later[0].basis}; its own estimate "
                f"follows when it starts): training in all about {duration(total)}"
            )
        if total > LONG_PLAN_SECONDS:
            what = self.stage if not later else f"training ({self.stage} and {', '.join(later)})"
            log.step(f"warning: {what} will take over half an hour. To shorten it: {self.advice}")


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def train_epoch(step: OptimizerStep, plan: FitPlan, progress, loop: FitState) -> tuple[dict, float, int, float]:
    """One pass over the shuffled train split, from where ``loop`` stands in it.

    Returns (mean of each loss term, train accuracy, images seen, seconds), counting the part
    of the epoch done before a resume.
    """
    step.model.train()
    train, batch_size = plan.train, plan.optim.batch_size
    started = time.perf_counter()
    generator = loop.generator
    generator.set_state(loop.epoch_generator_state)
    order = distributed.shard(train.shuffled_order(generator), batch_size)  # this rank's images of the epoch
    if loop.steps_done:  # resuming mid-epoch: the same order, and augmentation draws continue where they stopped
        generator.set_state(loop.resume_generator_state)
    totals = loop.totals or {"sums": {}, "correct": 0, "seen": 0, "seconds": 0.0}
    sums = totals["sums"]
    for number, (index, images, labels) in enumerate(train.batches(batch_size, order), start=1):
        if number <= loop.steps_done:
            continue
        if plan.augment != "none":
            images = augment(images, plan.augment, generator, train.sources_of(index))
        if plan.optim.cutmix and float(torch.rand(1, generator=loop.mix_generator)) < plan.optim.cutmix:
            images, labels = cutmix(images, labels, plan.classes, loop.mix_generator)  # labels: class weights now
        terms = step(number, index, images, labels)
        totals["seen"] += len(labels)
        shown = labels if labels.dim() == 1 else labels.argmax(1)  # a mixed image's class: the larger area's
        totals["correct"] += (terms["logits"].argmax(1) == shown).sum().item()
        for name, value in terms.items():
            if name != "logits":
                sums[name] = sums.get(name, 0.0) + value.item() * len(labels)
        progress.step(terms["loss"].item(), totals["seen"] / (time.perf_counter() - started + totals["seconds"]))
        loop.after_step(number, {**totals, "seconds": totals["seconds"] + time.perf_counter() - started})
    seen, seconds = totals["seen"], totals["seconds"] + time.perf_counter() - started
    return {name: total / seen for name, total in sums.items()}, totals["correct"] / seen, seen, seconds


def cross_entropy_step(normalize: Normalizer) -> StepFn:
    """The step function of plain supervised training."""

    def step(model, index, images, labels) -> dict:
        logits = model(normalize(images))
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    return step

"""How networks are trained and distilled: the settings of ``kd-edge teacher`` and ``kd-edge distill``.

``DistillSettings()`` is kd-edge's recipe, the same for the library and the command line;
a preset is a named set of changes to it (``PRESETS``, applied by ``preset``):

    settings = preset(DistillSettings(), "reference")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from kd_edge.errors import ConfigError
from kd_edge.settings.data import (
    CAMERA_SIZED,
    DataSettings,
    by_size_parts,
    chosen_by_size,
    number_by_size,
    numbers_by_size,
)
from kd_edge.settings.fields import check_choices, knob, leaf_paths, require, with_changes
from kd_edge.settings.schedules import parse_schedule

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
LR_SCALINGS = ("none", "linear", "sqrt")
KD_LOSSES = ("kl", "mse")
DEVICES = ("cpu", "cuda", "auto")
PRECISIONS = ("auto", "fp32", "bf16")
MODES = ("offline", "online", "multi")
TEACHER_WEIGHTINGS = ("equal", "confidence")
# With no --epochs, a network trains for enough epochs to take its ``steps`` optimiser steps: a fixed
# epoch count under-trains small datasets (MNIST-5k's 4,000 images make 15 steps an epoch at batch 256,
# Fashion-MNIST's 54,000 make 210).
MAX_PLANNED_EPOCHS = 200


step_budget = number_by_size(int, "--steps", lambda steps: steps >= 1, "a number of steps (>= 1)")
parse_batch_size = number_by_size(int, "--batch-size", lambda size: size >= 1, "a batch size (>= 1)")
parse_alpha = number_by_size(float, "--alpha", lambda alpha: 0.0 <= alpha <= 1.0, "a weight in [0, 1]")
parse_temperature = number_by_size(float, "--temperature", lambda t: t > 0, "a positive temperature")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a training run executes: where, how fast, how reproducibly."""

    seed: int = knob(0, "Random seed for initialisation and data order.")
    device: str = knob("cpu", "Where to train.", choices=DEVICES)
    threads: int | None = knob(None, "Torch CPU threads.", none="torch's choice")
    precision: str = knob(
        "auto",
        "auto: bf16 where the hardware has it natively and oneDNN may use it (not under ONEDNN_MAX_CPU_ISA=AVX2); on "
        "a CPU, not for networks with depthwise convolutions, which train faster in fp32; else fp32. bf16 runs "
        "autocast (weights stay fp32).",
        choices=PRECISIONS,
    )
    deterministic: bool = knob(False, "Only deterministic torch kernels: the same --seed gives the same metrics.")

    def __post_init__(self):
        check_choices(self)
        require(self.threads is None or self.threads >= 1, f"--threads must be at least 1, got {self.threads}")


@dataclass(frozen=True, kw_only=True)
class OptimSettings:
    """How a network learns: the optimiser, its schedule and the batch (teacher and student alike)."""

    batch_size: int | str = knob(
        "192|256",
        f"Training batch size (per process under torchrun); A|B: A under {CAMERA_SIZED} px, B from there.",
        parse=parse_batch_size,
    )
    optimizer: str = knob("adamw", "The optimiser.", choices=OPTIMIZERS)
    lr: float = knob(4e-3, "Peak learning rate.")
    weight_decay: float = knob(5e-4, "Weight decay.")
    schedule: str = knob("onecycle", "Learning-rate schedule over the steps.", choices=SCHEDULES)
    lr_scaling: str = knob(
        "none",
        "With N processes (each taking --batch-size images a step), the learning rate: as given (none), "
        "times N (linear) or times sqrt(N) (sqrt).",
        choices=LR_SCALINGS,
    )
    cutmix: float = knob(
        0.0,
        "Probability, 0-1, that a training batch is mixed by CutMix: a box of each image replaced by the same box "
        "of another, its label a mix of the two classes by area (teachers then run on every batch). 0: never.",
    )

    def __post_init__(self):
        check_choices(self)
        object.__setattr__(self, "batch_size", parse_batch_size(self.batch_size))  # a library caller's number too
        require(0 <= self.cutmix <= 1, f"--cutmix is a probability, 0-1, got {self.cutmix}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")

    def for_images(self, side: int) -> OptimSettings:
        """The batch size for images of ``side`` pixels."""
        return chosen_by_size(self, side, batch_size=int)


@dataclass(frozen=True, kw_only=True)
class NetworkSettings:
    """One network: its architecture and its budget (``epochs``, or enough epochs for ``steps`` optimiser steps)."""

    model: str = knob(help=f"Architecture (`kd-edge models`); A|B: A under {CAMERA_SIZED} px, B from there.")
    epochs: int | None = knob(None, "Training epochs.", short="-e", none="enough for {steps} optimiser steps")
    steps: int | str = knob(
        help=f"Optimiser steps when no epochs are given (rounded up to whole epochs); A|B: A under {CAMERA_SIZED} px, "
        "B from there.",
        parse=step_budget,
    )

    def __post_init__(self):
        by_size_parts(self.model, "--model", bool, "a registry name (`kd-edge models`)")
        require(self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        object.__setattr__(self, "steps", step_budget(self.steps))

    def planned_epochs(self, train_size: int, batch_size: int) -> int:
        """``epochs``, or the fewest whole epochs that make ``steps`` optimiser steps (at most 200)."""
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = max(train_size // batch_size, 1)
        return min(max(math.ceil(int(self.steps) / steps_per_epoch), 1), MAX_PLANNED_EPOCHS)

    def for_images(self, side: int) -> NetworkSettings:
        """The model and step budget for images of ``side`` pixels."""
        return chosen_by_size(self, side, model=str, steps=int)

    def planned(self, train_size: int, batch_size: int) -> NetworkSettings:
        return replace(self, epochs=self.planned_epochs(train_size, batch_size))


# kd-edge's recipe: BatchNorm CNNs, AdamW with a one-cycle schedule, cached soft labels. Under 64 px, at
# batch 192 (OptimSettings), the budgets are 1 and 2 epochs on Fashion-MNIST, 13 and 23 on mnist-5k: with
# alpha 0.9 and T 2 (KDSettings) that student is as accurate as 2 and 3 epochs at batch 256, alpha 0.5 and T 4
# made it, in 0.66x the time (benchmarks/results/short-recipe.md). At that budget the teacher's architecture
# does not show in the student (alpha 0.9 gives the soft labels a tenth of the loss, and a one-epoch teacher is
# weaker than the two-epoch student), so under 64 px it is the student's own: its students were as accurate as
# cnn-base's in 0.74x the whole run's time (benchmarks/results/teacher-choice-bf16.md, -avx2.md; 3 paired
# seeds). Camera-sized images (64 px and up) take the global-pooled CNNs, whose parameters do not grow with the
# image, and longer budgets under aerial augmentation: on RSSCN7's 1,787 training images, 134 and 200 epochs
# (benchmarks/results/aerial.md).
TEACHER = NetworkSettings(model="cnn-small|pooled-large", steps="250|800")
STUDENT = NetworkSettings(model="cnn-small|pooled-base", steps="450|1200")


@dataclass(frozen=True, kw_only=True)
class KDSettings:
    """The distillation loss: ``alpha * CE + (1 - alpha) * T^2 * KL``; ``alpha = 1`` is the student alone."""

    temperature: float | str = knob(
        "2|4",
        f"Softmax temperature T of the soft labels (its value at the first epoch); A|B: A under {CAMERA_SIZED} px, "
        "B from there.",
        short="-T",
        parse=parse_temperature,
    )
    alpha: float | str = knob(
        "0.9|0.5",
        f"Weight of the hard-label CE term; 1 trains the student alone; A|B: A under {CAMERA_SIZED} px, B from there.",
        parse=parse_alpha,
    )
    kd_loss: str = knob("kl", "Soft-label term: kl (T^2 * KL) or mse (logit matching).", choices=KD_LOSSES)
    min_teacher_accuracy: float = knob(
        0.0, "Stop unless the teacher reaches this validation accuracy, 0-1 (0: only above chance)."
    )
    temperature_schedule: str = knob(
        "constant",
        "How T moves from --temperature: constant, linear:END, cosine:END, step:END[:AT] or adaptive:END "
        "(half-way to END after each epoch that does not improve validation).",
    )
    alpha_schedule: str = knob("constant", "How alpha moves from --alpha; the forms of --temperature-schedule.")

    def __post_init__(self):
        check_choices(self)
        object.__setattr__(self, "temperature", parse_temperature(self.temperature))  # a library caller's number too
        object.__setattr__(self, "alpha", parse_alpha(self.alpha))
        require(
            0.0 <= self.min_teacher_accuracy <= 1.0,
            f"--min-teacher-accuracy is a fraction in [0, 1], got {self.min_teacher_accuracy}",
        )
        end = parse_schedule(self.temperature_schedule, "--temperature-schedule").end
        require(end is None or end > 0, f"--temperature-schedule must end at a positive temperature, got {end}")
        end = parse_schedule(self.alpha_schedule, "--alpha-schedule").end
        require(end is None or 0.0 <= end <= 1.0, f"--alpha-schedule must end at an alpha in [0, 1], got {end}")

    @property
    def scheduled(self) -> bool:
        return (self.temperature_schedule, self.alpha_schedule) != ("constant", "constant")

    @property
    def alone(self) -> bool:
        """The student learns from the labels alone, at every image size: no teacher is needed."""
        return self.alpha_schedule == "constant" and all(alpha == 1 for alpha in numbers_by_size(self.alpha, float))

    def for_images(self, side: int) -> KDSettings:
        """Alpha and temperature for images of ``side`` pixels."""
        return chosen_by_size(self, side, alpha=float, temperature=float)


@dataclass(frozen=True, kw_only=True)
class TeacherSettings:
    """``kd-edge teacher``: a network trained with cross-entropy."""

    data: DataSettings = field(default_factory=DataSettings)
    run: RunSettings = field(default_factory=RunSettings)
    teacher: NetworkSettings = TEACHER
    optim: OptimSettings = field(default_factory=OptimSettings)


@dataclass(frozen=True, kw_only=True)
class DistillSettings:
    """``kd-edge distill``: a student, and where its soft labels come from (``mode``).

    * offline: one frozen teacher, trained first unless one is given;
    * online: teacher and student trained together, each learning from the other (deep mutual learning);
    * multi: two or more frozen teachers, their softened outputs mixed by ``teacher_weights``.
    """

    data: DataSettings = field(default_factory=DataSettings)
    run: RunSettings = field(default_factory=RunSettings)
    teacher: NetworkSettings = TEACHER
    student: NetworkSettings = STUDENT
    optim: OptimSettings = field(default_factory=OptimSettings)
    kd: KDSettings = field(default_factory=KDSettings)
    mode: str = knob(
        "offline",
        "offline (a frozen teacher), online (teacher and student learn together, from each other) or multi "
        "(two or more --teacher files, their soft labels mixed).",
        choices=MODES,
    )
    teacher_weights: str = knob(
        "equal",
        "How --mode multi mixes its teachers: equal, confidence (per image, each teacher's top-class probability) "
        "or one weight per teacher, e.g. 0.7,0.3.",
    )
    init: str = knob(
        "scratch",
        "Student start: scratch, or a checkpoint or PyTorch weights file whose tensors matching the student's by "
        "name and shape are loaded (what was and was not is in metrics.json).",
    )

    def __post_init__(self):
        check_choices(self)
        require(
            self.teacher_weights in TEACHER_WEIGHTINGS or self.mode == "multi",
            "--teacher-weights mixes the teachers of --mode multi; drop it or add the mode",
        )
        require(
            not (self.kd.alone and self.kd.min_teacher_accuracy),
            "--alpha 1 trains the student alone, without a teacher, so --min-teacher-accuracy would be ignored; "
            "drop it or lower --alpha",
        )
        if self.mode == "online":
            require(
                max(numbers_by_size(self.kd.alpha, float)) < 1.0,
                "--mode online needs --alpha below 1: at 1 the networks ignore each other",
            )
            require(
                self.teacher.epochs == self.student.epochs,
                "--mode online trains teacher and student together for --epochs; drop --teacher-epochs",
            )

    @property
    def needs_teacher(self) -> bool:
        return self.mode != "offline" or not self.kd.alone

    def check_teachers(self, teachers: int) -> None:
        """Refuse a number of given teacher files this mode cannot use."""
        if self.mode == "offline":
            require(
                teachers <= 1,
                f"{teachers} --teacher files were given: distilling from several teachers is --mode multi",
            )
        if self.mode == "multi":
            require(
                teachers >= 2, f"--mode multi mixes two or more teachers; give each with --teacher (got {teachers})"
            )
        if self.mode == "online":
            require(
                teachers == 0,
                "--mode online trains the teacher together with the student, from scratch; drop --teacher, or use "
                "--mode offline to distil from a trained one",
            )
        if teachers and self.kd.alone:
            raise ConfigError(
                "--alpha 1 trains the student alone, without a teacher, so --teacher would be ignored; drop it or "
                "lower --alpha"
            )
        teacher_mixing(self.teacher_weights, teachers)


def teacher_mixing(text: str, teachers: int) -> str | tuple[float, ...]:
    """--teacher-weights: "equal", "confidence", or one weight per teacher ("0.7,0.3"), normalised to sum to 1."""
    if text in TEACHER_WEIGHTINGS:
        return text
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--teacher-weights {text!r}: write equal, confidence or one number per teacher (0.7,0.3)"
        ) from None
    require(len(weights) == teachers, f"--teacher-weights gives {len(weights)} weights for {teachers} teachers")
    require(all(w >= 0 for w in weights) and sum(weights) > 0, "--teacher-weights must be >= 0, not all 0")
    return tuple(w / sum(weights) for w in weights)


# --- presets: named changes to the settings above (dotted paths) ---------------------------------------------

PRESETS: dict[str, dict[str, object]] = {
    "default": {},  # the dataclasses' own defaults: kd-edge's recipe
    # the reference script's recipe, exactly: seed CNNs, Adam lr 0.01, 5 epochs, batch 128, T 4, alpha 0.5
    "reference": {
        "teacher.model": "seed-teacher",
        "teacher.epochs": 5,
        "student.model": "seed-student",
        "student.epochs": 5,
        "optim.batch_size": 128,
        "optim.optimizer": "adam",
        "optim.lr": 0.01,
        "optim.weight_decay": 0.0,
        "optim.schedule": "constant",
        "kd.temperature": 4.0,
        "kd.alpha": 0.5,
        "data.normalization": "half",
        "run.precision": "fp32",
    },
}
PRESET_DESCRIPTIONS = {
    "default": "kd-edge's recipe: BatchNorm CNNs, AdamW with a one-cycle schedule, cached soft labels",
    "reference": "the reference script's recipe: seed CNNs, Adam lr 0.01, 5 epochs, batch 128, T=4, alpha=0.5",
}


def preset_changes(settings, name: str) -> dict[str, object]:
    """The changes preset ``name`` makes to ``settings``: those of its paths that ``settings`` has, or holds
    under ``distill.`` (the pipeline's and the sweep's settings hold a DistillSettings there)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    paths = {path for path, _, _ in leaf_paths(settings)}
    changes = {}
    for path, value in PRESETS[name].items():
        for where in (path, f"distill.{path}"):
            if where in paths:
                changes[where] = value
    return changes


def preset(settings, name: str):
    """``settings`` with preset ``name`` applied."""
    return with_changes(settings, preset_changes(settings, name))

"""One frozen dataclass per stage, validated on construction, saved as JSON next to its artifacts.

Recipes come from presets (``PRESETS``); command-line options override single fields::

    config = distill_config(preset="reference", dataset="fashion-mnist", epochs=2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from kd_edge.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
LR_SCALINGS = ("none", "linear", "sqrt")
NORMALIZATIONS = ("dataset", "half")
KD_LOSS_NAMES = ("kl", "mse")
DEVICES = ("cpu", "cuda", "auto")
PRECISIONS = ("auto", "fp32", "bf16")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Which data, and how it is prepared.

    ``normalization`` is ``"dataset"`` (mean/std measured on the train split) or
    ``"half"`` (mean 0.5, std 0.5 per channel, as the reference script does).
    ``augment`` shifts each training image by up to 2 pixels.
    """

    dataset: str = "mnist-5k"
    data_dir: str | None = None
    image_size: int | None = None
    normalization: str = "dataset"
    augment: bool = False

    def __post_init__(self):
        check(
            self.normalization in NORMALIZATIONS,
            f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}",
        )
        check(
            self.image_size is None or self.image_size >= 8, f"--image-size must be at least 8, got {self.image_size}"
        )
        check(
            self.image_size is None or self.dataset.startswith("folder:"),
            f"--image-size resizes the images of a folder: dataset; {self.dataset!r} keeps its own size, so drop it",
        )


# With no --epochs, a network trains for enough epochs to take this many optimiser steps
# (``TrainConfig.steps``): a fixed epoch count under-trains small datasets (MNIST-5k's 4,000
# images make 15 steps an epoch at batch 256, Fashion-MNIST's 54,000 make 210).
MAX_PLANNED_EPOCHS = 200


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How one network is trained: architecture, optimiser, schedule, and a budget.

    The budget is ``epochs`` when given, else ``steps`` optimiser steps rounded up to whole
    epochs (``planned_epochs``), so that the default recipe trains enough on any dataset size.
    """

    model: str
    epochs: int | None = None
    steps: int = 500
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    lr_scaling: str = "none"  # under torchrun: the lr for N processes is lr (none), N * lr (linear) or sqrt(N) * lr

    def __post_init__(self):
        check(
            self.lr_scaling in LR_SCALINGS,
            f"--lr-scaling must be one of {', '.join(LR_SCALINGS)}, got {self.lr_scaling!r}",
        )
        check(self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        check(self.steps >= 1, f"--steps must be at least 1, got {self.steps}")
        check(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        check(self.lr > 0, f"--lr must be positive, got {self.lr}")
        check(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        check(
            self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
        )
        check(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")

    def planned_epochs(self, train_size: int) -> int:
        """``epochs``, or the fewest whole epochs that make ``steps`` optimiser steps (at most 200)."""
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = max(train_size // self.batch_size, 1)
        return min(max(math.ceil(self.steps / steps_per_epoch), 1), MAX_PLANNED_EPOCHS)

    def planned(self, train_size: int) -> TrainConfig:
        return replace(self, epochs=self.planned_epochs(train_size))


@dataclass(frozen=True, kw_only=True)
class KDConfig:
    """The distillation loss: ``alpha * CE + (1 - alpha) * T^2 * KL``; ``alpha = 1`` is the student alone.

    ``temperature`` and ``alpha`` are the values at the first epoch; their schedules
    (``kd_edge.schedules``: constant, linear:END, cosine:END, step:END[:AT], adaptive:END)
    move them during training.
    """

    temperature: float = 4.0
    alpha: float = 0.5
    kd_loss: str = "kl"
    min_teacher_accuracy: float = 0.0
    temperature_schedule: str = "constant"
    alpha_schedule: str = "constant"

    def __post_init__(self):
        from kd_edge.schedules import parse_schedule

        check(self.temperature > 0, f"--temperature must be positive, got {self.temperature}")
        check(0.0 <= self.alpha <= 1.0, f"--alpha must be in [0, 1], got {self.alpha}")
        check(
            self.kd_loss in KD_LOSS_NAMES, f"--kd-loss must be one of {', '.join(KD_LOSS_NAMES)}, got {self.kd_loss!r}"
        )
        check(
            0.0 <= self.min_teacher_accuracy <= 1.0,
            f"--min-teacher-accuracy is a fraction in [0, 1], got {self.min_teacher_accuracy}",
        )
        end = parse_schedule(self.temperature_schedule, "--temperature-schedule").end
        check(end is None or end > 0, f"--temperature-schedule must end at a positive temperature, got {end}")
        end = parse_schedule(self.alpha_schedule, "--alpha-schedule").end
        check(end is None or 0.0 <= end <= 1.0, f"--alpha-schedule must end at an alpha in [0, 1], got {end}")

    @property
    def scheduled(self) -> bool:
        return (self.temperature_schedule, self.alpha_schedule) != ("constant", "constant")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Where results go and how the run executes."""

    out: str = "runs/latest"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    force: bool = False
    precision: str = "auto"
    resume: bool = False  # continue the run in ``out`` from its saved state
    deterministic: bool = False  # torch refuses nondeterministic kernels: same seed, same metrics

    def __post_init__(self):
        check(not (self.resume and self.force), "--resume continues the run in --out and --force replaces it; pick one")
        check(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        check(
            self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        )
        check(self.threads is None or self.threads >= 1, f"--threads must be at least 1, got {self.threads}")


@dataclass(frozen=True, kw_only=True)
class TeacherConfig:
    data: DataConfig
    teacher: TrainConfig
    run: RunConfig

    def to_dict(self) -> dict:
        return {"stage": "teacher", **asdict(self)}


MODES = ("offline", "online", "multi")
TEACHER_WEIGHTINGS = ("equal", "confidence")


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
    check(len(weights) == teachers, f"--teacher-weights gives {len(weights)} weights for {teachers} teachers")
    check(all(w >= 0 for w in weights) and sum(weights) > 0, "--teacher-weights must be >= 0, not all 0")
    return tuple(w / sum(weights) for w in weights)


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """A student and where its soft labels come from (``mode``):

    * ``offline``: one frozen teacher, trained first unless ``teacher_paths`` holds one;
    * ``online``: teacher and student trained together, each learning from the other (deep mutual learning);
    * ``multi``: two or more frozen teachers (``teacher_paths``), their softened outputs mixed with
      ``teacher_weights``: ``equal``, ``confidence`` (per sample) or fixed weights ``"0.7,0.3"``.

    ``init`` is ``scratch`` or a checkpoint whose matching parameters start the student.
    """

    data: DataConfig
    teacher: TrainConfig
    student: TrainConfig
    kd: KDConfig = field(default_factory=KDConfig)
    run: RunConfig = field(default_factory=RunConfig)
    mode: str = "offline"
    teacher_paths: tuple[str, ...] = ()
    teacher_weights: str = "equal"
    init: str = "scratch"

    def __post_init__(self):
        check(self.mode in MODES, f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        teachers = len(self.teacher_paths)
        if self.mode == "offline":
            check(
                teachers <= 1,
                f"{teachers} --teacher files were given: distilling from several teachers is --mode multi",
            )
        if self.mode == "multi":
            check(teachers >= 2, f"--mode multi mixes two or more teachers; give each with --teacher (got {teachers})")
        if self.mode == "online":
            check(
                teachers == 0,
                "--mode online trains the teacher together with the student, from scratch; drop --teacher, or use "
                "--mode offline to distil from a trained one",
            )
            check(self.kd.alpha < 1.0, "--mode online needs --alpha below 1: at 1 the networks ignore each other")
        self.mixing_weights()  # validates teacher_weights

    @property
    def needs_teacher(self) -> bool:
        return self.mode != "offline" or self.kd.alpha < 1.0 or self.kd.alpha_schedule != "constant"

    @property
    def trains_teacher(self) -> bool:
        return self.mode == "offline" and self.needs_teacher and not self.teacher_paths

    def mixing_weights(self) -> str | tuple[float, ...]:
        """``teacher_weights`` parsed: "equal", "confidence" or one weight per teacher, summing to 1."""
        check(
            self.teacher_weights in TEACHER_WEIGHTINGS or self.mode == "multi",
            "--teacher-weights mixes the teachers of --mode multi; drop it or add the mode",
        )
        return teacher_mixing(self.teacher_weights, len(self.teacher_paths))

    def to_dict(self) -> dict:
        return {"stage": "distill", **asdict(self)}


@dataclass(frozen=True, kw_only=True)
class Preset:
    teacher: TrainConfig
    student: TrainConfig
    kd: KDConfig
    normalization: str = "dataset"
    precision: str = "auto"
    description: str = ""


PRESETS = {
    "default": Preset(
        teacher=TrainConfig(
            model="cnn-base",
            steps=250,  # 2 epochs on Fashion-MNIST, 17 on mnist-5k
            batch_size=256,
            optimizer="adamw",
            lr=4e-3,
            weight_decay=5e-4,
            schedule="onecycle",
        ),
        student=TrainConfig(
            model="cnn-small",
            steps=450,  # 3 epochs on Fashion-MNIST, 30 on mnist-5k
            batch_size=256,
            optimizer="adamw",
            lr=4e-3,
            weight_decay=5e-4,
            schedule="onecycle",
        ),
        kd=KDConfig(temperature=4.0, alpha=0.5),
        description="kd-edge's recipe: BatchNorm CNNs, AdamW with a one-cycle schedule, cached soft labels",
    ),
    "reference": Preset(
        teacher=TrainConfig(
            model="seed-teacher",
            epochs=5,
            batch_size=128,
            optimizer="adam",
            lr=0.01,
            weight_decay=0.0,
            schedule="constant",
        ),
        student=TrainConfig(
            model="seed-student",
            epochs=5,
            batch_size=128,
            optimizer="adam",
            lr=0.01,
            weight_decay=0.0,
            schedule="constant",
        ),
        kd=KDConfig(temperature=4.0, alpha=0.5),
        normalization="half",
        precision="fp32",
        description="the reference script's recipe: seed CNNs, Adam lr 0.01, 5 epochs, batch 128, T=4, alpha=0.5",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def override(config, **changes):
    """``dataclasses.replace`` with only the changes that were actually given (not None)."""
    given = {key: value for key, value in changes.items() if value is not None}
    return replace(config, **given) if given else config


SHARED_TRAINING_OPTIONS = ("batch_size", "lr", "optimizer", "schedule", "weight_decay", "lr_scaling")


def distill_config(
    *,
    preset: str = "default",
    dataset: str = "mnist-5k",
    data_dir: str | None = None,
    image_size: int | None = None,
    normalization: str | None = None,
    augment: bool = False,
    teacher_model: str | None = None,
    student_model: str | None = None,
    epochs: int | None = None,
    teacher_epochs: int | None = None,
    temperature: float | None = None,
    alpha: float | None = None,
    kd_loss: str | None = None,
    min_teacher_accuracy: float | None = None,
    out: str = "runs/distill",
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    precision: str | None = None,
    force: bool = False,
    resume: bool = False,
    deterministic: bool = False,
    teacher_paths: tuple[str, ...] | list[str] = (),
    mode: str = "offline",
    teacher_weights: str = "equal",
    init: str = "scratch",
    temperature_schedule: str | None = None,
    alpha_schedule: str | None = None,
    **shared,
) -> DistillConfig:
    """``kd-edge distill``'s options (preset < given) as a DistillConfig; ``shared`` holds SHARED_TRAINING_OPTIONS."""
    recipe = get_preset(preset)
    unknown = set(shared) - set(SHARED_TRAINING_OPTIONS)
    check(not unknown, f"unknown training options {sorted(unknown)}")
    check(
        not (teacher_paths and (teacher_model or teacher_epochs)),
        "--teacher gives a trained teacher, so --teacher-model and --teacher-epochs would be ignored; drop them, "
        "or drop --teacher to train one",
    )
    check(
        not (alpha == 1 and not alpha_schedule and (teacher_paths or min_teacher_accuracy)),
        "--alpha 1 trains the student alone, without a teacher, so --teacher and --min-teacher-accuracy would be "
        "ignored; drop them or lower --alpha",
    )
    check(
        not (mode == "online" and teacher_epochs),
        "--mode online trains teacher and student together for --epochs; drop --teacher-epochs",
    )
    return DistillConfig(
        data=DataConfig(
            dataset=dataset,
            data_dir=data_dir,
            image_size=image_size,
            normalization=normalization or recipe.normalization,
            augment=augment,
        ),
        teacher=override(recipe.teacher, model=teacher_model, epochs=teacher_epochs or epochs, **shared),
        student=override(recipe.student, model=student_model, epochs=epochs, **shared),
        kd=override(
            recipe.kd,
            temperature=temperature,
            alpha=alpha,
            kd_loss=kd_loss,
            min_teacher_accuracy=min_teacher_accuracy,
            temperature_schedule=temperature_schedule,
            alpha_schedule=alpha_schedule,
        ),
        run=RunConfig(
            out=out,
            seed=seed,
            device=device,
            threads=threads,
            force=force,
            precision=precision or recipe.precision,
            resume=resume,
            deterministic=deterministic,
        ),
        mode=mode,
        teacher_paths=tuple(teacher_paths),
        teacher_weights=teacher_weights,
        init=init,
    )


def distill_options(config: DistillConfig) -> dict:
    """The inverse of ``distill_config``: the options that rebuild ``config`` exactly (from the default preset)."""
    teacher, student = config.teacher, config.student
    different = [name for name in SHARED_TRAINING_OPTIONS if getattr(teacher, name) != getattr(student, name)]
    check(not different, f"teacher and student differ in {different}, which the command line sets for both at once")
    return {
        "preset": "default",
        "dataset": config.data.dataset,
        "data_dir": config.data.data_dir,
        "image_size": config.data.image_size,
        "normalization": config.data.normalization,
        "augment": config.data.augment,
        "teacher_model": teacher.model,
        "student_model": student.model,
        "teacher_epochs": teacher.epochs,
        "epochs": student.epochs,
        **{name: getattr(student, name) for name in SHARED_TRAINING_OPTIONS},
        "temperature": config.kd.temperature,
        "alpha": config.kd.alpha,
        "kd_loss": config.kd.kd_loss,
        "min_teacher_accuracy": config.kd.min_teacher_accuracy,
        "temperature_schedule": config.kd.temperature_schedule,
        "alpha_schedule": config.kd.alpha_schedule,
        "mode": config.mode,
        "teacher_weights": config.teacher_weights,
        "init": config.init,
        "seed": config.run.seed,
        "deterministic": config.run.deterministic,
        "device": config.run.device,
        "threads": config.run.threads,
        "precision": config.run.precision,
    }


# --- config files: kd-edge.toml, one table per command, the command-line options' names ----------------------

CONFIG_TABLES = (
    "teacher",
    "distill",
    "sweep",
    "search",
    "export",
    "quantize",
    "qat",
    "bundle",
    "bench",
    "verify-arm",
    "pipeline",
)


def read_toml(path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist; give a kd-edge.toml (a run folder of `kd-edge pipeline` "
            "holds one)"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{str(path)!r} is not valid TOML ({exc}); fix the line it names") from exc
    unknown = [name for name in data if name not in CONFIG_TABLES]
    if unknown:
        raise ConfigError(
            f"{str(path)!r}: unknown table [{unknown[0]}]{closest(unknown[0], CONFIG_TABLES)}; tables are "
            f"{', '.join(CONFIG_TABLES)}"
        )
    return data


def config_table(path, table: str, valid: set[str]) -> dict:
    """The ``[table]`` of a config file as {option name with underscores: value}; unknown keys are errors."""
    values = {}
    for key, value in read_toml(path).get(table, {}).items():
        name = key.replace("-", "_")
        if name not in valid:
            options = sorted(v.replace("_", "-") for v in valid)
            raise ConfigError(
                f"{str(path)!r}: unknown key {key!r} in [{table}]{closest(key.replace('_', '-'), options)}"
            )
        values[name] = value
    return values


def closest(name: str, choices) -> str:
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def write_toml(path, tables: dict[str, dict]) -> None:
    """Write ``{table: {option: value}}`` as TOML with the options' command-line names; None values are left out."""
    import tomli_w

    from kd_edge.io import atomic_write

    clean = {
        table: {key.replace("_", "-"): value for key, value in values.items() if value is not None}
        for table, values in tables.items()
    }
    text = (
        "# kd-edge's resolved configuration: `kd-edge pipeline --config THIS --out NEW` repeats the run.\n"
        + tomli_w.dumps(clean)
    )
    atomic_write(path, lambda handle: handle.write(text.encode()))

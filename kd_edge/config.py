"""One frozen dataclass per stage, validated on construction, saved as JSON next to its artifacts.

Recipes come from presets (``PRESETS``); command-line options override single fields::

    config = distill_config(preset="reference", dataset="fashion-mnist", student_epochs=2)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from kd_edge.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
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


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How one network is trained: architecture, optimiser, schedule."""

    model: str
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 5e-4
    schedule: str = "onecycle"

    def __post_init__(self):
        check(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        check(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        check(self.lr > 0, f"--lr must be positive, got {self.lr}")
        check(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        check(
            self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
        )
        check(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")


@dataclass(frozen=True, kw_only=True)
class KDConfig:
    """The distillation loss: ``alpha * CE + (1 - alpha) * T^2 * KL``; ``alpha = 1`` is the student alone."""

    temperature: float = 4.0
    alpha: float = 0.5
    kd_loss: str = "kl"
    min_teacher_accuracy: float = 0.0

    def __post_init__(self):
        check(self.temperature > 0, f"--temperature must be positive, got {self.temperature}")
        check(0.0 <= self.alpha <= 1.0, f"--alpha must be in [0, 1], got {self.alpha}")
        check(
            self.kd_loss in KD_LOSS_NAMES, f"--kd-loss must be one of {', '.join(KD_LOSS_NAMES)}, got {self.kd_loss!r}"
        )
        check(
            0.0 <= self.min_teacher_accuracy <= 1.0,
            f"--min-teacher-accuracy is a fraction in [0, 1], got {self.min_teacher_accuracy}",
        )


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Where results go and how the run executes."""

    out: str = "runs/latest"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    force: bool = False
    precision: str = "auto"

    def __post_init__(self):
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


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Offline distillation: a frozen teacher (trained first unless ``teacher_path`` is given) and a student."""

    data: DataConfig
    teacher: TrainConfig
    student: TrainConfig
    kd: KDConfig = field(default_factory=KDConfig)
    run: RunConfig = field(default_factory=RunConfig)
    teacher_path: str | None = None

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
            epochs=2,
            batch_size=256,
            optimizer="adamw",
            lr=4e-3,
            weight_decay=5e-4,
            schedule="onecycle",
        ),
        student=TrainConfig(
            model="cnn-small",
            epochs=3,
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

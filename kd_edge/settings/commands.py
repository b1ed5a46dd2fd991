"""Which settings each command exposes, under which option names: read by the command line, the
config file, the pipeline and the generated documentation alike.

    settings = resolve(COMMANDS["distill"], given={"lr": 0.01}, from_file={"epochs": 3})

Precedence: options given on the command line, then the config file's table, then the preset
(``--preset``), then the settings dataclasses' own defaults.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, replace

from kd_edge.errors import ConfigError
from kd_edge.settings.bench import BenchSettings, PredictSettings
from kd_edge.settings.data import DataSettings
from kd_edge.settings.deploy import (
    ArmSettings,
    BundleSettings,
    DeploySettings,
    ExportSettings,
    QATSettings,
    QuantizeSettings,
)
from kd_edge.settings.detection import DetectSettings
from kd_edge.settings.fields import Option, apply, options_of
from kd_edge.settings.pipeline import PipelineSettings
from kd_edge.settings.search import SearchSettings, SweepSettings
from kd_edge.settings.training import DistillSettings, TeacherSettings, preset


@dataclass(frozen=True)
class CommandOptions:
    """A command's settings object (its defaults) and the options that set it."""

    name: str
    settings: object
    options: tuple[Option, ...]
    presets: bool = False  # takes --preset
    notes: dict[str, str] = field(default_factory=dict)  # option -> what its default depends on, for --help

    def option(self, name: str) -> Option:
        return next(option for option in self.options if option.name == name)


def network_names(prefix: str = "") -> dict[str, str]:
    """distill's names for the two networks' fields: --teacher-model, --student-model, --epochs (the student's)."""
    return {
        f"{prefix}teacher.model": "teacher_model",
        f"{prefix}teacher.epochs": "teacher_epochs",
        f"{prefix}teacher.steps": "teacher_steps",
        f"{prefix}student.model": "student_model",
    }


TEACHER_DATASET = "the dataset the (first) --teacher was trained on, else mnist-5k"
TEACHER_EPOCHS = "--epochs if given, else enough for --teacher-steps; --preset reference: 5"
DISTILL_NOTES = {"dataset": TEACHER_DATASET, "teacher_epochs": TEACHER_EPOCHS}


def command(name: str, settings, presets: bool = False, notes: dict | None = None, **choose) -> CommandOptions:
    """A command over ``settings``; ``choose`` holds ``options_of``'s include, exclude, rename and also."""
    return CommandOptions(name, settings, tuple(options_of(settings, **choose)), presets, notes or {})


def prefixed(options: list[Option], prefix: str) -> tuple[Option, ...]:
    """``options`` for a settings object that holds theirs one level down, at ``prefix`` ("distill.")."""
    return tuple(replace(o, paths=tuple(prefix + path for path in o.paths)) for o in options)


DISTILL = {"rename": network_names(), "also": {"student.epochs": ("teacher.epochs",)}}
BENCH_NAMES = {"batch_sizes": ("batch_size", "-b"), "memory_bytes": "memory"}
SEARCH_NAMES = {"latency_budget_ms": "latency_budget", "memory_mb": "memory", "time_limit_s": "time_limit"}
SEARCH_IGNORES = ("run.device", "run.precision", "run.deterministic")  # candidates train on the CPU, as timed
QUANTIZE_IN_QAT = ("calibration_size", "method", "max_accuracy_drop", "reduce_range", "optimize_latency")
QAT_OPTIONS = (
    "epochs", "lr", "batch_size", "run.seed",
    *(f"quantize.{name}" for name in (*QUANTIZE_IN_QAT, "compare_latency", "threads")),
)  # fmt: skip
DETECT = {
    "rename": {"teacher.model": "teacher_model", "teacher.steps": "teacher_steps", "student.model": "student_model",
               "student.steps": "steps"},
    "exclude": ("run.device", "run.deterministic", "optim.lr_scaling", "optim.cutmix"),
}  # fmt: skip
PIPELINE_OPTIONS = (
    "distill.data.", "distill.run.", "bundle.profile",
    *(f"distill.{network}.{name}" for network in ("teacher", "student") for name in ("model", "epochs")),
)  # fmt: skip


def sweep_command() -> CommandOptions:
    own = options_of(
        SweepSettings(),
        include=("temperatures", "alphas", "seeds"),
        rename={"temperatures": ("temperature", "-T"), "alphas": "alpha"},
    )
    distill = options_of(DistillSettings(), exclude=("kd.temperature", "kd.alpha", "init"), **DISTILL)
    options = (*own, *prefixed(distill, "distill."))
    return CommandOptions("sweep", SweepSettings(), options, True, DISTILL_NOTES)


COMMANDS: dict[str, CommandOptions] = {
    c.name: c
    for c in (
        command("teacher", TeacherSettings(), presets=True),
        command("distill", DistillSettings(), presets=True, notes=DISTILL_NOTES, **DISTILL),
        sweep_command(),
        command("detect", DetectSettings(), **DETECT),
        command("search", SearchSettings(), rename=SEARCH_NAMES, exclude=SEARCH_IGNORES),
        command(
            "export", DeploySettings(), include=("export.", "quantize.optimize_latency", "quantize.compare_latency")
        ),
        command("quantize", QuantizeSettings()),
        command("qat", QATSettings(), include=QAT_OPTIONS),
        command(
            "bundle",
            DeploySettings(),
            include=("bundle.", "export.", "quantize.max_accuracy_drop", "quantize.optimize_latency"),
        ),
        command("bench", BenchSettings(), rename=BENCH_NAMES),
        command("predict", PredictSettings()),
        command("verify-arm", ArmSettings(), rename={"cpus": "cpu"}),
        command("models", DataSettings(), include=("dataset", "data_dir", "image_size")),
        command(
            "pipeline",
            PipelineSettings(),
            presets=True,
            include=PIPELINE_OPTIONS,
            rename=network_names("distill."),
            also={"distill.student.epochs": ("distill.teacher.epochs",)},
        ),
    )
}

# The pipeline's config file: one table per stage, keyed as the command of the same name takes its options.
PIPELINE_TABLES: dict[str, tuple[Option, ...]] = {
    "distill": prefixed(options_of(DistillSettings(), **DISTILL), "distill."),
    "export": prefixed(options_of(ExportSettings()), "export."),
    "quantize": prefixed(options_of(QuantizeSettings(), exclude=("compare_latency",)), "quantize."),
    "bundle": prefixed(options_of(BundleSettings()), "bundle."),
    "bench": prefixed(options_of(BenchSettings(), rename=BENCH_NAMES), "bench."),
    # A yolo: dataset's detectors: kd-edge detect's options, less the dataset, split, seed and threads, which are
    # [distill]'s (the pipeline's options).
    "detect": prefixed(
        options_of(
            DetectSettings(),
            rename=DETECT["rename"],
            exclude=("dataset", "split", "run.seed", "run.threads", *DETECT["exclude"]),
        ),
        "detect.",
    ),
}


# --- turning given values into settings -------------------------------------------------------------------


def resolve(
    command: CommandOptions,
    given: dict,
    from_file: dict | None = None,
    preset_name: str | None = None,
    layers: list[tuple[tuple[Option, ...], dict]] = (),
):
    """The command's settings: ``given`` (command line) over ``from_file`` over ``layers`` (other (options,
    values) pairs, such as the pipeline's per-stage tables) over the preset over the defaults.

    Values are checked and converted to each option's type (a config file's ``3`` for a float option is 3.0;
    its ``"20m"`` for a duration is parsed); None means "not given".
    """
    settings = command.settings
    if preset_name and preset_name != "default":
        if not command.presets:
            raise ConfigError(f"`kd-edge {command.name}` takes no --preset")
        settings = preset(settings, preset_name)
    elif preset_name == "default" or command.presets:
        preset(settings, preset_name or "default")  # an unknown name fails here
    for options, values in layers:
        by_name = {option.name: option for option in options}
        converted = {name: convert(by_name[name], value, "config file") for name, value in values.items()}
        settings = apply(settings, list(options), converted)
    values = {}
    for source, items in (("config file", from_file or {}), ("command line", given)):
        for name, value in items.items():
            if value is not None:
                values[name] = convert(command.option(name), value, source)
    settings = apply(settings, list(command.options), values)
    for option in command.options:
        if option.field.metadata.get("required") and option.default(settings) is None:
            raise ConfigError(
                f"`kd-edge {command.name}` needs --{option.key} (or {option.key} in [{command.name}] of --config)"
            )
    return settings


def convert(option: Option, value, source: str = "command line"):
    """``value`` as the option's field wants it: parsed where the field has a parser, lists as tuples,
    ints as floats for a float field; anything else of the wrong type is a ``ConfigError``."""
    if option.parse is not None:
        return option.parse(value)
    kind = option.kind()
    if typing.get_origin(kind) is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        item_kind = typing.get_args(kind)[0]
        return tuple(convert_scalar(option, item, item_kind, source) for item in items)
    return convert_scalar(option, value, kind, source)


def convert_scalar(option: Option, value, kind, source: str):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(kind, type) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if isinstance(kind, types.UnionType):
        return value
    name = getattr(kind, "__name__", str(kind))
    where = f"config key {option.key!r}" if source == "config file" else f"--{option.key}"
    raise ConfigError(f"{where} must be {name}, got {value!r}")

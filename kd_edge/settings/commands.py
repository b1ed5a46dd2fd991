"""Which settings each command exposes, under which option names: read by the command line, the
config file, the pipeline and the generated documentation alike.

    settings = resolve(COMMANDS["distill"], given={"lr": 0.01}, from_file={"epochs": 3})

Precedence: options given on the command line, then the config file's table, then the preset
(``--preset``), then the settings dataclasses' own defaults.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field

from kd_edge.errors import ConfigError
from kd_edge.settings.bench import BenchSettings, PredictSettings
from kd_edge.settings.deploy import ArmSettings, BundleSettings, DeploySettings, ExportSettings, QATSettings
from kd_edge.settings.deploy import QuantizeSettings
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


# --epochs sets the teacher's epochs too, unless --teacher-epochs is given.
EPOCHS_FOR_BOTH = {"student.epochs": ("teacher.epochs",)}
TEACHER_DATASET = "the dataset the (first) --teacher was trained on, else mnist-5k"


def distill_options(prefix: str = "", exclude: tuple[str, ...] = ()) -> tuple[Option, ...]:
    settings = DistillSettings()
    options = options_of(
        settings,
        rename=network_names(),
        also=EPOCHS_FOR_BOTH,
        exclude=exclude,
    )
    return tuple(prefixed(option, prefix) for option in options)


def prefixed(option: Option, prefix: str) -> Option:
    """``option`` for a settings object that holds its own one level down, at ``prefix`` ("distill.")."""
    return Option(option.name, tuple(prefix + path for path in option.paths), option.field, option.annotation)


BENCH_NAMES = {"batch_sizes": "batch_size", "memory_bytes": "memory"}
QAT_QUANTIZE_OPTIONS = (
    "calibration_size", "method", "max_accuracy_drop", "reduce_range", "optimize_latency", "compare_latency", "threads",
)  # fmt: skip
SEARCH_IGNORES = ("run.device", "run.precision", "run.deterministic")  # candidates train on the CPU, as timed
PIPELINE_OPTIONS = (
    "distill.data.", "distill.run.", "distill.teacher.model", "distill.teacher.epochs", "distill.student.model",
    "distill.student.epochs", "bench.profile",
)  # fmt: skip


def command_list() -> list[CommandOptions]:
    sweep_own = options_of(
        SweepSettings(), include=("temperatures", "alphas", "seeds"), rename={"temperatures": "temperature", "alphas": "alpha"}
    )
    search_names = {"latency_budget_ms": "latency_budget", "memory_mb": "memory", "time_limit_s": "time_limit"}
    return [
        CommandOptions("teacher", TeacherSettings(), tuple(options_of(TeacherSettings())), presets=True),
        CommandOptions("distill", DistillSettings(), distill_options(), True, {"dataset": TEACHER_DATASET}),
        CommandOptions(
            "sweep",
            SweepSettings(),
            (*sweep_own, *distill_options("distill.", exclude=("kd.temperature", "kd.alpha", "init"))),
            True,
            {"dataset": TEACHER_DATASET},
        ),
        CommandOptions(
            "search",
            SearchSettings(),
            tuple(options_of(SearchSettings(), rename=search_names, exclude=SEARCH_IGNORES)),
        ),
        CommandOptions(
            "export",
            DeploySettings(),
            tuple(options_of(DeploySettings(), include=("export.", "quantize.optimize_latency", "quantize.compare_latency"))),
        ),
        CommandOptions("quantize", QuantizeSettings(), tuple(options_of(QuantizeSettings()))),
        CommandOptions(
            "qat",
            QATSettings(),
            tuple(options_of(QATSettings(), include=("epochs", "lr", "batch_size", "run.seed",
                                                      *(f"quantize.{name}" for name in QAT_QUANTIZE_OPTIONS)))),
        ),  # fmt: skip
        CommandOptions(
            "bundle",
            DeploySettings(),
            tuple(options_of(DeploySettings(), include=("bundle.", "export.", "quantize.max_accuracy_drop",
                                                         "quantize.optimize_latency"))),
        ),  # fmt: skip
        CommandOptions("bench", BenchSettings(), tuple(options_of(BenchSettings(), rename=BENCH_NAMES))),
        CommandOptions("predict", PredictSettings(), tuple(options_of(PredictSettings()))),
        CommandOptions("verify-arm", ArmSettings(), tuple(options_of(ArmSettings(), rename={"cpus": "cpu"}))),
        CommandOptions(
            "pipeline",
            PipelineSettings(),
            tuple(
                options_of(
                    PipelineSettings(),
                    include=PIPELINE_OPTIONS,
                    rename=network_names("distill."),
                    also={"distill.student.epochs": ("distill.teacher.epochs",)},
                )
            ),
            presets=True,
        ),
    ]


COMMANDS: dict[str, CommandOptions] = {command.name: command for command in command_list()}

# The pipeline's config file: one table per stage, keyed as the command of the same name takes its options.
PIPELINE_TABLES: dict[str, tuple[Option, ...]] = {
    "distill": distill_options("distill."),
    "export": tuple(prefixed(o, "export.") for o in options_of(ExportSettings())),
    "quantize": tuple(prefixed(o, "quantize.") for o in options_of(QuantizeSettings(), exclude=("compare_latency",))),
    "bundle": tuple(prefixed(o, "bundle.") for o in options_of(BundleSettings())),
    "bench": tuple(prefixed(o, "bench.") for o in options_of(BenchSettings(), rename=BENCH_NAMES)),
}


# --- turning given values into settings -------------------------------------------------------------------


def resolve(command: CommandOptions, given: dict, from_file: dict | None = None, preset_name: str | None = None):
    """The command's settings: ``given`` (command line) over ``from_file`` over the preset over the defaults.

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
    values = {}
    for source, items in (("config file", from_file or {}), ("command line", given)):
        for name, value in items.items():
            if value is not None:
                values[name] = convert(command.option(name), value, source)
    settings = apply(settings, list(command.options), values)
    for option in command.options:
        if option.field.metadata.get("required") and option.default(settings) is None:
            raise ConfigError(
                f"`kd-edge {command.name}` needs --{option.key} (or {option.key} in the [{command.name}] table of --config)"
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

"""One owner per option: every default lives in its settings dataclass, and the command line, the config file,
the pipeline and the docs read it from there."""

import ast
import dataclasses
import typing
from pathlib import Path

import pytest
import typer.main

from kd_edge.cli import app
from kd_edge.errors import ConfigError
from kd_edge.settings import (
    BenchSettings,
    DistillSettings,
    NetworkSettings,
    OptimSettings,
    PipelineSettings,
    QuantizeSettings,
    TeacherSettings,
)
from kd_edge.settings.commands import COMMANDS, PIPELINE_TABLES, resolve
from kd_edge.settings.fields import leaf_paths
from kd_edge.settings.files import read_toml, table, toml_tables, write_toml

PACKAGE = Path(__file__).resolve().parent.parent / "kd_edge"
# Options that name files, or say what to do with them: the command line's own, not settings.
FILE_OPTIONS = {
    "out", "force", "resume", "config_path", "preset", "teacher", "data_dir", "json_path", "json_output", "markdown",
    "plot", "name", "int8", "bundle", "onnx", "calibration", "cache_dir", "dataset", "data", "nproc", "models",
    "inputs", "model", "source", "run_dir", "frames", "help", "draw",
}  # fmt: skip


def cli_commands() -> dict:
    return typer.main.get_command(app).commands


def test_every_settings_option_defaults_to_none_and_every_other_option_names_a_file():
    """An option whose default the CLI states itself would be a second owner of that default."""
    for name, command in cli_commands().items():
        settings_options = {option.name for option in COMMANDS[name].options} if name in COMMANDS else set()
        for parameter in command.params:
            if parameter.name in settings_options:
                assert parameter.default is None, f"kd-edge {name} --{parameter.name} states a default"
            else:
                assert parameter.name in FILE_OPTIONS, f"kd-edge {name} --{parameter.name} is not in any settings"


def settings_classes() -> set[type]:
    import kd_edge.settings as package

    return {
        value for value in vars(package).values() if isinstance(value, type) and value.__name__.endswith("Settings")
    }


def test_every_settings_field_has_an_option_and_a_config_key():
    reachable = set()
    for command in COMMANDS.values():
        reachable |= {
            (type(owner(command.settings, o.paths[0])), o.paths[0].rsplit(".", 1)[-1]) for o in command.options
        }
    for options in PIPELINE_TABLES.values():
        reachable |= {(type(owner(PipelineSettings(), o.paths[0])), o.paths[0].rsplit(".", 1)[-1]) for o in options}
    missing = []
    for cls in settings_classes():
        instance = COMMANDS_BY_CLASS.get(cls) or cls()
        for path, _, _ in leaf_paths(instance):
            leaf_owner = type(owner(instance, path))
            if (leaf_owner, path.rsplit(".", 1)[-1]) not in reachable:
                missing.append(f"{leaf_owner.__name__}.{path}")
    assert not missing, missing


def owner(settings, path: str):
    for part in path.split(".")[:-1]:
        settings = getattr(settings, part)
    return settings


COMMANDS_BY_CLASS = {NetworkSettings: NetworkSettings(model="cnn-small", steps=1)}


def test_the_library_defaults_are_the_command_line_defaults():
    """What `kd-edge distill` trains with no option is what DistillSettings() trains: one recipe."""
    for command in COMMANDS.values():
        if command.name not in ("search", "detect"):  # the budget, the data have no default: tested below
            assert resolve(command, {}) == command.settings
    detect = COMMANDS["detect"]
    assert resolve(detect, {"dataset": "yolo:cars"}) == dataclasses.replace(detect.settings, dataset="yolo:cars")
    search = COMMANDS["search"]
    assert resolve(search, {"latency_budget": "1ms"}) == dataclasses.replace(search.settings, latency_budget_ms=1.0)
    assert resolve(COMMANDS["distill"], {}) == DistillSettings()
    assert resolve(COMMANDS["teacher"], {}).teacher == DistillSettings().teacher
    assert TeacherSettings().optim == DistillSettings().optim == OptimSettings()


def test_help_reads_its_defaults_from_the_dataclasses():
    from typer.testing import CliRunner

    text = " ".join(CliRunner().invoke(app, ["distill", "--help"], terminal_width=200).output.split())
    optim, student = OptimSettings(), DistillSettings().student
    assert f"(default: {optim.batch_size}; --preset reference: 128)" in text
    assert f"(default: {optim.lr:g}; --preset reference: 0.01)" in text
    assert f"(default: {student.model}; --preset reference: seed-student)" in text
    bench = " ".join(CliRunner().invoke(app, ["bench", "--help"], terminal_width=200).output.split())
    assert f"(default: {BenchSettings().runs})" in bench and "(default: a bundle's own board" in bench


def test_flags_win_over_the_file_and_the_file_over_the_preset(tmp_path):
    command = COMMANDS["distill"]
    settings = resolve(command, {"lr": 0.02}, {"lr": 0.5, "batch_size": 64, "epochs": 3}, "reference")
    assert settings.optim.lr == 0.02 and settings.optim.batch_size == 64  # flag, then file
    assert settings.optim.optimizer == "adam" and settings.student.model == "seed-student"  # the preset
    assert settings.student.epochs == settings.teacher.epochs == 3  # --epochs is the teacher's too...
    settings = resolve(command, {"epochs": 3, "teacher_epochs": 9})
    assert (settings.student.epochs, settings.teacher.epochs) == (3, 9)  # ...unless --teacher-epochs says otherwise


def test_values_are_checked_and_converted_once_for_flags_and_files():
    search = resolve(COMMANDS["search"], {"latency_budget": "500us", "time_limit": "2m", "memory": "1G"})
    assert (search.latency_budget_ms, search.time_limit_s, search.memory_mb) == (0.5, 120.0, 1024.0)
    assert resolve(COMMANDS["distill"], {}, {"lr": 1}).optim.lr == 1.0  # a TOML integer for a float
    with pytest.raises(ConfigError, match="config key 'lr' must be float"):
        resolve(COMMANDS["distill"], {}, {"lr": "fast"})
    with pytest.raises(ConfigError, match="--optimizer must be one of adamw, adam, sgd"):
        resolve(COMMANDS["distill"], {"optimizer": "lion"})
    with pytest.raises(ConfigError, match="needs --latency-budget"):
        resolve(COMMANDS["search"], {})
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        resolve(COMMANDS["distill"], {}, preset_name="fast")


def test_the_pipeline_config_file_round_trips(tmp_path):
    settings = PipelineSettings(
        distill=DistillSettings(student=NetworkSettings(model="cnn-tiny", epochs=7, steps=450)),
        quantize=QuantizeSettings(method="entropy", exclude=("conv1",)),
        bench=BenchSettings(profile="rpi5", threads=(1, 4)),
    )
    path = tmp_path / "kd-edge.toml"
    write_toml(path, toml_tables(settings, PIPELINE_TABLES), "test")
    layers = [(options, table(path, name, {o.name for o in options})) for name, options in PIPELINE_TABLES.items()]
    assert resolve(COMMANDS["pipeline"], {}, layers=layers) == dataclasses.replace(
        settings, distill=dataclasses.replace(settings.distill, teacher=dataclasses.replace(settings.distill.teacher,
                                                                                            epochs=7))
    )  # fmt: skip
    assert set(read_toml(path)) == set(PIPELINE_TABLES)


def test_an_unknown_key_names_the_closest_valid_one(tmp_path):
    path = tmp_path / "kd-edge.toml"
    path.write_text('[quantize]\nmehtod = "entropy"\n')
    with pytest.raises(ConfigError, match="unknown key 'mehtod' in \\[quantize\\]; did you mean 'method'"):
        table(path, "quantize", {o.name for o in COMMANDS["quantize"].options})


# Library parameters that share an option's name but are not that option: the registry builds digits-sized
# models by default (the stages always pass the data's own shape).
NOT_OPTIONS = {("create_model", "image_size")}


def test_no_library_function_restates_an_option_default():
    """A literal default on a library parameter named like an option would be a second owner of that default."""
    names = {o.paths[0].rsplit(".", 1)[-1] for c in COMMANDS.values() for o in c.options}
    restated = []
    for path in PACKAGE.rglob("*.py"):
        if "settings" in path.parts or "cli" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
            for arg, default in pairs:
                literal = isinstance(default, ast.Constant) and default.value is not None
                if arg.arg in names and literal and (node.name, arg.arg) not in NOT_OPTIONS:
                    restated.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}({arg.arg}=...)")
    assert not restated, restated


def test_tuple_settings_take_repeated_or_listed_values():
    settings = resolve(COMMANDS["bench"], {"threads": [1, 2], "cores": "0"})
    assert settings.threads == (1, 2) and settings.cores == (0,)
    assert typing.get_origin(typing.get_type_hints(BenchSettings)["threads"]) is tuple

"""A command's options, generated from its settings, and the options that name files (shared by commands).

``@settings_command("distill")`` gives a command one option per settings field the command
exposes (``kd_edge.settings.commands``), each defaulting to None so that only what the user
typed is passed on, with its help and its default read from the settings dataclass. The
command's own function receives the resolved settings (flags > config file > preset >
defaults) and the set of option names that were given:

    @settings_command("quantize")
    def quantize(settings: QuantizeSettings, given: set[str], model: ModelArg, out: OutOpt = None): ...
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated

import typer

from kd_edge.settings.commands import COMMANDS, CommandOptions, resolve
from kd_edge.settings.data import DataSettings
from kd_edge.settings.fields import Option, help_text
from kd_edge.settings.training import PRESET_DESCRIPTIONS, PRESETS, preset_changes

# --- options that name files or say what to do with them: the command line's own ---------------------------

ForceOpt = Annotated[bool, typer.Option("--force", metavar="", help="Replace the results of an earlier run in --out.")]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        metavar="",
        help="Continue the interrupted run in --out from its saved state (same settings; a finished teacher is kept); "
        "where --out holds no run, start one, and say so.",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A kd-edge.toml: options under this command's [table], named as on the command line. "
        "Options given here win over the file, the file over the preset.",
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help=help_text(Option("data_dir", ("data_dir",), DataSettings.__dataclass_fields__["data_dir"],
                                       str | None), DataSettings())),
]  # fmt: skip
TeachersOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--teacher",
        metavar="PATH",
        help="A teacher.pt to distil from (repeat it for --mode multi); without it a teacher is trained first.",
    ),
]
NprocOpt = Annotated[
    int,
    typer.Option(
        help="Train in N processes on this machine (torch.distributed.run, gloo on CPU, nccl on CUDA); for "
        "several machines run `torchrun ... -m kd_edge` yourself (README)."
    ),
]
PRESET_HELP = "Recipe to start from: " + "; ".join(f"{name}: {text}" for name, text in PRESET_DESCRIPTIONS.items())
PresetOpt = Annotated[str | None, typer.Option(help=f"{PRESET_HELP} (default: default).")]


# --- options generated from the settings ---------------------------------------------------------------------


def settings_command(name: str, defaults=None, layers=None):
    """Turn ``body(settings, given, **inputs)`` into a typer command with ``name``'s settings as options.

    ``defaults(inputs)`` may give option values that depend on the command's other options (distill's
    dataset is the --teacher's): below the config file and the command line, above the preset.
    ``layers(config_path)`` may give more (options, values) pairs from the config file, below its own
    table (the pipeline's [distill], [export]... tables).
    """
    command = COMMANDS[name]

    def decorator(body):
        signature = inspect.signature(body, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in ("settings", "given")]
        generated = [option_parameter(option, command) for option in command.options]
        extra = [inspect.Parameter("config_path", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOpt)]
        if command.presets:
            extra.append(
                inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=PresetOpt)
            )
        ctx = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        parameters = [ctx, *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own), *generated, *extra]

        @functools.wraps(body)
        def wrapper(**kwargs):
            from kd_edge.cli.config_file import file_values

            ctx, config_path, preset = kwargs.pop("ctx"), kwargs.pop("config_path"), kwargs.pop("preset", None)
            given = {o.name: kwargs.pop(o.name) for o in command.options if kwargs.get(o.name) is not None}
            for o in command.options:
                kwargs.pop(o.name, None)
            from_file, inputs = file_values(config_path, command, own, ctx) if config_path else ({}, {})
            kwargs.update(inputs)
            preset = preset or from_file.pop("preset", None)
            implied = defaults(kwargs) if defaults else {}
            extra = layers(config_path) if layers and config_path else []
            settings = resolve(command, given, {**implied, **from_file}, preset, extra)
            return body(settings, set(given) | set(from_file), **kwargs)

        wrapper.__signature__ = inspect.Signature(parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # typer must read the generated signature, not the body's
        return wrapper

    return decorator


METAVARS = {int: "N", float: "X", str: "TEXT"}  # a repeatable option's value, as --threads N


def option_parameter(option: Option, command: CommandOptions) -> inspect.Parameter:
    """The typer parameter of ``option``: its flags, its type (text where the field parses text), its help."""
    kind = option.kind()
    if option.parse is not None:
        kind = str
    elif typing.get_origin(kind) is tuple:
        kind = list[typing.get_args(kind)[0]]
    presets = (
        {name: preset_changes(command.settings, name) for name in PRESETS if name != "default"}
        if command.presets
        else None
    )
    text = help_text(option, command.settings, presets)
    if option.name in command.notes:
        text = f"{option.help} (default: {command.notes[option.name]})"
    metavar = (
        "" if kind is bool else METAVARS.get(typing.get_args(kind)[0]) if typing.get_origin(kind) is list else None
    )
    info = typer.Option(*option.flags(), help=text, metavar=metavar)
    return inspect.Parameter(
        option.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, info]
    )

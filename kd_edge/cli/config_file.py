"""``--config FILE``: a command's ``[table]`` of a kd-edge.toml, split into its settings and its file options.

The settings keys go to ``kd_edge.settings.commands.resolve`` (which checks and converts them);
the keys that name files or runs (``out``, ``data-dir``, ``teacher``...) fill the options the
user did not type, converted to the option's type here.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Annotated

from kd_edge.errors import ConfigError
from kd_edge.settings.commands import CommandOptions
from kd_edge.settings.files import table


def file_values(path: Path, command: CommandOptions, inputs: list[inspect.Parameter], ctx) -> tuple[dict, dict]:
    """(settings values, input values the user did not type) from ``[command.name]`` of ``path``."""
    by_name = {p.name: p for p in inputs}
    keys = {o.name for o in command.options} | set(by_name) | ({"preset"} if command.presets else set())
    values = table(path, command.name, keys)
    typed = {name for name in by_name if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}
    settings = {name: value for name, value in values.items() if name not in by_name}
    given_inputs = {
        name: coerce(name, value, by_name[name].annotation)
        for name, value in values.items()
        if name in by_name and name not in typed
    }
    return settings, given_inputs


def coerce(name: str, value, annotation):
    """A TOML value as the option's type (Path, int, float, str, bool, or a list of them)."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    kinds = (
        [a for a in typing.get_args(annotation) if a is not type(None)]
        if isinstance(annotation, types.UnionType)
        else [annotation]
    )
    kind = kinds[0]
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {name.replace('_', '-')!r} must be a list, got {value!r}")
        return [coerce(name, item, typing.get_args(kind)[0]) for item in value]
    if kind is Path and isinstance(value, str):
        return Path(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"config key {name.replace('_', '-')!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")

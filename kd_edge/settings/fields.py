"""How a settings field describes itself, and how a command's options map onto its settings.

A settings dataclass owns its options: every field is declared with ``knob(default, help)``,
and that one declaration gives the command line its option (name, help, the default shown in
``--help``), the config file its key, and the documentation its row. A command exposes the
leaf fields of its settings object (nested dataclasses are walked) as ``Option`` values:

    options = options_of(DistillSettings(), rename={"student.model": "student_model"})
    settings = apply(DistillSettings(), options, {"lr": 0.01, "student_model": "cnn-tiny"})

Standard library only: the command line builds ``--help`` from this without importing torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace

from kd_edge.errors import ConfigError


def knob(
    default=MISSING,
    help: str = "",
    *,
    short: str | None = None,
    negative: str | None = None,
    parse: Callable | None = None,
    none: str | None = None,
    choices: tuple[str, ...] | None = None,
    required: bool = False,
) -> dataclasses.Field:
    """A settings field: its default (the only place it is stated) and its help text.

    ``short`` is a one-letter flag (``-e``), used where the option keeps the field's own name;
    ``negative`` the off switch of a boolean (default ``--no-NAME``); ``parse`` turns the
    option's text into the field's value (``"20m"`` -> 1200.0) and the option then takes text;
    ``none`` says what a default of None means ("torch's choice"); ``choices`` are checked on
    construction and listed in the help; a ``required`` knob (default None) must be given before the
    settings are used.
    """
    metadata = {
        "help": help, "short": short, "negative": negative, "parse": parse, "none": none, "choices": choices,
        "required": required,
    }  # fmt: skip
    if default is not MISSING and isinstance(default, (list, dict, set)):
        raise TypeError("a knob's default must be immutable: use a tuple")
    return dataclasses.field(default=default, metadata=metadata)


def require(condition: bool, message: str) -> None:
    """A ``ConfigError`` with ``message`` unless ``condition`` holds: every settings check reads this way."""
    if not condition:
        raise ConfigError(message)


def check_choices(settings) -> None:
    """Every field declared with ``choices`` holds one of them (called by each ``__post_init__``)."""
    for item in fields(settings):
        choices = item.metadata.get("choices")
        value = getattr(settings, item.name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"--{item.name.replace('_', '-')} must be one of {', '.join(choices)}, got {value!r}")


# --- a command's options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of a command: its name, and the field(s) of the command's settings it sets.

    ``paths`` holds one dotted path, or several for an option that sets several fields at once
    (``--epochs`` sets the student's and, unless ``--teacher-epochs`` is given, the teacher's).
    """

    name: str  # a Python identifier; the flag is --NAME and the config-file key NAME, with dashes
    paths: tuple[str, ...]
    field: dataclasses.Field
    annotation: object  # the field's type
    short: str | None = None  # a one-letter flag (-e)

    @property
    def key(self) -> str:
        return self.name.replace("_", "-")

    @property
    def help(self) -> str:
        return self.field.metadata.get("help", "")

    @property
    def parse(self) -> Callable | None:
        return self.field.metadata.get("parse")

    def flags(self) -> tuple[str, ...]:
        """``("--epochs", "-e")``, ``("--augment/--no-augment",)``: what the command line accepts."""
        if self.kind() is bool:
            negative = self.field.metadata.get("negative") or f"--no-{self.key}"
            return (f"--{self.key}/{negative}",)
        return (f"--{self.key}", self.short) if self.short else (f"--{self.key}",)

    def kind(self):
        """The field's type without None (``int | None`` -> int; ``tuple[int, ...]`` -> tuple[int, ...])."""
        annotation = self.annotation
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        return annotation

    def default(self, settings) -> object:
        return get(settings, self.paths[0])


def get(settings, path: str):
    for part in path.split("."):
        settings = getattr(settings, part)
    return settings


def leaf_paths(settings, prefix: str = "") -> list[tuple[str, dataclasses.Field, object]]:
    """(dotted path, field, type) of every field that is not itself a settings dataclass, in declaration order."""
    hints = typing.get_type_hints(type(settings))
    leaves = []
    for item in fields(settings):
        value = getattr(settings, item.name)
        path = f"{prefix}{item.name}"
        if is_dataclass(value):
            leaves += leaf_paths(value, f"{path}.")
        else:
            leaves.append((path, item, hints[item.name]))
    return leaves


def options_of(
    settings,
    *,
    include: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
    also: dict[str, tuple[str, ...]] | None = None,
) -> list[Option]:
    """The options a command exposes over ``settings`` (a default settings object).

    Every leaf field is an option named after the field, unless ``include`` lists the dotted paths
    (or section prefixes, ``"run."``) to keep, ``exclude`` those to drop, ``rename`` gives another
    name (or a (name, short flag) pair; a renamed option has no short flag otherwise, since ``-e``
    of the student's ``--epochs`` must not go to ``--teacher-epochs``), or ``also`` lets an option
    set more fields. Two options with one name are an error.
    """
    rename, also = rename or {}, also or {}
    options, seen = [], {}
    for path, item, annotation in leaf_paths(settings):
        if include is not None and not any(matches(path, p) for p in include):
            continue
        if any(matches(path, p) for p in exclude):
            continue
        renamed = rename.get(path)
        if renamed is None:
            name, short = item.name, item.metadata.get("short")
        else:
            name, short = (renamed, None) if isinstance(renamed, str) else renamed
        if name in seen:
            raise ConfigError(f"options {seen[name]} and {path} would both be --{name.replace('_', '-')}")
        seen[name] = path
        paths = (path, *also.get(path, ()))
        options.append(Option(name=name, paths=paths, field=item, annotation=annotation, short=short))
    return options


def matches(path: str, pattern: str) -> bool:
    """``pattern`` is a dotted path, or a section's prefix ending in a dot (``"run."``)."""
    return path == pattern or (pattern.endswith(".") and path.startswith(pattern))


def apply(settings, options: list[Option], given: dict):
    """``settings`` with the given option values set (``given``: option name -> value, already parsed).

    An option that sets several fields is applied first, so that a more specific option given with it
    wins (``--epochs 30 --teacher-epochs 10``). Each nested dataclass validates itself on rebuilding.
    """
    by_name = {option.name: option for option in options}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}")
    ordered = sorted((by_name[name] for name in given), key=lambda option: -len(option.paths))
    changes: dict[str, object] = {}
    for option in ordered:
        for path in option.paths:
            changes[path] = given[option.name]
    return with_changes(settings, changes)


def with_changes(settings, changes: dict[str, object]):
    """``settings`` with values at dotted paths replaced (nested dataclasses rebuilt, so validated)."""
    direct = {path: value for path, value in changes.items() if "." not in path}
    nested: dict[str, dict[str, object]] = {}
    for path, value in changes.items():
        if "." in path:
            head, rest = path.split(".", 1)
            nested.setdefault(head, {})[rest] = value
    for head, inner in nested.items():
        direct[head] = with_changes(getattr(settings, head), inner)
    return replace(settings, **direct) if direct else settings


def values_of(settings, options: list[Option]) -> dict[str, object]:
    """Option name -> the value ``settings`` holds (the inverse of ``apply``; None values left out)."""
    values = {option.name: option.default(settings) for option in options}
    return {name: value for name, value in values.items() if value is not None}


def describe_value(value) -> str:
    """A default as ``--help`` and the docs show it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(describe_value(item) for item in value) or "none"
    return str(value)


def describe_default(option: Option, settings, presets: dict | None = None) -> str:
    """``"default: 256; --preset reference: 128"``: what applies when the option is not given."""
    value = option.default(settings)
    text = shown(option, settings, value)
    for preset, overrides in (presets or {}).items():
        changed = with_changes(settings, overrides)
        preset_value = get(changed, option.paths[0])
        if preset_value != value:
            text += f"; --preset {preset}: {shown(option, changed, preset_value)}"
    return f"default: {text}"


def shown(option: Option, settings, value) -> str:
    """``value`` as help shows it; None as the field's ``none`` text, formatted with its siblings' values
    ("enough for {steps} optimiser steps")."""
    none = option.field.metadata.get("none")
    if value is None and none:
        siblings = get(settings, option.paths[0].rsplit(".", 1)[0]) if "." in option.paths[0] else settings
        return none.format(**{f.name: getattr(siblings, f.name) for f in fields(siblings)})
    return describe_value(value)


def help_text(option: Option, settings, presets: dict | None = None) -> str:
    """The option's help, its choices, and its default, as read from the settings."""
    choices = option.field.metadata.get("choices")
    listed = f" One of: {', '.join(choices)}." if choices else ""
    return f"{option.help}{listed} ({describe_default(option, settings, presets)})".strip()

"""Config files: ``kd-edge.toml``, one table per command, its keys the command's option names.

    [distill]
    dataset = "mnist-5k"
    epochs = 15

    [quantize]
    method = "entropy"

An unknown table or key is an error naming the closest valid one. ``write_toml`` writes the
same form, so that a file written by the pipeline repeats its run.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from kd_edge.errors import ConfigError
from kd_edge.settings.commands import COMMANDS
from kd_edge.settings.fields import Option, values_of

TABLES = tuple(COMMANDS)


def read_toml(path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

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
    unknown = [name for name in data if name not in TABLES]
    if unknown:
        raise ConfigError(
            f"{str(path)!r}: unknown table [{unknown[0]}]{closest(unknown[0], TABLES)}; tables are {', '.join(TABLES)}"
        )
    return data


def table(path, name: str, keys: set[str]) -> dict:
    """The ``[name]`` table of a config file as {option name with underscores: value}; a key outside ``keys``
    (option names) is an error."""
    values = {}
    for key, value in read_toml(path).get(name, {}).items():
        option = key.replace("-", "_")
        if option not in keys:
            valid = sorted(k.replace("_", "-") for k in keys)
            raise ConfigError(f"{str(path)!r}: unknown key {key!r} in [{name}]{closest(key.replace('_', '-'), valid)}")
        values[option] = value
    return values


def closest(name: str, choices) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def toml_tables(settings, tables: dict[str, tuple[Option, ...]]) -> dict[str, dict]:
    """``{table: {option name: value}}`` of ``settings`` (None values left out): what ``write_toml`` writes."""
    return {name: values_of(settings, list(options)) for name, options in tables.items()}


def write_toml(path, tables: dict[str, dict], header: str) -> None:
    """Write ``{table: {option: value}}`` as TOML with the options' command-line names (tuples as lists)."""
    import tomli_w

    from kd_edge.io import atomic_write_text

    clean = {
        name: {key.replace("_", "-"): list(v) if isinstance(v, tuple) else v for key, v in values.items()}
        for name, values in tables.items()
    }
    atomic_write_text(path, f"# {header}\n" + tomli_w.dumps(clean))

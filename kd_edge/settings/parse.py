"""Option texts that carry a unit or a list: ``2ms``, ``64M``, ``20m``, ``0,1``, ``1,2,4,8``.

Each parser takes what a command line or a config file gives (a string, or already a number
or a list in TOML) and returns the settings field's value; a bad text is a ``ConfigError``
that shows the accepted form. Standard library only.
"""

from __future__ import annotations

import re

from kd_edge.errors import ConfigError

UNITS = {
    "time": {"us": 1e-3, "ms": 1.0, "s": 1e3},
    "memory": {"k": 1 / 1024, "kb": 1 / 1024, "m": 1.0, "mb": 1.0, "g": 1024.0, "gb": 1024.0},
    "duration": {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0},
}
EXAMPLES = {"time": "2ms or 500us", "memory": "64M or 1G", "duration": "20m, 90s or 1h"}
DEFAULT_UNIT = {"time": "ms", "memory": "m", "duration": "s"}


def quantity(kind: str, option: str):
    """A parser of ``kind`` ("time" in ms, "memory" in MB, "duration" in s) that names ``option`` in errors."""

    def parse(text) -> float:
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return float(text)
        units = UNITS[kind]
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else ""
        if not match or (unit and unit not in units):
            raise ConfigError(
                f"{option} {text!r}: write a number with a unit ({', '.join(units)}), e.g. {EXAMPLES[kind]}"
            )
        return float(match.group(1)) * units[unit or DEFAULT_UNIT[kind]]

    return parse


def memory_bytes(text) -> int:
    """'512M', '1G', '300000k' or a number of bytes (``--memory`` of `kd-edge bench`)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?\s*", str(text))
    if not match:
        raise ConfigError(f"--memory {text!r}: give a size such as 512M or 1G")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def core_list(text) -> tuple[int, ...]:
    """'0,1' -> (0, 1) (``--cores``)."""
    if isinstance(text, (list, tuple)):
        return tuple(sorted({int(core) for core in text}))
    try:
        return tuple(sorted({int(part) for part in str(text).split(",") if part.strip()}))
    except ValueError as exc:
        raise ConfigError(f"--cores {text!r}: give core numbers separated by commas, such as 0,1") from exc


def number_list(option: str, kind=float):
    """A parser of ``"1,2,4,8"`` (or a TOML list) into a tuple of ``kind``, naming ``option`` in errors."""

    def parse(text) -> tuple:
        items = text if isinstance(text, (list, tuple)) else [v for v in str(text).split(",") if v.strip()]
        try:
            return tuple(kind(value) for value in items)
        except (TypeError, ValueError):
            raise ConfigError(f"{option} {text!r}: write numbers separated by commas, e.g. 1,2,4,8") from None

    return parse


def name_list(text) -> tuple[str, ...]:
    """'a, b,c' -> ('a', 'b', 'c')."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())

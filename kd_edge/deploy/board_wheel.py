"""A wheel of the installed kd-edge, for a board to install offline from its bundle.

    path = write_wheel(Path("bundle"))    # bundle/kd_edge-0.1.0-py3-none-any.whl

kd-edge's base install is numpy and onnxruntime, which the board has built for its own CPU
(pip, a vendor image); the wheel adds kd-edge itself, pure Python, so that

    pip install --no-index --find-links bundle/ kd-edge

works with no network. The wheel is written from the installed package's files and metadata
(PEP 427's layout: the package, a .dist-info with METADATA, WHEEL, entry_points.txt and RECORD),
whether kd-edge was installed from a wheel, a clone or in editable mode: ``pip wheel`` would need
the source tree and a build backend, neither of which a user's install is sure to have.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from importlib import metadata
from pathlib import Path

from kd_edge.errors import ConfigError

DISTRIBUTION = "kd-edge"
WHEEL_TEXT = "Wheel-Version: 1.0\nGenerator: kd-edge\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
LEFT_OUT = ("__pycache__", ".pyc")
# Zip entries get a fixed date, so that the same kd-edge gives the same wheel, byte for byte.
FIXED_DATE = (2020, 1, 1, 0, 0, 0)


def wheel_name(version: str) -> str:
    return f"kd_edge-{version}-py3-none-any.whl"


def write_wheel(folder: Path) -> Path:
    """Write the installed kd-edge as a wheel into ``folder``; returns its path."""
    import kd_edge

    try:
        installed = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            "kd-edge is imported from a source tree but not installed, so it has no metadata to make a wheel from: "
            "pip install -e . (or make venv), then bundle again"
        ) from None
    package = Path(kd_edge.__file__).resolve().parent
    files = {f"kd_edge/{path.relative_to(package).as_posix()}": path.read_bytes() for path in package_files(package)}
    info = f"kd_edge-{installed.version}.dist-info"
    files[f"{info}/METADATA"] = (installed.read_text("METADATA") or installed.read_text("PKG-INFO") or "").encode()
    files[f"{info}/WHEEL"] = WHEEL_TEXT.encode()
    files[f"{info}/entry_points.txt"] = (installed.read_text("entry_points.txt") or "").encode()
    files[f"{info}/RECORD"] = record(files, f"{info}/RECORD").encode()
    path = Path(folder) / wheel_name(installed.version)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            entry.external_attr = 0o644 << 16
            wheel.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def package_files(package: Path) -> list[Path]:
    """Every file of the package (its modules and data), sorted, without bytecode caches."""
    return sorted(
        path
        for path in package.rglob("*")
        if path.is_file() and not any(part in LEFT_OUT for part in path.parts) and path.suffix not in LEFT_OUT
    )


def record(files: dict[str, bytes], record_name: str) -> str:
    """RECORD: every file's path, urlsafe base64 sha256 without padding, and size; RECORD itself unhashed."""
    lines = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{name},sha256={digest},{len(data)}")
    return "\n".join([*lines, f"{record_name},,"]) + "\n"

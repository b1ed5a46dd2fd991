"""Crash-safe file writing, shared by every stage. Needs nothing but the standard library.

A file is written to a temporary name in its destination folder, flushed and
fsynced, then moved over the destination with ``os.replace``: the destination
always holds either the complete old file or the complete new one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from kd_edge.errors import OutputError


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file, then move it to ``path`` atomically."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, data) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_save_figure(figure, path: str | Path, dpi: int) -> Path:
    """A matplotlib figure saved as PNG, atomically (a half-written image never replaces a good one)."""
    return atomic_write(path, lambda handle: figure.savefig(handle, dpi=dpi, format="png"))


def fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove that a file can be written in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".kd-edge-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"cannot write to output folder {str(folder)!r} ({exc.strerror or exc}); choose another --out"
        ) from exc
    return folder

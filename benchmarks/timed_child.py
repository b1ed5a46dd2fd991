"""A command run as a child process and timed from outside: wall seconds, CPU seconds and peak memory.

Imported by the scripts beside it (``python benchmarks/X.py`` puts this folder on the path)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChildRun:
    seconds: float  # wall time, from start to exit
    cpu_seconds: float  # user and system time, the child's own children's included
    peak_rss_mb: float  # the kernel's ru_maxrss


def run_timed(command: list[str], log: Path, **popen) -> ChildRun:
    """Run ``command`` with its output in ``log``; a failure ends the benchmark, pointing at the log."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, **popen)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
    return ChildRun(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)

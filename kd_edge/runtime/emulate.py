"""Emulate a constrained target inside a benchmark's child process, and read back what took effect.

Each constraint reports whether it was enforced, how, and what the process saw
afterwards; a constraint that cannot be enforced here is reported as not
enforced, never silently skipped.

* cores: ``os.sched_setaffinity`` (read back with ``sched_getaffinity``);
* memory: a cgroup memory limit (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``)
  where writable, a cap on resident memory as on the board; otherwise RLIMIT_AS
  on new virtual memory (an allocation past it fails with MemoryError);
* CPU quota: CFS bandwidth through cgroups, v2 ``cpu.max`` or v1
  ``cpu.cfs_quota_us``, in a child cgroup of the process's own, where writable;
* threads: ONNX Runtime's ``intra_op_num_threads`` (set by the session; the
  threads the process runs are counted from /proc/self/task).
"""

from __future__ import annotations

import os
import re
import resource
from dataclasses import dataclass
from pathlib import Path

from kd_edge.errors import ConfigError
from kd_edge.runtime.host import CGROUP_ROOT, own_cgroup, own_cgroup_or_root, proc_status_kb

CFS_PERIOD_US = 100_000


@dataclass(frozen=True, kw_only=True)
class Constraints:
    """What one benchmark process is held to (validated by ``BenchConfig``)."""

    threads: int = 2
    cores: tuple[int, ...] | None = None
    memory_bytes: int | None = None
    cpu_quota: float | None = None  # in CPUs: 0.5 = half of one core's time


def parse_memory(text: str | None) -> int | None:
    """'512M', '1G', '300000k' or a number of bytes."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not match:
        raise ConfigError(f"--memory {text!r}: give a size such as 512M or 1G")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def parse_cores(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError as exc:
        raise ConfigError(f"--cores {text!r}: give core numbers separated by commas, such as 0,1") from exc


def apply_constraints(constraints: Constraints) -> dict:
    """Apply the constraints to the calling process; returns what was enforced and read back."""
    return {
        "cores": pin_cores(constraints.cores),
        "memory": cap_memory(constraints.memory_bytes),
        "cpu_quota": limit_cpu(constraints.cpu_quota),
        "threads": {"requested": constraints.threads, "enforced": True, "mechanism": "onnxruntime intra_op_num_threads"},
    }


def pin_cores(cores) -> dict:
    if cores is None:
        return {"requested": None, "enforced": False, "read_back": sorted(os.sched_getaffinity(0)), "reason": "not asked for"}
    os.sched_setaffinity(0, cores)
    seen = sorted(os.sched_getaffinity(0))
    return {"requested": list(cores), "enforced": seen == list(cores), "mechanism": "sched_setaffinity", "read_back": seen}


def cap_memory(limit: int | None) -> dict:
    """A cgroup memory limit where writable (resident memory, as on the board); else RLIMIT_AS headroom."""
    if limit is None:
        return {"requested": None, "enforced": False, "reason": "not asked for"}
    errors = []
    for write in (cgroup_v2_memory, cgroup_v1_memory):
        try:
            return {"requested": limit, "enforced": True, "mechanism": write(limit)}
        except OSError as exc:
            errors.append(f"{write.__name__}: {exc.strerror or exc}")
    # Address space already mapped (libraries, the runtime) does not count against the board's RAM.
    ceiling = (proc_status_kb("VmSize") or 0) * 1024 + limit
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    return {
        "requested": limit, "enforced": True, "mechanism": f"RLIMIT_AS at current address space + {limit} bytes",
        "note": "no writable cgroup memory controller (" + "; ".join(errors) + "); the cap limits new virtual memory, not resident memory",
    }




def cgroup_v2_memory(limit: int) -> str:
    group = enter_child_cgroup(cgroup_v2_base("memory"))
    (group / "memory.max").write_text(str(limit))
    (group / "memory.swap.max").write_text("0")
    (group / "cgroup.procs").write_text(str(os.getpid()))
    return f"cgroup v2 {group}/memory.max"


def cgroup_v1_memory(limit: int) -> str:
    group = enter_child_cgroup(CGROUP_ROOT / "memory" / own_cgroup("memory"))
    (group / "memory.limit_in_bytes").write_text(str(limit))
    (group / "cgroup.procs").write_text(str(os.getpid()))
    return f"cgroup v1 {group}/memory.limit_in_bytes"


def limit_cpu(quota: float | None) -> dict:
    if quota is None:
        return {"requested": None, "enforced": False, "reason": "not asked for"}
    quota_us = max(int(quota * CFS_PERIOD_US), 1000)
    errors = []
    for write in (cgroup_v2_quota, cgroup_v1_quota):
        try:
            where = write(quota_us)
            return {"requested": quota, "enforced": True, "mechanism": where, "period_us": CFS_PERIOD_US, "quota_us": quota_us}
        except OSError as exc:
            errors.append(f"{write.__name__}: {exc.strerror or exc}")
    return {"requested": quota, "enforced": False, "reason": "no writable cgroup CPU controller (" + "; ".join(errors) + ")"}




def enter_child_cgroup(parent: Path) -> Path:
    group = parent / f"kd-edge-{os.getpid()}"
    group.mkdir(exist_ok=True)
    return group


def cgroup_v2_base(controller: str = "cpu") -> Path:
    base = CGROUP_ROOT / own_cgroup(None)
    if not (base / "cgroup.controllers").is_file():
        base = CGROUP_ROOT / "unified" / own_cgroup(None)
    if controller not in (base / "cgroup.controllers").read_text().split():
        raise OSError(95, f"the {controller} controller is not enabled in this cgroup v2 hierarchy")
    return base


def cgroup_v2_quota(quota_us: int) -> str:
    group = enter_child_cgroup(cgroup_v2_base("cpu"))
    (group / "cpu.max").write_text(f"{quota_us} {CFS_PERIOD_US}")
    (group / "cgroup.procs").write_text(str(os.getpid()))
    return f"cgroup v2 {group}/cpu.max"


def cgroup_v1_quota(quota_us: int) -> str:
    group = enter_child_cgroup(CGROUP_ROOT / "cpu" / own_cgroup("cpu"))
    (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
    (group / "cpu.cfs_quota_us").write_text(str(quota_us))
    (group / "cgroup.procs").write_text(str(os.getpid()))
    return f"cgroup v1 {group}/cpu.cfs_quota_us"


def release_cgroups(pid: int) -> None:
    """Remove the cgroups a finished benchmark child created (empty once it has exited).

    The child was in the caller's cgroups, so its groups are children of the caller's.
    """
    parents = [CGROUP_ROOT / "cpu" / own_cgroup_or_root("cpu"), CGROUP_ROOT / "memory" / own_cgroup_or_root("memory")]
    parents += [CGROUP_ROOT / own_cgroup_or_root(None), CGROUP_ROOT / "unified" / own_cgroup_or_root(None)]
    for parent in parents:
        try:
            (parent / f"kd-edge-{pid}").rmdir()
        except OSError:
            pass


def throttling() -> dict | None:
    """CFS throttling counters of the process's cgroup (v1 or v2), or None where unreadable."""
    for path in (CGROUP_ROOT / "cpu" / own_cgroup_or_root("cpu") / "cpu.stat", CGROUP_ROOT / own_cgroup_or_root(None) / "cpu.stat"):
        try:
            stats = dict(line.split() for line in path.read_text().splitlines())
        except (OSError, ValueError):
            continue
        return {key: int(value) for key, value in stats.items() if key in ("nr_periods", "nr_throttled", "throttled_time", "throttled_usec")}
    return None





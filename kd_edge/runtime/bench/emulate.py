"""Emulate a constrained target inside a benchmark's child process, and read back what took effect.

Each constraint reports whether it was enforced, how, and what the process read
back afterwards; a constraint that cannot be enforced here is reported as not
enforced, never silently skipped.

* cores: ``os.sched_setaffinity`` on every thread the process has (the spawned
  child starts with BLAS pinned to one thread, so ONNX Runtime's pool, created
  later, inherits the mask); verified per thread after the measurement;
* memory: a cgroup memory limit (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``)
  where writable, a cap on resident memory as on the board; otherwise RLIMIT_AS
  on new virtual memory (an allocation past it fails with MemoryError);
* CPU quota: CFS bandwidth, v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``, where writable;
* threads: ONNX Runtime's ``intra_op_num_threads`` (set by the session; the
  threads the process runs are counted from /proc/self/task).

Cgroups: one leaf group per child process, ``kd-edge-<pid>``, below the caller's own
group (v2: with ``+cpu``/``+memory`` enabled in the caller's ``cgroup.subtree_control``;
v1: one per controller hierarchy). The caller removes it when the child has exited
(``release_cgroups``).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from kd_edge.runtime import host

CFS_PERIOD_US = 100_000
CGROUP_ROOT = host.CGROUP_ROOT
PAGE_BYTES = 4096  # cgroup memory limits are kept in whole pages
NOT_ASKED = {"requested": None, "enforced": False, "reason": "not asked for"}


@dataclass(frozen=True, kw_only=True)
class Constraints:
    """What one benchmark process is held to (validated by ``BenchSettings``)."""

    threads: int = 2
    cores: tuple[int, ...] | None = None
    memory_bytes: int | None = None
    cpu_quota: float | None = None  # in CPUs: 0.5 = half of one core's time


def apply_constraints(constraints: Constraints) -> dict:
    """Apply the constraints to the calling process; returns what was enforced and read back."""
    memory, cpu_quota = enter_cgroups(constraints.memory_bytes, constraints.cpu_quota)
    return {
        "cores": pin_cores(constraints.cores),
        "memory": memory,
        "cpu_quota": cpu_quota,
        "threads": {
            "requested": constraints.threads,
            "enforced": True,
            "mechanism": "onnxruntime intra_op_num_threads",
        },
    }


# --- cores --------------------------------------------------------------------------------------


def pin_cores(cores) -> dict:
    """Pin every thread of this process (``sched_setaffinity(0)`` alone pins only the calling thread)."""
    if cores is None:
        return {"requested": None, "enforced": False, "read_back": host.affinity(), "reason": "not asked for"}
    for tid in host.thread_ids():
        try:
            os.sched_setaffinity(tid, cores)
        except ProcessLookupError:  # the thread ended meanwhile
            pass
    return {
        "requested": list(cores),
        "enforced": host.affinity() == list(cores),
        "mechanism": "sched_setaffinity on every thread",
        "read_back": host.affinity(),
    }


def verify_pinning(report: dict) -> dict:
    """After the measurement: did every thread, ONNX Runtime's pool included, stay on the pinned cores?"""
    if report["requested"] is None:
        return report
    allowed = set(report["requested"])
    masks = {}
    for tid in host.thread_ids():
        try:
            masks[tid] = os.sched_getaffinity(tid)
        except ProcessLookupError:
            pass
    stray = sorted(tid for tid, mask in masks.items() if not mask <= allowed)
    return {
        **report,
        "threads_checked": len(masks),
        "enforced": report["enforced"] and not stray,
        "unpinned_threads": stray,
    }


# --- memory and CPU quota through cgroups -----------------------------------------------------------


def enter_cgroups(memory_bytes: int | None, cpu_quota: float | None) -> tuple[dict, dict]:
    """Move this process into leaf cgroup(s) holding the limits; returns (memory report, quota report).

    cgroup v2 first (one hierarchy, one leaf for both), then v1 (one leaf per controller);
    a memory cap that no cgroup takes falls back to RLIMIT_AS, a quota is reported as not enforced.
    """
    if memory_bytes is None and cpu_quota is None:
        return dict(NOT_ASKED), dict(NOT_ASKED)
    quota_us = None if cpu_quota is None else max(int(cpu_quota * CFS_PERIOD_US), 1000)
    try:
        return cgroup_v2(memory_bytes, quota_us, cpu_quota)
    except OSError as exc:
        v2_error = f"cgroup v2: {exc.strerror or exc}"
    memory = quota = dict(NOT_ASKED)
    if memory_bytes is not None:
        try:
            memory = cgroup_v1_memory(memory_bytes)
        except OSError as exc:
            memory = rlimit_memory(memory_bytes, f"{v2_error}; cgroup v1: {exc.strerror or exc}")
    if quota_us is not None:
        try:
            quota = cgroup_v1_quota(quota_us, cpu_quota)
        except OSError as exc:
            quota = {
                "requested": cpu_quota,
                "enforced": False,
                "reason": f"no writable cgroup CPU controller ({v2_error}; cgroup v1: {exc.strerror or exc})",
            }
    return memory, quota


def leaf_name() -> str:
    return f"kd-edge-{os.getpid()}"


def cgroup_v2(memory_bytes, quota_us, cpu_quota) -> tuple[dict, dict]:
    parent = cgroup_v2_parent()
    needed = [name for name, value in (("memory", memory_bytes), ("cpu", quota_us)) if value is not None]
    available = (parent / "cgroup.controllers").read_text().split()
    missing = [name for name in needed if name not in available]
    if missing:
        raise OSError(95, f"the {', '.join(missing)} controller(s) are not available in {parent}")
    enabled = (parent / "cgroup.subtree_control").read_text().split()
    wanted = [f"+{name}" for name in needed if name not in enabled]
    if wanted:
        (parent / "cgroup.subtree_control").write_text(" ".join(wanted))
    leaf = parent / leaf_name()
    leaf.mkdir(exist_ok=True)
    if memory_bytes is not None:
        (leaf / "memory.max").write_text(str(memory_bytes))
        if (leaf / "memory.swap.max").exists():
            (leaf / "memory.swap.max").write_text("0")
    if quota_us is not None:
        (leaf / "cpu.max").write_text(f"{quota_us} {CFS_PERIOD_US}")
    (leaf / "cgroup.procs").write_text(str(os.getpid()))
    memory = confirmed(
        {"requested": memory_bytes, "mechanism": f"cgroup v2 {leaf}/memory.max"},
        read_int(leaf / "memory.max"),
        memory_bytes,
        PAGE_BYTES,
    )
    quota = confirmed(
        {"requested": cpu_quota, "mechanism": f"cgroup v2 {leaf}/cpu.max", "period_us": CFS_PERIOD_US,
         "quota_us": quota_us},
        read_v2_quota(leaf / "cpu.max"),
        quota_us and quota_us / CFS_PERIOD_US,
        1e-6,
    )  # fmt: skip
    return (memory if memory_bytes is not None else dict(NOT_ASKED)), (
        quota if quota_us is not None else dict(NOT_ASKED)
    )


def cgroup_v1_memory(memory_bytes: int) -> dict:
    leaf = v1_leaf("memory")
    (leaf / "memory.limit_in_bytes").write_text(str(memory_bytes))
    (leaf / "cgroup.procs").write_text(str(os.getpid()))
    return confirmed(
        {"requested": memory_bytes, "mechanism": f"cgroup v1 {leaf}/memory.limit_in_bytes"},
        read_int(leaf / "memory.limit_in_bytes"),
        memory_bytes,
        PAGE_BYTES,
    )


def cgroup_v1_quota(quota_us: int, cpu_quota: float) -> dict:
    leaf = v1_leaf("cpu")
    (leaf / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
    (leaf / "cpu.cfs_quota_us").write_text(str(quota_us))
    (leaf / "cgroup.procs").write_text(str(os.getpid()))
    period, read_quota = read_int(leaf / "cpu.cfs_period_us"), read_int(leaf / "cpu.cfs_quota_us")
    return confirmed(
        {"requested": cpu_quota, "mechanism": f"cgroup v1 {leaf}/cpu.cfs_quota_us", "period_us": CFS_PERIOD_US,
         "quota_us": quota_us},
        read_quota / period if period and read_quota is not None else None,
        quota_us / CFS_PERIOD_US,
        1e-6,
    )  # fmt: skip


def confirmed(report: dict, read_back, written, tolerance) -> dict:
    """``report`` marked enforced only when what the kernel reports back is what was written (within
    ``tolerance``: the kernel rounds a memory limit down to whole pages)."""
    enforced = read_back is not None and written is not None and abs(read_back - written) <= tolerance
    report = {**report, "enforced": enforced, "read_back": read_back}
    if not enforced:
        report["reason"] = f"wrote {written} but the kernel reports {read_back}: the limit did not take"
    return report


def cgroup_v2_parent() -> Path:
    """The caller's own v2 group (pure v2, or the 'unified' mount of a hybrid v1/v2 system)."""
    own = host.own_cgroup(None)
    for base in (CGROUP_ROOT / own, CGROUP_ROOT / "unified" / own):
        if (base / "cgroup.controllers").is_file():
            return base
    raise OSError(2, "no cgroup v2 hierarchy")


def v1_leaf(controller: str) -> Path:
    leaf = CGROUP_ROOT / controller / host.own_cgroup(controller) / leaf_name()
    leaf.mkdir(exist_ok=True)
    return leaf


def rlimit_memory(limit: int, why_not_cgroup: str) -> dict:
    # Address space already mapped (libraries, the runtime) does not count against the board's RAM.
    ceiling = (host.proc_status_kb("VmSize") or 0) * 1024 + limit
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    report = {
        "requested": limit,
        "mechanism": f"RLIMIT_AS at current address space + {limit} bytes",
        "note": f"no writable cgroup memory controller ({why_not_cgroup}); "
        "the cap limits new virtual memory, not resident memory",
    }
    return confirmed(report, resource.getrlimit(resource.RLIMIT_AS)[0], ceiling, 0)


def read_int(path: Path) -> int | None:
    text = host.read_text(path)
    return int(text) if text and text.isdigit() else None


def read_v2_quota(path: Path) -> float | None:
    """``cpu.max`` ("quota period") as CPUs; None for "max" or an unreadable file."""
    parts = (host.read_text(path) or "").split()
    return int(parts[0]) / int(parts[1]) if len(parts) == 2 and parts[0].isdigit() else None


def release_cgroups(pid: int) -> None:
    """Remove the leaf groups a finished benchmark child created (empty once it has exited).

    The child was in the caller's cgroups, so its groups are children of the caller's.
    """
    parents = [
        CGROUP_ROOT / "cpu" / host.own_cgroup_or_root("cpu"),
        CGROUP_ROOT / "memory" / host.own_cgroup_or_root("memory"),
    ]
    parents += [CGROUP_ROOT / host.own_cgroup_or_root(None), CGROUP_ROOT / "unified" / host.own_cgroup_or_root(None)]
    for parent in parents:
        try:
            (parent / f"kd-edge-{pid}").rmdir()
        except OSError:
            pass


# --- throttling ----------------------------------------------------------------------------------

THROTTLING_KEYS = ("nr_periods", "nr_throttled", "throttled_time", "throttled_usec")


def throttling() -> dict | None:
    """CFS throttling counters of the process's cgroup (v1 or v2), or None where unreadable."""
    v2 = [
        CGROUP_ROOT / host.own_cgroup_or_root(None) / "cpu.stat",
        CGROUP_ROOT / "unified" / host.own_cgroup_or_root(None) / "cpu.stat",
    ]
    for path in [CGROUP_ROOT / "cpu" / host.own_cgroup_or_root("cpu") / "cpu.stat", *v2]:
        try:
            stats = dict(line.split() for line in path.read_text().splitlines())
        except (OSError, ValueError):
            continue
        counters = {key: int(value) for key, value in stats.items() if key in THROTTLING_KEYS}
        if counters:
            return counters
    return None


def throttling_delta(before: dict | None, after: dict | None) -> dict | None:
    """What the cgroup's counters gained during the measurement (they count since the group was made)."""
    if before is None or after is None:
        return None
    return {key: after[key] - before.get(key, 0) for key in after}

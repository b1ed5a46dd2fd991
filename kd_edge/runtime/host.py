"""Facts about the machine and this process, read from /proc and /sys in one place.

CPU model and ISA flags, cores and affinity, cgroup membership and limits, memory
figures of the current process. Every reader returns None (or an empty value)
where the file does not exist, so the same code runs on Linux x86, Linux ARM and
in containers that hide parts of /sys.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")

# The ISA extensions that decide which ONNX Runtime kernels run: VNNI / dot product for
# INT8, BF16 / AMX for bfloat16, SVE on newer ARM cores.
REPORTED_ISA_FLAGS = frozenset(
    {
        "avx2",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "amx_int8",
        "amx_bf16",
        "asimddp",
        "i8mm",
        "bf16",
        "sve",
    }
)
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def read_text(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_flags() -> set[str]:
    """ISA flags of the first CPU (x86 ``flags``, ARM ``Features``)."""
    text = read_text("/proc/cpuinfo") or ""
    return {
        flag
        for line in text.splitlines()
        if line.startswith(("flags", "Features"))
        for flag in line.split(":", 1)[1].split()
    }


def cpu_model() -> str:
    for line in (read_text("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def has_native_bf16() -> bool:
    """True where the CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX, ARM BF16)."""
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def affinity() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def governor() -> str | None:
    return read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def proc_status_kb(field: str) -> int | None:
    """A ``kB`` figure of /proc/self/status (VmSize, VmHWM, VmRSS...) for this process."""
    for line in (read_text("/proc/self/status") or "").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def thread_count() -> int:
    """Threads this process runs now (its entries in /proc/self/task)."""
    return len(os.listdir("/proc/self/task"))


def thread_ids() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/task")]


def own_cgroup(controller: str | None) -> str:
    """This process's cgroup path for a v1 controller, or its v2 path when controller is None."""
    for line in (read_text("/proc/self/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (controller and controller in controllers.split(",")):
            return path.lstrip("/")
    raise OSError(2, f"no {controller or 'v2'} cgroup in /proc/self/cgroup")


def own_cgroup_or_root(controller: str | None) -> str:
    try:
        return own_cgroup(controller)
    except OSError:
        return "."


def cgroup_limits() -> dict[str, str | None]:
    """The CPU and memory limits of the cgroup hierarchy's root, as the files hold them."""
    return {
        "cpu.max": read_text(CGROUP_ROOT / "cpu.max"),
        "cpu.cfs_quota_us": read_text(CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us"),
        "memory.max": read_text(CGROUP_ROOT / "memory.max"),
        "memory.limit_in_bytes": read_text(CGROUP_ROOT / "memory" / "memory.limit_in_bytes"),
    }


def describe() -> dict:
    """The host as a benchmark report records it."""
    return {
        "cpu_model": cpu_model(),
        "isa_flags": sorted(cpu_flags() & REPORTED_ISA_FLAGS),
        "machine": platform.machine(),
        "cores_online": os.cpu_count(),
        "affinity": affinity(),
        "governor": governor(),
        "cgroup_limits": cgroup_limits(),
        "memory_total_mb": meminfo_mb("MemTotal"),
    }


def meminfo_mb(field: str) -> float | None:
    for line in (read_text("/proc/meminfo") or "").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None

"""Measuring a model under an emulated board (``kd-edge bench``), and asking it (``kd-edge predict``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kd_edge.settings.fields import knob, require
from kd_edge.settings.parse import core_list, memory_bytes


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """How models are timed: settings, repetitions and the emulated board's constraints."""

    threads: tuple[int, ...] = knob((2,), "ONNX Runtime intra-op threads (repeatable).", short="-t")
    batch_sizes: tuple[int, ...] = knob((1,), "Batch sizes (repeatable).", short="-b")
    warmup: int = knob(20, "Untimed runs before timing, in each process.")
    runs: int = knob(300, "Timed runs per model and setting, spread over the rounds.")
    duration: float | None = knob(None, "Seconds per model and setting instead of --runs.", none="--runs")
    rounds: int = knob(3, "Interleaved rounds; each round measures every model once, in a fresh process.")
    cores: tuple[int, ...] | None = knob(
        None, "Pin to these cores, e.g. 0,1 (sched_setaffinity).", parse=core_list, none="the profile's, else any"
    )
    memory_bytes: int | None = knob(
        None, "Memory cap, e.g. 512M (cgroup memory limit, else RLIMIT_AS).", parse=memory_bytes, none="the profile's"
    )
    cpu_quota: float | None = knob(
        None, "CPU bandwidth in CPUs, e.g. 0.5 (cgroup cpu.max / cfs_quota_us where writable).", none="no quota"
    )
    profile: str | None = knob(
        None,
        "Device profile (`kd-edge profiles`): enforces its cores and RAM, projects latency.",
        none="a bundle's own board (its model.json), else host",
    )
    rate: float | None = knob(
        None, "Drone loop: frames per second; reports deadline misses and jitter.", none="no drone loop"
    )

    def __post_init__(self):
        require(
            bool(self.threads) and min(self.threads) >= 1, f"--threads must be at least 1, got {list(self.threads)}"
        )
        require(
            bool(self.batch_sizes) and min(self.batch_sizes) >= 1,
            f"--batch-size must be at least 1, got {list(self.batch_sizes)}",
        )
        require(
            self.runs >= 1 and self.rounds >= 1 and self.warmup >= 0,
            "--runs and --rounds must be at least 1, --warmup at least 0",
        )
        require(
            self.duration is None or self.duration > 0,
            f"--duration is in seconds and must be positive, got {self.duration}",
        )
        require(
            self.rate is None or self.rate > 0, f"--rate is in frames per second and must be positive, got {self.rate}"
        )
        require(
            self.cpu_quota is None or self.cpu_quota > 0,
            f"--cpu-quota is a number of CPUs and must be positive, got {self.cpu_quota}",
        )
        require(
            self.memory_bytes is None or self.memory_bytes > 0, f"--memory must be positive, got {self.memory_bytes}"
        )
        if self.cores is not None:
            allowed = os.sched_getaffinity(0)
            outside = sorted(set(self.cores) - allowed)
            require(
                not outside,
                f"--cores {','.join(map(str, self.cores))}: cores {outside} are not available to this process (it "
                f"may use {sorted(allowed)})",
            )


@dataclass(frozen=True, kw_only=True)
class PredictSettings:
    top_k: int = knob(3, "Classes shown per input.", short="-k")
    threads: int = knob(1, "ONNX Runtime intra-op threads.")
    threshold: float | None = knob(
        None, "A detector's score threshold, 0-1.", none="the one its training chose on validation (in its card)"
    )

    def __post_init__(self):
        require(self.top_k >= 1, f"--top-k must be at least 1, got {self.top_k}")
        require(
            self.threshold is None or 0 < self.threshold < 1, f"--threshold must be in (0, 1), got {self.threshold}"
        )
        require(self.threads >= 1, f"--threads must be at least 1, got {self.threads}")

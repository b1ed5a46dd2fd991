"""Device profiles of drone-class boards: what a benchmark can enforce here, and what it can only project.

Enforced on the host: thread count, pinned cores, memory cap (and a CPU quota where
cgroups allow). Projected: the on-device latency, scaled from the host's measured
per-core throughput to the board's per-core peak. A projection is labelled as one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kd_edge.errors import ConfigError


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    cores: int | None  # None: the host's own
    clock_ghz: float | None
    ram_mb: int | None
    peak_gflops_per_core: float | None  # FP32 peak; None for the host (measured instead)
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


# Peak FP32 per core = FP32 FLOP per cycle x clock. The per-cycle figures are leads
# from public sources (named per profile), not measurements of ours.
PROFILES = {
    "host": DeviceProfile(
        "host", "this machine, unconstrained but for --threads/--cores", None, None, None, None, "measured"
    ),
    "rpi4": DeviceProfile(
        "rpi4",
        "Raspberry Pi 4 Model B (4x Cortex-A72 @ 1.5 GHz, 4 GB)",
        4,
        1.5,
        4096,
        12.0,
        "A72: 8 FP32 FLOP/cycle (15.9 GFLOPS measured on one core at 2.0 GHz, wlog.flatlib.jp 2015/10/30)",
    ),
    "rpi5": DeviceProfile(
        "rpi5",
        "Raspberry Pi 5 (4x Cortex-A76 @ 2.4 GHz, 8 GB)",
        4,
        2.4,
        8192,
        38.4,
        "A76: two 128-bit FMA pipes, 16 FP32 FLOP/cycle (Arm Cortex-A76 software optimization guide); not measured",
    ),
    "rpi-zero-2w": DeviceProfile(
        "rpi-zero-2w",
        "Raspberry Pi Zero 2 W (4x Cortex-A53 @ 1.0 GHz, 512 MB)",
        4,
        1.0,
        512,
        8.0,
        "A53: at most 8 FP32 FLOP/cycle, an upper bound for this in-order core",
    ),
    "jetson-nano-cpu": DeviceProfile(
        "jetson-nano-cpu",
        "NVIDIA Jetson Nano CPU (4x Cortex-A57 @ 1.43 GHz, 4 GB shared)",
        4,
        1.43,
        4096,
        11.4,
        "A57: 8 FP32 FLOP/cycle assumed (ncnn's measured 6.4 GFLOP/s on MobileNetV2 rules out 4)",
    ),
    "cortex-a53": DeviceProfile(
        "cortex-a53",
        "generic Cortex-A53 board (4x A53 @ 1.2 GHz, 1 GB)",
        4,
        1.2,
        1024,
        9.6,
        "A53: at most 8 FP32 FLOP/cycle, an upper bound",
    ),
}


def get_profile(name: str) -> DeviceProfile:
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)} (see `kd-edge profiles`)")
    return PROFILES[name]

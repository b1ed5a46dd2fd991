"""Device profiles of drone-class boards: what a benchmark can enforce here, and what it can only project.

Enforced on the host: thread count, pinned cores, memory cap (and a CPU quota where
cgroups allow). Projected: a board's single-thread latency, scaled from the host's
measured per-core throughput to the board's per-core peak *of the model's data type*
(float32 for an FP32 model, int8 for an INT8 one). A projection is labelled as one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kd_edge.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    """A board: its cores and memory (enforced here) and its per-core arithmetic peaks (for projections).

    Peaks are per cycle, from public sources named in ``source``: float32 FLOP (a fused
    multiply-add counts two) and int8 operations (likewise), the latter with the int8 dot
    product instructions (SDOT/UDOT) where the core has them, NEON widening multiply-adds
    where it does not.
    """

    name: str
    description: str
    cores: int | None  # None: the host's own
    clock_ghz: float | None
    ram_mb: int | None
    fp32_flop_per_cycle: float | None  # None for the host: measured instead
    int8_op_per_cycle: float | None
    dot_product: bool | None
    source: str
    # Calibrated on published board figures (benchmarks/projection_check.py, per data type): the share of
    # the board's peak that its measured latencies imply, relative to the host's measured throughput, and
    # the serial fraction of Amdahl's law that its 1- to 4-thread figures imply.
    efficiency: dict[str, float] | None = None
    serial_fraction: dict[str, float] | None = None
    calibration: str = ""

    def peak_gops_per_core(self, dtype: str) -> float | None:
        """Per-core peak in G(FL)OP/s for "fp32" or "int8"; None for the host."""
        per_cycle = self.fp32_flop_per_cycle if dtype == "fp32" else self.int8_op_per_cycle
        return None if per_cycle is None or self.clock_ghz is None else per_cycle * self.clock_ghz

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "peak_gops_per_core": {dtype: self.peak_gops_per_core(dtype) for dtype in ("fp32", "int8")},
        }


A72_SOURCE = (
    "Cortex-A72: 8 float32 FLOP/cycle (15.9 GFLOPS measured on one core at 2.0 GHz, wlog.flatlib.jp 2015/10/30); "
    "no int8 dot product (Armv8.0): int8 by NEON widening multiply-adds, 8 lanes per instruction, so 16 int8 ops/cycle"
)
NCNN = "ncnn's benchncnn tables (Tencent/ncnn benchmark/README.md)"
# Fitted on 9 FP32 and 4 INT8 networks with published 1- and 4-thread figures (benchmarks/results/projection.md;
# left out one at a time, 25 of 26 projections land within 2x of the published figure).
A72_CALIBRATION = {
    "efficiency": {"fp32": 0.567, "int8": 0.376},
    "serial_fraction": {"fp32": 0.466, "int8": 0.354},
}
A53_CALIBRATION = {
    "efficiency": {"fp32": 0.321, "int8": 0.218},
    "serial_fraction": {"fp32": 0.298, "int8": 0.206},
}
A53_SOURCE = (
    "Cortex-A53: at most 8 float32 FLOP/cycle and 16 int8 ops/cycle (NEON widening multiply-adds, no dot product), "
    "upper bounds for this in-order core"
)

PROFILES = {
    "host": DeviceProfile(
        name="host", description="this machine, unconstrained but for --threads/--cores", cores=None, clock_ghz=None,
        ram_mb=None, fp32_flop_per_cycle=None, int8_op_per_cycle=None, dot_product=None, source="measured",
    ),
    "rpi4": DeviceProfile(
        name="rpi4", description="Raspberry Pi 4 Model B (4x Cortex-A72 @ 1.5 GHz, 4 GB)", cores=4, clock_ghz=1.5,
        ram_mb=4096, fp32_flop_per_cycle=8, int8_op_per_cycle=16, dot_product=False, source=A72_SOURCE,
        **A72_CALIBRATION, calibration=f"Raspberry Pi 4 figures of {NCNN}, 13 networks",
    ),
    "rpi5": DeviceProfile(
        name="rpi5", description="Raspberry Pi 5 (4x Cortex-A76 @ 2.4 GHz, 8 GB)", cores=4, clock_ghz=2.4, ram_mb=8192,
        fp32_flop_per_cycle=16, int8_op_per_cycle=64, dot_product=True,
        source="Cortex-A76 software optimization guide: two 128-bit FMA pipes (16 float32 FLOP/cycle) and SDOT on both "
        "(2 x 16 int8 multiply-adds, 64 ops/cycle); not measured by us",
        **A72_CALIBRATION, calibration="none of its own: the Raspberry Pi 4's (Cortex-A72), borrowed",
    ),
    "rpi-zero-2w": DeviceProfile(
        name="rpi-zero-2w", description="Raspberry Pi Zero 2 W (4x Cortex-A53 @ 1.0 GHz, 512 MB)", cores=4,
        clock_ghz=1.0,
        ram_mb=512, fp32_flop_per_cycle=8, int8_op_per_cycle=16, dot_product=False, source=A53_SOURCE,
        **A53_CALIBRATION, calibration=f"Raspberry Pi Zero 2 W figures of {NCNN}, 13 networks",
    ),
    "jetson-nano-cpu": DeviceProfile(
        name="jetson-nano-cpu", description="NVIDIA Jetson Nano CPU (4x Cortex-A57 @ 1.43 GHz, 4 GB shared)", cores=4,
        clock_ghz=1.43, ram_mb=4096, fp32_flop_per_cycle=8, int8_op_per_cycle=16, dot_product=False,
        source="Cortex-A57: 8 float32 FLOP/cycle assumed (ncnn's measured 6.4 GFLOP/s on MobileNetV2 rules out 4); "
        "no int8 dot product (Armv8.0)",
        **A72_CALIBRATION, calibration="none of its own: the Raspberry Pi 4's (Cortex-A72, also Armv8.0), borrowed",
    ),
    "cortex-a53": DeviceProfile(
        name="cortex-a53", description="generic Cortex-A53 board (4x A53 @ 1.2 GHz, 1 GB)", cores=4, clock_ghz=1.2,
        ram_mb=1024, fp32_flop_per_cycle=8, int8_op_per_cycle=16, dot_product=False, source=A53_SOURCE,
        **A53_CALIBRATION, calibration="none of its own: the Raspberry Pi Zero 2 W's (Cortex-A53), borrowed",
    ),
}  # fmt: skip


def get_profile(name: str) -> DeviceProfile:
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)} (see `kd-edge profiles`)")
    return PROFILES[name]

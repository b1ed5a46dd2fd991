"""A board's latency, projected from the host's. A projection is labelled as one.

1. One thread: the host's single-thread p50 x (the host's per-core matrix-product throughput in ONNX
   Runtime / the board's per-core peak x the board's efficiency), per data type. The efficiency is
   calibrated on published board figures (without it the projection assumed the board reaches its
   theoretical peak, and was optimistic by that much).
2. More threads: Amdahl's law, t(n) = t(1) x (s + (1 - s) / n), with the board's serial fraction s per
   data type, calibrated on the same boards' published 1- and 4-thread figures.

Both calibrations, and how far the projections land from published figures of other networks, are in
benchmarks/results/projection.md (benchmarks/projection_check.py).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from kd_edge.errors import KdEdgeError
from kd_edge.interrupt import stop_if_requested
from kd_edge.runtime.bench.child import in_child
from kd_edge.runtime.bench.profiles import DeviceProfile
from kd_edge.runtime.session import OnnxModel

CALIBRATION_SIZE = 256  # side of the matrices of the host calibration kernels (kernels/matmul_*.onnx)
KERNELS = Path(__file__).with_name("kernels")


def host_throughput_per_core() -> dict[str, float]:
    """This machine's per-core matrix-product throughput in ONNX Runtime, G(FL)OP/s, for "fp32" and "int8".

    Measured in a spawned child pinned to one core, in single-threaded sessions: the
    same kernels (MLAS) the models' Conv, Gemm and their INT8 forms run on.
    """
    return host_throughput_rounds(1, seconds=0.4)[0]


def host_throughput_rounds(rounds: int, seconds: float = 0.2) -> list[dict[str, float]]:
    """``rounds`` measurements of ``host_throughput_per_core``, one after the other in one child: their spread
    is the measurement's noise."""
    throughput, process = in_child(multiprocessing.get_context("spawn"), gemm_throughput, rounds, seconds)
    if throughput is None:
        stop_if_requested("measuring this host's throughput")  # Ctrl-C reached the child too
        raise KdEdgeError(f"the host's throughput measurement died (exit {process.exitcode}); run the command again")
    return throughput


def gemm_throughput(rounds: int, seconds: float) -> list[dict[str, float]]:
    import onnxruntime as ort

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    n = CALIBRATION_SIZE
    feeds = {
        "fp32": {
            "a": rng.standard_normal((n, n), dtype=np.float32),
            "b": rng.standard_normal((n, n), dtype=np.float32),
        },
        "int8": {
            "a": rng.integers(0, 256, (n, n), dtype=np.uint8),
            "b": rng.integers(-128, 128, (n, n), dtype=np.int8),
        },
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {
        dtype: ort.InferenceSession(str(KERNELS / f"matmul_{dtype}.onnx"), options, providers=["CPUExecutionProvider"])
        for dtype in feeds
    }
    for dtype, session in sessions.items():
        for _ in range(5):
            session.run(None, feeds[dtype])

    def measure(dtype: str) -> float:
        repeats, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            sessions[dtype].run(None, feeds[dtype])
            repeats += 1
        return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9

    return [{dtype: measure(dtype) for dtype in feeds} for _ in range(rounds)]


def data_type(model: OnnxModel) -> str:
    """The arithmetic most of a model's work runs in: int8 once it is quantized (the nodes kept in FP32 are few)."""
    return "int8" if model.card.quantization is not None else "fp32"


PROJECTED_THREADS = (1, 2, 4)


def amdahl(serial_fraction: float, threads: int) -> float:
    """The share of the 1-thread latency left at ``threads`` threads."""
    return serial_fraction + (1 - serial_fraction) / threads


def board_factor(profile: DeviceProfile, dtype: str, host_throughput: dict) -> float:
    """How many times longer the board's single thread takes than the host's on work in ``dtype``: the host's
    measured per-core throughput over the board's peak x its calibrated efficiency."""
    efficiency = (profile.efficiency or {}).get(dtype, 1.0)
    return host_throughput[dtype] / (profile.peak_gops_per_core(dtype) * efficiency)


def thread_scaling(profile: DeviceProfile, dtype: str, threads: int) -> float:
    """The share of the board's 1-thread latency left at ``threads`` threads (Amdahl, calibrated per data type)."""
    return amdahl((profile.serial_fraction or {}).get(dtype, 1.0), threads)


def projection(
    host_one_thread_ms: float | None, threads: int, dtype: str, profile: DeviceProfile, host_throughput: dict
) -> dict:
    """The board's latency at ``threads`` threads (and at 1, 2 and 4, as far as it has cores), from the host's
    single-thread latency of the same model and batch size."""
    if profile.clock_ghz is None:
        return {"enforced": False, "reason": "host profile: nothing to project"}
    if not host_throughput:
        return {"enforced": False, "reason": "no projection asked for (the host's throughput was not measured)"}
    if host_one_thread_ms is None:
        return {"enforced": False, "reason": "no 1-thread measurement of this model and batch size to project from"}
    efficiency = (profile.efficiency or {}).get(dtype, 1.0)
    factor = board_factor(profile, dtype, host_throughput)
    serial = (profile.serial_fraction or {}).get(dtype, 1.0)

    def at(n: int) -> float:
        return host_one_thread_ms * factor * thread_scaling(profile, dtype, n)

    result = {
        "enforced": False,
        "projected_p50_ms": at(threads) if threads <= profile.cores else None,
        "by_threads": {n: at(n) for n in PROJECTED_THREADS if n <= profile.cores},
        "factor": factor,
        "thread_scaling": thread_scaling(profile, dtype, threads),
        "data_type": dtype,
        "method": (
            f"PROJECTION, not a measurement: host 1-thread p50 {host_one_thread_ms:.4g} ms x (host {dtype} "
            f"matrix-product throughput {host_throughput[dtype]:.1f} G(FL)OP/s per core, measured in ONNX Runtime / "
            f"{profile.name} {dtype} peak {profile.peak_gops_per_core(dtype):.1f} G(FL)OP/s per core x efficiency "
            f"{efficiency:.2f}) x Amdahl scaling (serial fraction {serial:.2f}) at {threads} thread(s). Peak from: "
            f"{profile.source}. Calibration: {profile.calibration or 'none'}. Verify on the board."
        ),
    }
    if threads > profile.cores:
        result["reason"] = f"{profile.name} has {profile.cores} cores: nothing projected beyond them"
    return result

"""A board's latency, projected from the host's: the host's per-core matrix-product throughput in ONNX
Runtime against the board's per-core peak, per data type. A projection is labelled as one."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from kd_edge.runtime.bench.child import single_threaded_blas
from kd_edge.runtime.bench.profiles import DeviceProfile
from kd_edge.runtime.session import OnnxModel

CALIBRATION_SIZE = 256  # side of the matrices of the host calibration kernels (kernels/matmul_*.onnx)
KERNELS = Path(__file__).with_name("kernels")


def host_throughput_per_core() -> dict[str, float]:
    """This machine's per-core matrix-product throughput in ONNX Runtime, G(FL)OP/s, for "fp32" and "int8".

    Measured in a spawned child pinned to one core, in single-threaded sessions: the
    same kernels (MLAS) the models' Conv, Gemm and their INT8 forms run on.
    """
    context = multiprocessing.get_context("spawn")
    with single_threaded_blas(), context.Pool(1) as pool:
        return pool.apply(gemm_throughput)


def gemm_throughput(seconds: float = 0.4) -> dict[str, float]:
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
    throughput = {}
    for dtype, feed in feeds.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            str(KERNELS / f"matmul_{dtype}.onnx"), options, providers=["CPUExecutionProvider"]
        )
        for _ in range(5):
            session.run(None, feed)
        repeats, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            session.run(None, feed)
            repeats += 1
        throughput[dtype] = 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9
    return throughput


def data_type(model: OnnxModel) -> str:
    """The arithmetic most of a model's work runs in: int8 once it is quantized (the nodes kept in FP32 are few)."""
    return "int8" if model.card.quantization is not None else "fp32"


def projection(
    p50_ms: float, threads: int, dtype: str, profile: DeviceProfile, host_throughput: dict[str, float]
) -> dict:
    """The board's single-thread latency, scaled from the host's by per-core throughput of the model's data type."""
    if profile.clock_ghz is None:
        return {"enforced": False, "reason": "host profile: nothing to project"}
    if threads != 1:
        return {
            "enforced": False,
            "reason": "projected for 1 thread only (add --threads 1): how latency scales with threads depends on "
            "the board's caches and memory, which the host does not share",
        }
    board = profile.peak_gops_per_core(dtype)
    factor = host_throughput[dtype] / board
    return {
        "enforced": False,
        "projected_p50_ms": p50_ms * factor,
        "factor": factor,
        "data_type": dtype,
        "method": (
            f"PROJECTION, not a measurement: host 1-thread p50 x (host {dtype} matrix-product throughput "
            f"{host_throughput[dtype]:.1f} G(FL)OP/s per core, measured in ONNX Runtime / {profile.name} {dtype} peak "
            f"{board:.1f} G(FL)OP/s per core, from: {profile.source}). Assumes the model reaches the same fraction of "
            "peak on both and that per-call overhead scales alike; verify on the board."
        ),
    }

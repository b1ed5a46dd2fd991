"""Where and how a training process computes: device, precision, threads, seeding, memory layout.

Library functions leave process-wide state as they found it (``torch_threads`` and ``seeded``
restore what they change); the command line alone sets the process-wide allocator options
(``keep_freed_memory``), which an evaluation lowers for its own duration (``evaluation_memory``).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
from torch import nn

from kd_edge.errors import ConfigError
from kd_edge.runtime.host import has_native_bf16


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


# The mmap threshold a training command set (``keep_freed_memory``); None: glibc's own, left alone.
_KEPT_THRESHOLD: int | None = None
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
EVALUATION_MMAP_THRESHOLD = 256 * 1024


@functools.cache
def glibc_function(name: str):
    """glibc's function ``name`` (``mallopt``, ``malloc_trim``), or None where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> None:
    """Process-wide: stop glibc from returning each step's activations to the OS only to fault them in again.

    By default glibc serves blocks over its (adaptive) mmap threshold with fresh
    mmaps and trims the heap top on free; a training step allocates and frees
    tens of MB of activations, so every step paid for page faults. Raising both
    thresholds made a Fashion-MNIST teacher epoch about 20 % faster here
    (benchmarks/RESULTS.md). No effect and no harm where the C library is not glibc.
    """
    global _KEPT_THRESHOLD
    mallopt = glibc_function("mallopt")
    if mallopt is None:
        return
    _KEPT_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit
    mallopt(M_MMAP_THRESHOLD, _KEPT_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024)


def give_back_freed_memory() -> None:
    """When a training command's work is done, return the free memory its training kept (``keep_freed_memory``)
    to the OS.

    At exit, torch's libraries' destructors fault in about 110 MB of their pages: on top of the kept heap, that
    was the whole run's peak RSS (a float32 Fashion-MNIST run: 930 MB, 543 MB of it private memory).
    """
    malloc_trim = glibc_function("malloc_trim") if _KEPT_THRESHOLD is not None else None
    if malloc_trim is not None:
        malloc_trim(0)


@contextlib.contextmanager
def evaluation_memory():
    """Inside a training command (``keep_freed_memory``), serve the block's large blocks from fresh mmaps that
    go back to the OS when freed; elsewhere change nothing.

    An evaluation in float32 after training steps in bf16 asks for blocks of other sizes than the steps left
    free in the heap, so the heap grew by 0-250 MB in an evaluation, by chance of its layout: the peak RSS of
    the same run varied by 300 MB. Evaluations are a small part of the work, so their page faults cost little
    (benchmarks/results/training-memory-bf16-host.md)."""
    mallopt = glibc_function("mallopt") if _KEPT_THRESHOLD is not None else None
    if mallopt is None:
        yield
        return
    mallopt(M_MMAP_THRESHOLD, EVALUATION_MMAP_THRESHOLD)
    try:
        yield
    finally:
        mallopt(M_MMAP_THRESHOLD, _KEPT_THRESHOLD)


def resolve_precision(name: str, device: torch.device, models: tuple[nn.Module, ...] = ()) -> str:
    """``auto`` trains in bfloat16 where the hardware supports it natively, else in float32; on a CPU,
    ``models`` with depthwise (grouped) convolutions stay in float32.

    Only the forward and backward passes run in bfloat16 (``torch.autocast``): weights,
    optimiser state and checkpoints stay float32, and accuracy is measured in float32.
    On a CPU with native bf16, autocast trained the plain-convolution networks 1.5-2.0x faster
    and the depthwise ones slower (mobilenet-v3-small 0.41-0.46x, mobile-small 0.91x, mobilenet-v2
    0.97x: benchmarks/precision_speed.py, benchmarks/results/training-speed.md).
    """
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if any(has_depthwise_convolutions(model) for model in models):
        return "fp32"
    return "bf16" if has_native_bf16() and onednn_may_use_bf16() else "fp32"


# oneDNN, which runs torch's CPU convolutions and matmuls, can be told to use no instructions newer than a named
# set (ONEDNN_MAX_CPU_ISA, or its older name DNNL_MAX_CPU_ISA), as when emulating an older CPU. Capped at one of
# these, it has no bf16 instructions to use: a bf16 cnn-base step took 441 ms against 51 ms in float32 under
# ONEDNN_MAX_CPU_ISA=AVX2 on the AVX-512 BF16 host (26 ms in bf16 uncapped). torch's own (private) check,
# torch.ops.mkldnn._is_mkldnn_bf16_supported(), reads the same cap but counts AVX512_CORE, where oneDNN emulates
# bf16, as supported; `auto` wants bf16 only where it is native, hence this list.
ONEDNN_ISAS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_MIC", "AVX512_MIC_4OPS", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def onednn_may_use_bf16() -> bool:
    """False where this process caps oneDNN's instructions below any that multiply bf16."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return cap.strip().upper() not in ONEDNN_ISAS_WITHOUT_BF16


def has_depthwise_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` intra-op threads (None: leave torch's choice), then restore."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None):
    """Run the block with torch's global RNG seeded to ``seed``, then put the caller's RNG state back.

    Library calls stay free of process-wide side effects, and every random draw of a
    stage (initial weights, dropout) depends on its own seed alone.
    """
    cuda = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def build_seeded(spec, seed: int) -> nn.Module:
    """Build ``spec``'s model with weights drawn from ``seed`` alone.

    Runs that differ only in their loss (distilled or alone, another temperature)
    therefore start from identical weights at the same seed: comparisons are paired.
    """
    with seeded(seed):
        return spec.build()


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store conv weights as NHWC. On CPU, oneDNN's max-pool and conv kernels run several
    times faster in this layout than in NCHW (see benchmarks/profile_training.py)."""
    return model.to(memory_format=torch.channels_last)

"""Training on several processes with torch.distributed: what each rank does, in one place.

kd-edge never launches or coordinates processes itself: ``torchrun`` (``torch.distributed.run``)
starts them and sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
MASTER_PORT; ``process_group()`` joins them with gloo on CPU or nccl on CUDA. Then:

* each rank trains on its own shard of every epoch's shuffled order (``shard``), wrapped
  in DistributedDataParallel, which averages the gradients;
* evaluation and cached soft labels are computed once per image across the ranks and
  gathered (``gather_rows``), so every rank holds the same full result;
* only rank 0 writes files and shows progress (``is_main``).

Outside torchrun every function here is the single-process identity.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def joined_group():
    """torch.distributed when this process has joined a group, else None. Looked up, never imported:
    no group can exist before torch is imported, and the torch-free runtime (bench, predict) asks too."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def world() -> tuple[int, int]:
    """(this process's rank, the number of processes); (0, 1) when not distributed."""
    dist = joined_group()
    return (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)


def is_main() -> bool:
    """Rank 0, or a process outside torchrun. (Before the group is joined or after it is left, torchrun's
    RANK says.)"""
    dist = joined_group()
    return dist.get_rank() == 0 if dist else os.environ.get("RANK", "0") == "0"


def barrier() -> None:
    """Wait until every rank has come here (nothing outside torchrun)."""
    dist = joined_group()
    if dist and dist.get_world_size() > 1:
        dist.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group(device: str):
    """Join the processes torchrun started (gloo on CPU, nccl on CUDA), and give each a fair share of the
    cores: N processes on a machine would otherwise each start one thread per core and oversubscribe it."""
    if not launched_by_torchrun():
        yield
        return
    import torch
    import torch.distributed as dist

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    else:
        torch.set_num_threads(threads_per_process())
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def threads_per_process() -> int:
    """The cores this process may use, divided among the processes of this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def shard(order: torch.Tensor, batch_size: int) -> torch.Tensor:
    """This rank's part of an epoch's order: whole batches only, the same number on every rank."""
    rank, size = world()
    steps = max(len(order) // (batch_size * size), 1)
    return order[: steps * batch_size * size][rank::size]


def from_main(value: int) -> int:
    """Rank 0's ``value``, on every rank: for decisions all ranks must take alike."""
    if world()[1] == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64, device=device_of_group())
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def per_rank(value: int) -> list[int]:
    """``value`` from every rank, in rank order (on every rank)."""
    _, size = world()
    if size == 1:
        return [value]
    import torch
    import torch.distributed as dist

    values = [torch.zeros(1, dtype=torch.int64, device=device_of_group()) for _ in range(size)]
    dist.all_gather(values, torch.tensor([value], dtype=torch.int64, device=device_of_group()))
    return [int(v.item()) for v in values]


def any_rank(flag: int | None) -> int | None:
    """A value (a signal number) set on any rank, seen by all: every rank stops at the same step."""
    _, size = world()
    if size == 1:
        return flag
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([flag or 0], dtype=torch.int64, device=device_of_group())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item()) or None


def gather_rows(compute, count: int, device) -> torch.Tensor:
    """``compute(indices)`` for all ``count`` rows, each row computed by one rank, the whole result on every rank."""
    import torch

    rank, size = world()
    indices = torch.arange(count, device=device)
    if size == 1:
        return compute(indices)
    dist = joined_group()

    mine = compute(indices[rank::size])
    longest = (count + size - 1) // size
    padded = torch.zeros((longest, *mine.shape[1:]), dtype=mine.dtype, device=device_of_group())
    padded[: len(mine)] = mine.to(padded.device)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    result = torch.empty((count, *mine.shape[1:]), dtype=mine.dtype, device=device)
    for other, part in enumerate(parts):
        rows = indices[other::size]
        result[rows] = part[: len(rows)].to(device)
    return result


def device_of_group() -> torch.device:
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model DistributedDataParallel trains when distributed; the model itself otherwise."""
    _, size = world()
    if size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def share_main_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank. DistributedDataParallel sends them only
    before a forward pass, so after an epoch each rank's last batch has moved its own copy: without this, each
    rank would evaluate a slightly different model on its share of the rows, and rank 0's saved weights would
    not be the model whose accuracy is reported."""
    if world()[1] == 1:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        moved = buffer.to(device_of_group())
        dist.broadcast(moved, src=0)
        buffer.copy_(moved)


def describe(batch_size: int, lr: float, lr_scaling: str, images_per_rank: list[int]) -> dict:
    """metrics.json's account of how the work was split."""
    import torch

    _, size = world()
    return {
        "world_size": size,
        "backend": backend(),
        "images_trained_per_rank": images_per_rank,
        "per_process_batch": batch_size,
        "effective_batch": batch_size * size,
        "lr_scaling": lr_scaling,
        "effective_lr": scaled_lr(lr, lr_scaling),
        "threads_per_process": torch.get_num_threads(),
    }


def scaled_lr(lr: float, rule: str) -> float:
    """The learning rate for ``world`` processes: the same (none), times N (linear) or times sqrt(N) (sqrt)."""
    _, size = world()
    return {"none": lr, "linear": lr * size, "sqrt": lr * size**0.5}[rule]


def backend() -> str | None:
    dist = joined_group()
    return dist.get_backend() if dist else None

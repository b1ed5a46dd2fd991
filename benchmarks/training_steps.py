"""A network's training steps timed in this process, on one batch held fixed.

Imported by the scripts beside it (``python benchmarks/X.py`` puts this folder on the path)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kd_edge.training.device import to_channels_last
from kd_edge.training.models import create_model

WARM_UP_STEPS = 3


@dataclass(frozen=True)
class TimedSteps:
    wall_s: float
    cpu_s: float
    update_s: float  # the optimiser's share of wall_s
    final_loss: float


def case_batch(name: str, channels: int, side: int, batch: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Seed 0's channels-last ``name`` for 10 classes, with a random batch of images and labels."""
    torch.manual_seed(0)
    model = to_channels_last(create_model(name, 10, channels, side))
    images = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
    return model, images, torch.randint(0, 10, (batch,))


def timed_training_steps(model, optimizer, images, labels, steps: int, bf16: bool = False) -> TimedSteps:
    """``steps`` cross-entropy steps on the batch, timed after ``WARM_UP_STEPS`` untimed ones."""
    update = 0.0
    for step in range(steps + WARM_UP_STEPS):
        if step == WARM_UP_STEPS:
            wall, cpu, update = time.perf_counter(), time.process_time(), 0.0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        started = time.perf_counter()
        optimizer.step()
        update += time.perf_counter() - started
    return TimedSteps(time.perf_counter() - wall, time.process_time() - cpu, update, loss.item())

"""The optimiser and learning-rate schedule of ``OptimSettings``, with the learning rate scaled for torchrun."""

from __future__ import annotations

import torch
from torch import nn

from kd_edge.settings.training import OptimSettings
from kd_edge.training import distributed


def make_optimizer(model: nn.Module, config: OptimSettings) -> torch.optim.Optimizer:
    params, lr = model.parameters(), distributed.scaled_lr(config.lr, config.lr_scaling)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: OptimSettings, total_steps: int):
    """A per-step learning-rate schedule, or None for a constant rate."""
    if config.schedule == "onecycle":
        lr = distributed.scaled_lr(config.lr, config.lr_scaling)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None

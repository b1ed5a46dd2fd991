"""A network's predictions and accuracy on a split, and the accuracy a guesser reaches."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from kd_edge.training import distributed
from kd_edge.training.batches import DeviceSplit, Normalizer
from kd_edge.training.device import autocast, evaluation_memory, to_channels_last

# On a CPU, inside a training command, an evaluation's large blocks are fresh mappings (``evaluation_memory``), and
# smaller batches' blocks stay in cache: a default Fashion-MNIST run's evaluations and saving took 0.9-1.7 s at 64
# images a batch against 1.3-2.1 s at 256 (benchmarks/results/training-memory-eval-batch.md). A GPU keeps 256.
CPU_EVAL_BATCH_SIZE, GPU_EVAL_BATCH_SIZE = 64, 256
# Folding BatchNorm into a copy (``with_batchnorm_folded``) costs 10-40 ms, torch.fx tracing the network, which an
# evaluation of a few hundred images does not repay: mobilenet-v3-small on 224 images took 0.09 s folded against
# 0.05 s (benchmarks/results/folded-evaluation.md).
FOLD_FROM_IMAGES = 1_000


def evaluation_batch_size(device: torch.device) -> int:
    return CPU_EVAL_BATCH_SIZE if device.type == "cpu" else GPU_EVAL_BATCH_SIZE


def with_batchnorm_folded(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with each BatchNorm folded into the convolution before it, as export folds
    it; ``model`` itself where it has no BatchNorm or torch.fx cannot trace it.

    On a CPU in float32 a BatchNorm costs nearly as much as the convolution it follows: the default Fashion-MNIST
    teacher's soft labels took 3.4 s folded against 4.9 s (benchmarks/results/folded-evaluation.md). The logits
    move in float32's last bits (2e-7)."""
    from torch.fx.experimental.optimization import fuse
    from torch.fx.proxy import TraceError

    if not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) for m in model.modules()):
        return model
    try:
        return to_channels_last(fuse(model))  # fuse works on a copy
    except TraceError:
        return model


@torch.no_grad()
def predict_logits(model: nn.Module, split: DeviceSplit, normalize: Normalizer, precision: str) -> torch.Tensor:
    """The model's float32 logits for every image of ``split``, in order; in float32, for a thousand images or
    more, they come from a copy with its BatchNorms folded. Under torchrun each rank computes its share of the
    images and all ranks receive the whole."""
    was_training = model.training
    model.eval()
    fold = precision == "fp32" and len(split) >= FOLD_FROM_IMAGES
    network = with_batchnorm_folded(model) if fold else model

    def compute(indices: torch.Tensor) -> torch.Tensor:
        with autocast(split.images.device, precision):
            if not len(indices):  # a rank with nothing to do still gives the right shape
                return network(normalize(split.images[:1])).float()[:0]
            batch_size = evaluation_batch_size(split.images.device)
            return torch.cat([network(normalize(split.images[i])).float() for i in indices.split(batch_size)])

    with evaluation_memory():
        logits = distributed.gather_rows(compute, len(split), split.images.device)
    model.train(was_training)
    return logits


def accuracy(model: nn.Module, split: DeviceSplit, normalize: Normalizer) -> float:
    return (predict_logits(model, split, normalize, "fp32").argmax(1) == split.labels).float().mean().item()


def chance_threshold(labels: np.ndarray) -> tuple[float, float]:
    """(chance accuracy, the accuracy a guesser exceeds only 0.1 % of the time).

    Chance is always predicting the most frequent class; the threshold adds three
    binomial standard deviations for a split of this size.
    """
    chance = np.bincount(labels).max() / len(labels)
    return float(chance), float(chance + 3 * math.sqrt(chance * (1 - chance) / len(labels)))

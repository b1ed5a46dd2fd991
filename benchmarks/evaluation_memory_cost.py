"""What serving an evaluation from fresh mappings costs (``evaluation_memory``), against the training path's kept heap.

    .venv/bin/python benchmarks/evaluation_memory_cost.py [--rounds 12]

In one process set up as a training command (``keep_freed_memory``), ``predict_logits`` on random uint8 images
alternates between the two: RSSCN7's validation split as the default teacher sees it (224 images, 64 px RGB,
pooled-large) and Fashion-MNIST's (6,000 images, 28 px grey, cnn-base). Prints the median of each, the first two
rounds left out (warm-up).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import kd_edge.training.device as device
from kd_edge.data.dataset import Split
from kd_edge.training.batches import DeviceSplit, Normalizer
from kd_edge.training.evaluate import predict_logits
from kd_edge.training.models import ModelSpec

CASES = (("pooled-large", 3, 64, 224), ("cnn-base", 1, 28, 6000))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    device.keep_freed_memory()
    kept = device._KEPT_THRESHOLD
    cpu = torch.device("cpu")
    for name, channels, size, count in CASES:
        model = device.to_channels_last(device.build_seeded(ModelSpec(name, 7, channels, size), 0))
        images = np.random.default_rng(0).integers(0, 256, (count, channels, size, size), dtype=np.uint8)
        split = DeviceSplit(Split(images, np.zeros(count, dtype=np.int64)), cpu)
        normalize = Normalizer((0.5,) * channels, (0.25,) * channels, cpu)
        seconds = {"fresh mappings (today)": [], "kept heap": []}
        for _ in range(args.rounds):
            for label, times in seconds.items():
                device._KEPT_THRESHOLD = (
                    kept if label.startswith("fresh") else None
                )  # None: evaluation_memory is a no-op
                started = time.perf_counter()
                predict_logits(model, split, normalize, "fp32")
                times.append(time.perf_counter() - started)
        device._KEPT_THRESHOLD = kept
        medians = ", ".join(f"{label} {1e3 * np.median(times[2:]):.1f} ms" for label, times in seconds.items())
        print(f"{name}, {count} images at {size} px: {medians}")


if __name__ == "__main__":
    main()

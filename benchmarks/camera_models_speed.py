"""Training images/s of registry models at one input size: synthetic RGB batches of 64, channels-last, AdamW,
2 threads, 5 timed steps after 3 warm-up steps (a quick comparison, not a benchmark of record).

    .venv/bin/python benchmarks/camera_models_speed.py 64 pooled-small pooled-base mobile-small resnet18
"""

from __future__ import annotations

import sys
import time

import torch

from kd_edge.training.models import count_macs, count_parameters, create_model

WARMUP, TIMED, BATCH = 3, 5, 64


def images_per_second(name: str, size: int) -> float:
    model = create_model(name, 7, 3, size).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    images = torch.randn(BATCH, 3, size, size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 7, (BATCH,))
    for step in range(WARMUP + TIMED):
        if step == WARMUP:
            started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return TIMED * BATCH / (time.perf_counter() - started)


def main() -> None:
    torch.set_num_threads(2)
    size = int(sys.argv[1])
    for name in sys.argv[2:]:
        model = create_model(name, 7, 3, size)
        print(
            f"{name:20s} {size} px  parameters {count_parameters(model) / 1e6:5.2f} M  "
            f"MACs {count_macs(model, (3, size, size)) / 1e6:7.1f} M  train {images_per_second(name, size):6.0f} img/s"
        )


if __name__ == "__main__":
    main()

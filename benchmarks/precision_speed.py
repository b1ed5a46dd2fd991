"""Training images/s in float32 and under bf16 autocast, per network: what ``--precision auto`` chooses from.

    .venv/bin/python benchmarks/precision_speed.py [--models cnn-small:28,mobile-small:64,...]

AdamW steps of cross-entropy on a random batch already in memory, both precisions channels-last (kd-edge's
layout), 3 alternating rounds of about 2.5 s each after 3 warm-up steps; medians. Batch 256 (64 above
64 px). Prints a Markdown table. On a CPU without native bf16 autocast is emulated and much slower.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from kd_edge.training.models import create_model

MODELS = (
    "cnn-small:28,cnn-base:28,mobilenet-v3-small:28,pooled-small:64,pooled-base:64,pooled-large:64,"
    "mobile-small:64,mobilenet-v3-small:64,mobilenet-v2:64"
)


def images_per_second(name: str, size: int, precision: str, seconds: float) -> float:
    channels, batch = (1 if size == 28 else 3), (256 if size <= 64 else 64)
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=channels, image_size=size)
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS, help="NAME:SIZE, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.5)
    args = parser.parse_args()
    print("| model | input | float32 img/s | bf16 img/s | bf16 / float32 |\n| --- | --- | ---: | ---: | ---: |")
    for item in args.models.split(","):
        name, size = item.split(":")
        rates = {"fp32": [], "bf16": []}
        for _ in range(args.rounds):
            for precision in rates:
                rates[precision].append(images_per_second(name, int(size), precision, args.seconds))
        fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
        channels = 1 if int(size) == 28 else 3
        print(f"| {name} | {channels}x{size}x{size} | {fp32:.0f} | {bf16:.0f} | {bf16 / fp32:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

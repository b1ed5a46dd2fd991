"""Training images/s of one network over memory layout, threads and batch size, and with torch.compile.

    .venv/bin/python benchmarks/training_settings.py [--models cnn-base,cnn-small] [--compile]

Each cell: AdamW steps of cross-entropy on a random batch already in memory (no data movement), 3
warm-up steps, then about 8,192 images timed. Rows: threads x layout (channels-last or NCHW); columns:
batch size. ``--compile`` adds one row per model: ``torch.compile`` at batch 256 on all threads, with the
seconds its first two steps take (the compilation). This is how kd-edge's training settings were chosen
on a CPU (README, "How training uses the CPU").
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from kd_edge.training.device import to_channels_last
from kd_edge.training.models import create_model

BATCHES = (32, 64, 128, 256, 512)


def steps(model, optimizer, images, labels, count):
    for _ in range(count):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def images_per_second(name: str, batch: int, threads: int, channels_last: bool, compiled: bool = False):
    """(images/s, seconds of the first two steps)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name)
    images, labels = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if channels_last:
        model, images = to_channels_last(model), images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model = torch.compile(model) if compiled else model
    started = time.perf_counter()
    steps(model, optimizer, images, labels, 2)
    first = time.perf_counter() - started
    steps(model, optimizer, images, labels, 1)
    count = max(8192 // batch, 4)
    started = time.perf_counter()
    steps(model, optimizer, images, labels, count)
    return count * batch / (time.perf_counter() - started), first


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn-base,cnn-small")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    cores = torch.get_num_threads()
    print(f"images/s, 1x28x28, torch {torch.__version__}, {cores} cores")
    print("| model | threads | layout | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in BATCHES) + " |")
    compiled = []
    for name in args.models.split(","):
        for threads in sorted({cores, 1}, reverse=True):
            for channels_last in (True, False):
                rates = [images_per_second(name, b, threads, channels_last)[0] for b in BATCHES]
                layout = "channels-last" if channels_last else "NCHW"
                print(f"| {name} | {threads} | {layout} | " + " | ".join(f"{r:.0f}" for r in rates) + " |", flush=True)
        if args.compile:
            eager, _ = images_per_second(name, 256, cores, True)
            rate, first = images_per_second(name, 256, cores, True, compiled=True)
            compiled.append(f"{name}, batch 256, channels-last: eager {eager:.0f} img/s; torch.compile {rate:.0f} "
                            f"img/s after {first:.1f} s for its first two steps")  # fmt: skip
    for line in compiled:
        print(f"\n{line}")


if __name__ == "__main__":
    main()

"""Channels-last against NCHW for each classifier family's training steps, at camera sizes (issue 25).

    .venv/bin/python benchmarks/layout_per_family.py [--isa avx2] [--sizes 64,128] [--rounds 3]

kd-edge trains every network channels-last (``training/device.py``). On 2026-12-04 one reading had
mobilenet-v3-small at 64 px 0.93x of NCHW's speed on the AVX2 host, the one case where kd-edge's path was not
faster, and choosing the layout per family was left to measure: this does. For each network and size, float32
training steps (AdamW, cross-entropy, batch 64 of 3-channel images already in memory), the two layouts
alternating, median images/s over the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics

from core_benchmark import ISA_CAPS

MODELS = ("cnn-small", "pooled-small", "pooled-base", "mobile-small", "mobilenet-v3-small", "mobilenet-v2")


def images_per_second(name: str, side: int, batch: int, channels_last: bool, steps: int) -> float:
    import torch
    from training_steps import timed_training_steps

    from kd_edge.training.models import create_model

    torch.manual_seed(0)
    model = create_model(name, 10, 3, side)
    images = torch.randn(batch, 3, side, side)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    timed = timed_training_steps(model, optimizer, images, torch.randint(0, 10, (batch,)), steps)
    return batch * steps / timed.wall_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), help="cap oneDNN, ATen and MKL at this ISA")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    os.environ.update(ISA_CAPS.get(args.isa, {}))  # before torch loads its libraries

    print("| model | input | channels-last img/s | NCHW img/s | ratio |\n| --- | --- | ---: | ---: | ---: |")
    for side in map(int, args.sizes.split(",")):
        for name in MODELS:
            rates = {True: [], False: []}
            for _ in range(args.rounds):
                for channels_last in rates:
                    rates[channels_last].append(images_per_second(name, side, args.batch, channels_last, args.steps))
            last, nchw = statistics.median(rates[True]), statistics.median(rates[False])
            print(f"| {name} | 3x{side}x{side} | {last:.0f} | {nchw:.0f} | {last / nchw:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

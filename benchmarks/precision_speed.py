"""Training images/s in float32 and under bf16 autocast, per network: what ``--precision auto`` chooses from.

    .venv/bin/python benchmarks/precision_speed.py [--models cnn-small:28,mobile-small:64,...]
    .venv/bin/python benchmarks/precision_speed.py --models fomo-base:128,fomo-lite/fomo-base:128

AdamW steps of cross-entropy on a random batch already in memory, both precisions channels-last (kd-edge's
layout), 3 alternating rounds of about 2.5 s each after 3 warm-up steps; medians. Batch 256 (64 above
64 px). A detector (`kd-edge models`) takes batches of 32 tiles of SIZE px and the centre loss, as `kd-edge
detect` trains it; STUDENT/TEACHER adds the teacher's forward pass and the heatmap term, as a distilled step.
Prints a Markdown table. On a CPU without native bf16 autocast is emulated and much slower.
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


def classifier_case(name: str, size: int):
    """(model, images, the loss of one step) for a registry classifier."""
    channels, batch = (1 if size == 28 else 3), (256 if size <= 64 else 64)
    model = create_model(name, num_classes=10, in_channels=channels, image_size=size)
    images = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))
    return model, images, lambda: F.cross_entropy(model(images), labels)


def detector_case(name: str, size: int):
    """(model, tiles, the loss of one step) for a detector, distilled from a teacher when named STUDENT/TEACHER."""
    from kd_edge.settings.detection import DetectSettings
    from kd_edge.training.detection_fit import detector_loss
    from kd_edge.training.detectors import create_detector

    student, _, teacher = name.partition("/")
    model = create_detector(student, 1)
    teacher = create_detector(teacher, 1).eval() if teacher else None
    tiles = torch.randn(32, 3, size, size).contiguous(memory_format=torch.channels_last)
    targets = (torch.rand(32, size // model.stride, size // model.stride) < 0.02).long()
    knobs = DetectSettings(alpha=0.5 if teacher else 1.0)
    return model, tiles, lambda: detector_loss(model, teacher, None, tiles, targets, knobs)


def images_per_second(name: str, size: int, precision: str, seconds: float) -> float:
    from kd_edge.training.detectors import DETECTORS

    torch.manual_seed(0)
    model, images, loss_of_step = (detector_case if name.split("/")[0] in DETECTORS else classifier_case)(name, size)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    batch = len(images)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_of_step()
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
        channels = 1 if int(size) == 28 else 3  # a detector's tiles: 3
        print(f"| {name} | {channels}x{size}x{size} | {fp32:.0f} | {bf16:.0f} | {bf16 / fp32:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

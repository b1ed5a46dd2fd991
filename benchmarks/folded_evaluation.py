"""Float32 logits from a copy with BatchNorm folded (what ``predict_logits`` runs) against the network as it is.

    .venv/bin/python benchmarks/folded_evaluation.py [--rounds 7]

In one process set up as a training command (``keep_freed_memory``), ``predict_logits`` in float32 on random uint8
images, with and without the fold (forced either way, whatever ``FOLD_FROM_IMAGES`` says), alternating: the
default Fashion-MNIST teacher's soft labels (54,000 images, 28 px grey, cnn-base), a student's validation pass
(6,000, cnn-small), and RSSCN7's validation split as its default teacher and a depthwise student (which trains in
float32) see it (224 images, 64 px RGB, pooled-large and mobilenet-v3-small). Medians over the rounds, the first
left out (warm-up), and the largest difference of the logits. Writes benchmarks/results/folded-evaluation.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from markdown_out import save, table

import kd_edge.training.device as device
import kd_edge.training.evaluate as evaluate
from kd_edge.data.dataset import Split
from kd_edge.training.batches import DeviceSplit, Normalizer
from kd_edge.training.models import ModelSpec

HERE = Path(__file__).resolve().parent
# (model, channels, side, images)
CASES = (
    ("cnn-base", 1, 28, 54_000),
    ("cnn-small", 1, 28, 6_000),
    ("pooled-large", 3, 64, 224),
    ("mobilenet-v3-small", 3, 64, 224),
)


def timed_logits(model, split, normalize, folded: bool) -> tuple[float, torch.Tensor]:
    """``predict_logits`` in float32 with the fold forced on or off, whatever the split's size."""
    floor = evaluate.FOLD_FROM_IMAGES
    evaluate.FOLD_FROM_IMAGES = 0 if folded else len(split) + 1
    try:
        start = time.perf_counter()
        logits = evaluate.predict_logits(model, split, normalize, "fp32")
        return time.perf_counter() - start, logits
    finally:
        evaluate.FOLD_FROM_IMAGES = floor


def measure(case, rounds: int) -> dict:
    name, channels, side, count = case
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, channels, side, side), dtype=np.uint8)
    split = DeviceSplit(Split(images, np.zeros(count, dtype=np.int64)), torch.device("cpu"))
    normalize = Normalizer((0.5,) * channels, (0.25,) * channels, torch.device("cpu"))
    model = device.to_channels_last(ModelSpec(name, 10, channels, side).build())
    for module in model.modules():  # statistics away from the initial identity, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.2, 3)
    as_is_times, folded_times = [], []
    for round_ in range(rounds + 1):
        as_is_seconds, as_is_logits = timed_logits(model, split, normalize, folded=False)
        folded_seconds, folded_logits = timed_logits(model, split, normalize, folded=True)
        if round_:  # round 0 warms up
            as_is_times.append(as_is_seconds)
            folded_times.append(folded_seconds)
    difference = (folded_logits - as_is_logits).abs().max().item()
    as_is, folded = statistics.median(as_is_times), statistics.median(folded_times)
    return {"model": name, "images": f"{count:,} of {channels}x{side}x{side}", "as_is_s": as_is, "folded_s": folded,
            "ratio": folded / as_is, "difference": difference}  # fmt: skip


def markdown(rows: list[dict], rounds: int) -> list[str]:
    header = ["model", "images", "as it is (s)", "BatchNorm folded (s)", "time ratio", "largest logit difference"]
    cells = [
        [row["model"], row["images"], f"{row['as_is_s']:.2f}", f"{row['folded_s']:.2f}", f"{row['ratio']:.2f}",
         f"{row['difference']:.1e}"]
        for row in rows
    ]  # fmt: skip
    intro = (
        f"`predict_logits` in float32, {rounds} alternating rounds after a warm-up, medians "
        "(`.venv/bin/python benchmarks/folded_evaluation.py`)."
    )
    return [intro, "", *table(header, cells, right=4)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "folded-evaluation.md")
    args = parser.parse_args()
    device.keep_freed_memory()
    rows = []
    for case in CASES:
        rows.append(measure(case, args.rounds))
        print(rows[-1], flush=True)
    save(markdown(rows, args.rounds), args.out)


if __name__ == "__main__":
    main()

"""Training steps with each max-pool run before the ReLU it follows (``ConvStages``) against the written order.

    .venv/bin/python benchmarks/pool_before_relu.py [--rounds 5] [--steps 20]

The same network, weights and batch, stepped by AdamW in both orders; the written order is the same modules
under a plain ``nn.Sequential``. The orders alternate within each round, and the ratio is of the medians over the
rounds (wall time and CPU time), in float32 and in bfloat16 autocast. Both orders' final losses must agree to the
bit. Writes benchmarks/results/pool-before-relu.md.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from markdown_out import save, table
from torch import nn
from training_steps import case_batch, timed_training_steps

HERE = Path(__file__).resolve().parent
# (model, channels, image side, batch): kd-edge's defaults below 64 px and from 64 px
CASES = [("cnn-small", 1, 28, 192), ("cnn-base", 1, 28, 192), ("pooled-small", 3, 64, 256), ("pooled-base", 3, 64, 256)]


def timed_steps(name, channels, side, batch, written_order: bool, bf16: bool, steps: int) -> tuple[float, float, float]:
    """(wall s, CPU s, final loss) of ``steps`` training steps after the warm-up."""
    model, images, labels = case_batch(name, channels, side, batch)
    if written_order:
        model.features.__class__ = nn.Sequential  # the same layers, run as written
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    timed = timed_training_steps(model, optimizer, images, labels, steps, bf16)
    return timed.wall_s, timed.cpu_s, timed.final_loss


def compare(case, bf16: bool, rounds: int, steps: int) -> dict:
    times = {True: [], False: []}
    losses = set()
    for _ in range(rounds):
        for written in (True, False):
            wall, cpu, loss = timed_steps(*case, written, bf16, steps)
            times[written].append((wall, cpu))
            losses.add(loss)
    if len(losses) != 1:
        raise SystemExit(f"{case[0]}: the two orders' losses differ ({losses}); the reorder is not exact")

    def median(written, column):
        return statistics.median(t[column] for t in times[written])

    return {
        "model": case[0],
        "input": f"{case[1]}x{case[2]}x{case[2]}, batch {case[3]}",
        "precision": "bf16" if bf16 else "fp32",
        "written_ms": 1e3 * median(True, 0) / steps,
        "pooled_first_ms": 1e3 * median(False, 0) / steps,
        "wall_ratio": median(False, 0) / median(True, 0),
        "cpu_ratio": median(False, 1) / median(True, 1),
    }


def markdown(rows: list[dict], rounds: int, steps: int) -> list[str]:
    header = ["model", "input", "precision", "written order, ms a step", "max-pool first, ms a step",
              "time ratio (wall)", "time ratio (CPU)"]  # fmt: skip
    cells = [
        [row["model"], row["input"], row["precision"], f"{row['written_ms']:.1f}", f"{row['pooled_first_ms']:.1f}",
         f"{row['wall_ratio']:.3f}", f"{row['cpu_ratio']:.3f}"]
        for row in rows
    ]  # fmt: skip
    intro = (
        f"Training steps (AdamW), {rounds} alternating rounds of {steps} steps each, medians "
        "(`.venv/bin/python benchmarks/pool_before_relu.py`). Losses agreed to the bit in every case."
    )
    return [intro, "", *table(header, cells, right=4)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pool-before-relu.md")
    args = parser.parse_args()
    rows = []
    for case in CASES:
        for bf16 in (False, True):
            rows.append(compare(case, bf16, args.rounds, args.steps))
            print(rows[-1], flush=True)
    save(markdown(rows, args.rounds, args.steps), args.out)


if __name__ == "__main__":
    main()

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
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from markdown_out import save, table
from torch import nn

from kd_edge.training.device import to_channels_last
from kd_edge.training.models import create_model

HERE = Path(__file__).resolve().parent
# (model, channels, image side, batch): kd-edge's defaults below 64 px and from 64 px
CASES = [("cnn-small", 1, 28, 192), ("cnn-base", 1, 28, 192), ("pooled-small", 3, 64, 256), ("pooled-base", 3, 64, 256)]


def timed_steps(name, channels, side, batch, written_order: bool, bf16: bool, steps: int) -> tuple[float, float, float]:
    """(wall s, CPU s, final loss) of ``steps`` training steps after 3 untimed ones."""
    torch.manual_seed(0)
    model = to_channels_last(create_model(name, 10, channels, side))
    if written_order:
        model.features.__class__ = nn.Sequential  # the same layers, run as written
    images = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps + 3):
        if step == 3:
            wall, cpu = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - wall, time.process_time() - cpu, loss.item()


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

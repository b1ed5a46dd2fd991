"""Training steps with kd-edge's AdamW (torch's fused kernel) against the same update applied one operation at a
time, as torch's single-tensor code does (``torch.optim.AdamW(foreach=False)``, which kd-edge's optimiser copied
operation for operation before it called the fused kernel).

    .venv/bin/python benchmarks/fused_adam.py [--rounds 5] [--steps 20] [--name fused-adam]

The same network, weights and batch in both forms; the forms alternate within each round; the ratio is of the
medians over the rounds: of whole training steps (wall and CPU time) and of the optimiser's update alone. Float32
only: the update runs on float32 weights in either precision. Run it under ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`` for an AVX2 CPU's kernels. Writes
benchmarks/results/NAME.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from core_benchmark import ISA_CAPS
from markdown_out import save, table
from training_steps import case_batch, timed_training_steps

from kd_edge.settings import OptimSettings
from kd_edge.training.optimizers import make_optimizer

HERE = Path(__file__).resolve().parent
# (model, channels, image side, batch): kd-edge's defaults below 64 px and from 64 px
CASES = [("cnn-small", 1, 28, 192), ("cnn-base", 1, 28, 192), ("pooled-base", 3, 64, 256), ("pooled-large", 3, 64, 256)]


def timed_steps(name, channels, side, batch, fused: bool, steps: int) -> tuple[float, float, float, float]:
    """(wall s, CPU s, update wall s, final loss) of ``steps`` training steps after the warm-up."""
    model, images, labels = case_batch(name, channels, side, batch)
    if fused:
        optimizer = make_optimizer(model, OptimSettings(optimizer="adamw", lr=1e-3, weight_decay=0.05))
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, foreach=False)
    timed = timed_training_steps(model, optimizer, images, labels, steps)
    return timed.wall_s, timed.cpu_s, timed.update_s, timed.final_loss


def compare(case, rounds: int, steps: int) -> list[str]:
    times = {True: [], False: []}
    losses = {}
    for _ in range(rounds):
        for fused in (False, True):
            *timing, losses[fused] = timed_steps(*case, fused, steps)
            times[fused].append(timing)
    if abs(losses[True] - losses[False]) > 1e-3 * abs(losses[False]):
        raise SystemExit(f"{case[0]}: the two forms' losses differ ({losses}): not the same update")
    (wall_a, cpu_a, update_a), (wall_b, cpu_b, update_b) = (
        [statistics.median(column) for column in zip(*times[fused], strict=True)] for fused in (False, True)
    )
    per_step = 1000 / steps
    return [
        f"{case[0]} at {case[2]} px, batch {case[3]}",
        f"{wall_a * per_step:.1f} / {wall_b * per_step:.1f}",
        f"{wall_b / wall_a:.2f}x",
        f"{cpu_b / cpu_a:.2f}x",
        f"{update_a * per_step:.2f} / {update_b * per_step:.2f}",
    ]


def command_line(args) -> str:
    caps = " ".join(f"{name}={os.environ[name]}" for name in ISA_CAPS["avx2"] if name in os.environ)
    command = f"{caps} .venv/bin/python benchmarks/fused_adam.py --rounds {args.rounds} --steps {args.steps}"
    return command.strip() + (f" --name {args.name}" if args.name != "fused-adam" else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--name", default="fused-adam", help="the results file's name, without .md")
    args = parser.parse_args()
    rows = [compare(case, args.rounds, args.steps) for case in CASES]
    header = [
        "network",
        "step ms, op by op / fused",
        "step time, fused / op by op",
        "step CPU time, fused / op by op",
        "update ms, op by op / fused",
    ]
    lines = [
        f"# AdamW's update: torch's fused kernel against one operation at a time ({time.strftime('%Y-%m-%d')})",
        "",
        f"`{command_line(args)}`, float32, "
        f"channels-last, {torch.get_num_threads()} threads; ATen's kernels: {torch.backends.cpu.get_cpu_capability()}, "
        f"oneDNN capped at: {os.environ.get('ONEDNN_MAX_CPU_ISA', 'none')}. "
        "Medians over the rounds, the forms alternating.",
        "",
        *table(header, rows, right=4),
    ]
    save(lines, HERE / "results" / f"{args.name}.md")


if __name__ == "__main__":
    main()

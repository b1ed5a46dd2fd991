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
import torch.nn.functional as F
from markdown_out import save, table

from kd_edge.settings import OptimSettings
from kd_edge.training.device import to_channels_last
from kd_edge.training.models import create_model
from kd_edge.training.optimizers import make_optimizer

HERE = Path(__file__).resolve().parent
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
# (model, channels, image side, batch): kd-edge's defaults below 64 px and from 64 px
CASES = [("cnn-small", 1, 28, 192), ("cnn-base", 1, 28, 192), ("pooled-base", 3, 64, 256), ("pooled-large", 3, 64, 256)]


def timed_steps(name, channels, side, batch, fused: bool, steps: int) -> tuple[float, float, float, float]:
    """(wall s, CPU s, update wall s, final loss) of ``steps`` training steps after 3 untimed ones."""
    torch.manual_seed(0)
    model = to_channels_last(create_model(name, 10, channels, side))
    images = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))
    settings = OptimSettings(optimizer="adamw", lr=1e-3, weight_decay=0.05)
    if fused:
        optimizer = make_optimizer(model, settings)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, foreach=False)
    update = 0.0
    for step in range(steps + 3):
        if step == 3:
            wall, cpu, update = time.perf_counter(), time.process_time(), 0.0
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        started = time.perf_counter()
        optimizer.step()
        update += time.perf_counter() - started
    return time.perf_counter() - wall, time.process_time() - cpu, update, loss.item()


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
    caps = " ".join(f"{name}={os.environ[name]}" for name in ISA_VARIABLES if name in os.environ)
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

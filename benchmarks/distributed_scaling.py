"""One process against two (torchrun, gloo) for the default distillation on Fashion-MNIST, on this machine.

    .venv/bin/python benchmarks/distributed_scaling.py --markdown benchmarks/results/distributed_scaling.md

Both runs train the same recipe with the same effective batch (256: one process of 256, or two
of 128 each) and learning rate, so that they make the same number of optimiser steps; the
single process uses every core as threads, each of the two processes half of them
(kd-edge sets that under torchrun). Reported: wall time of the whole command, each stage's
time, test accuracy, and the scaling efficiency (time of 1 / (N x time of N)).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def distill(out: Path, processes: int, env: dict) -> dict:
    batch = 256 // processes
    args = ["distill", "--dataset", "fashion-mnist", "--batch-size", str(batch), "--out", str(out), "--seed", "0"]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m"]
        if processes > 1
        else [sys.executable, "-m"]
    )
    started = time.perf_counter()
    subprocess.run([*launcher, "kd_edge", *args], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "processes": processes,
        "wall_s": wall,
        "teacher_s": metrics["wall_time_s"]["teacher"],
        "student_s": metrics["wall_time_s"]["student"],
        "teacher_test": metrics["teacher"]["test_accuracy"],
        "student_test": metrics["student"]["test_accuracy"],
        "threads_per_process": metrics["student"]["distributed"]["threads_per_process"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion-dir", default="/work/shared/datasets")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    env = {**os.environ, "KD_EDGE_DATA": args.fashion_dir}
    with tempfile.TemporaryDirectory() as work:
        rows = [distill(Path(work) / f"p{n}", n, env) for n in (1, 2)]
    one = rows[0]["wall_s"]
    lines = [
        "| processes | threads each | wall s | teacher s | student s | teacher test % | student test % | "
        "speed-up | efficiency |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        speedup = one / r["wall_s"]
        lines.append(
            f"| {r['processes']} | {r['threads_per_process']} | {r['wall_s']:.1f} | {r['teacher_s']:.1f} | "
            f"{r['student_s']:.1f} | {100 * r['teacher_test']:.2f} | {100 * r['student_test']:.2f} | "
            f"{speedup:.2f}x | {speedup / r['processes']:.0%} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()

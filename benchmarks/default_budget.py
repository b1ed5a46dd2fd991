"""The default recipe with no epochs given, on a small and a large dataset, 3 seeds each.

    .venv/bin/python benchmarks/default_budget.py --markdown benchmarks/results/default_budget.md

Runs `kd-edge distill --dataset D --seed S` (teacher and student, the default preset, no
--epochs) in a fresh process each, and reports wall time (the whole command, data loading
included), the epochs the step budget chose and the test accuracies, as mean ± std.
Fashion-MNIST comes from --fashion-dir (KD_EDGE_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(dataset: str, seed: int, work: Path, env: dict) -> dict:
    out = work / f"{dataset}-seed{seed}"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kd_edge", "distill", "--dataset", dataset, "--seed", str(seed), "--out", str(out)],
        check=True,
        env=env,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "wall_s": wall,
        "teacher_epochs": metrics["teacher"]["epochs"],
        "student_epochs": metrics["student"]["epochs"],
        "teacher_test": metrics["teacher"]["test_accuracy"],
        "student_test": metrics["student"]["test_accuracy"],
    }


def mean_std(values) -> str:
    values = list(values)
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="mnist-5k,fashion-mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fashion-dir", default="/work/shared/datasets")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    env = {**os.environ, "KD_EDGE_DATA": args.fashion_dir}
    lines = [
        "| dataset | epochs (teacher, student) | wall s | teacher test % | student test % |",
        "| --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as work:
        for dataset in args.datasets.split(","):
            runs = [run(dataset, seed, Path(work), env) for seed in range(args.seeds)]
            for seed, result in enumerate(runs):
                print(dataset, seed, json.dumps(result), flush=True)
            epochs = f"{runs[0]['teacher_epochs']}, {runs[0]['student_epochs']}"
            teacher, student = (mean_std(100 * r[key] for r in runs) for key in ("teacher_test", "student_test"))
            lines.append(f"| {dataset} | {epochs} | {mean_std(r['wall_s'] for r in runs)} | {teacher} | {student} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()

"""Peak memory (RSS) and wall time of `kd-edge distill` with defaults, today's code against an earlier commit's.

    .venv/bin/python benchmarks/training_memory.py [--before REV] [--rounds 1] [--dataset fashion-mnist] [--seeds 0]
        [--precision auto]

Each run is a child process (`python -m kd_edge distill ... --force`), timed from the outside; its peak
resident set size is the kernel's (``wait4``'s ``ru_maxrss``). With ``--before``, REV is checked out in a
git worktree under benchmarks/work/ and run from there with the same environment (PYTHONPATH puts its
``kd_edge`` first), alternating with today's code. Writes benchmarks/results/training-memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from markdown_out import percent, save, table
from timed_child import run_timed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work" / "training-memory"


def worktree(rev: str) -> Path:
    path = WORK / f"tree-{rev}"
    if not path.is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True)
    return path


def run(label: str, source: Path, dataset: str, seed: int, precision: str) -> dict:
    out = WORK / f"run-{label}"
    command = [sys.executable, "-m", "kd_edge", "distill", "--dataset", dataset, "--out", str(out), "--force"]
    command += ["--seed", str(seed), "--precision", precision]
    child = run_timed(command, WORK / f"{label}.log", env={**os.environ, "PYTHONPATH": str(source)}, cwd=source)
    metrics = json.loads((out / "metrics.json").read_text())
    walls, stages = metrics["wall_time_s"], ("teacher", "student")
    steps = sum(metrics[stage]["train_seconds"] for stage in stages)
    return {
        "label": label,
        "seed": seed,
        "peak_rss_mb": child.peak_rss_mb,
        "seconds": child.seconds,
        "step_seconds": steps,
        "soft_label_seconds": walls.get("soft_labels", 0.0),
        # what a stage does besides its steps: evaluations above all, then building and saving
        "other_stage_seconds": sum(walls[stage] for stage in stages) - steps,
        "teacher_test_accuracy": metrics["teacher"]["test_accuracy"],
        "student_val_accuracy": metrics["student"]["val_accuracy"],
        "student_test_accuracy": metrics["student"]["test_accuracy"],
    }


def markdown(rows: list[dict], dataset: str, precision: str) -> list[str]:
    header = ["code", "seed", "peak RSS (MB)", "wall time (s)", "training steps (s)", "soft labels (s)",
              "the stages' evaluations and saving (s)", "teacher test acc", "student val acc",
              "student test acc"]  # fmt: skip
    cells = [
        [row["label"], str(row["seed"]), f"{row['peak_rss_mb']:.0f}", f"{row['seconds']:.1f}",
         f"{row['step_seconds']:.1f}", f"{row['soft_label_seconds']:.1f}", f"{row['other_stage_seconds']:.1f}",
         percent(row["teacher_test_accuracy"]), percent(row["student_val_accuracy"]),
         percent(row["student_test_accuracy"])]
        for row in rows
    ]  # fmt: skip
    intro = (
        f"`kd-edge distill --dataset {dataset} --precision {precision}`, otherwise with defaults, each run a child "
        "process (`.venv/bin/python benchmarks/training_memory.py`)."
    )
    return [intro, "", *table(header, cells, right=9)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="an earlier commit to compare with, e.g. dadd47a")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="each round runs each seed (paired)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="distill's --precision")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "training-memory.md")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    sources = [(f"before ({args.before})", worktree(args.before))] if args.before else []
    sources.append(("today", ROOT))
    rows = []
    for _ in range(args.rounds):
        for seed in args.seeds:
            for label, source in sources:
                rows.append(run(label.split(" ")[0], source, args.dataset, seed, args.precision) | {"label": label})
                print(json.dumps(rows[-1]), flush=True)
    save(markdown(rows, args.dataset, args.precision), args.out)


if __name__ == "__main__":
    main()

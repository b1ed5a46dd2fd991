"""Which distillation mode earns its cost? Fashion-MNIST, the seed architectures, 3 seeds, equal budget.

    .venv/bin/python benchmarks/distill_modes.py --markdown benchmarks/results/distill_modes.md

Every student is `seed-student` trained with the default recipe (AdamW, one-cycle, batch 256)
for 5 epochs. The frozen seed-teachers are trained by the sweep, which gives them the students'
--epochs (5); cnn-base gets `kd-edge teacher`'s default budget (250 steps: 2 epochs). Seeds 0, 1, 2
give each row the same initial student weights and data order (paired). benchmarks/kd_budget.py
asks the same question with a longer budget and a stronger teacher. Rows:

  student alone             alpha 1 (the sweep's "alone" cell)
  offline KD T=4, alpha=0.5 the sweep's T4-a0.5 cell, from a seed-teacher trained per seed
  offline KD, best swept    the KD sweep cell best on validation (T in 1,2,4,8 x alpha in 0.1,0.5,0.9)
  online KD                 seed-teacher and seed-student trained together (5 epochs), best swept setting
  multi-teacher KD          seed-teacher + cnn-base (trained per seed), equal weights, best swept setting
  best schedule             the best on validation of three T/alpha schedules

All runs go through the kd-edge CLI into --work (resumable: finished runs are kept).
Selection is on the validation split; test accuracy is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
STUDENT_EPOCHS = 5
COMMON = ["--dataset", "fashion-mnist", "--student-model", "seed-student", "--epochs", STUDENT_EPOCHS]
SCHEDULES = {
    "T 8 -> 1, cosine": ["-T", "8", "--temperature-schedule", "cosine:1"],
    "alpha 0.9 -> 0.1, linear": ["--alpha", "0.9", "--alpha-schedule", "linear:0.1"],
    "T 8 -> 1, adaptive": ["-T", "8", "--temperature-schedule", "adaptive:1"],
}


def kd_edge(*args, env) -> None:
    print("kd-edge", " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "kd_edge", *map(str, args)], check=True, env=env, stdout=subprocess.DEVNULL)


def finished(run: Path, stage: str = "student") -> bool:
    path = run / "metrics.json"
    return path.is_file() and stage in json.loads(path.read_text())


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def distill_seeds(work: Path, name: str, args: list, env) -> list[dict]:
    runs = []
    for seed in SEEDS:
        run = work / name / f"seed{seed}"
        if not finished(run):
            kd_edge("distill", *COMMON, *args, "--seed", seed, "--out", run, "--force", env=env)
        runs.append(metrics(run))
    return runs


def teacher_seconds(run_metrics: dict) -> float:
    return run_metrics.get("wall_time_s", {}).get("teacher", 0.0)


def row(name: str, runs: list[dict], extra_cost: list[float] | None = None) -> dict:
    students = [r["student"] for r in runs]
    return {
        "name": name,
        "val": [s["val_accuracy"] for s in students],
        "test": [s["test_accuracy"] for s in students],
        "student_s": statistics.fmean(s["train_seconds"] for s in students),
        "cost_s": statistics.fmean(
            s["train_seconds"] + (extra_cost[i] if extra_cost else 0.0) for i, s in enumerate(students)
        ),
    }


def pm(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def fashion_args(doc: str, work: str) -> tuple[argparse.Namespace, dict]:
    """The options the Fashion-MNIST benchmarks share, and the environment that points kd-edge at the data."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / work)
    parser.add_argument("--fashion-dir", default="/work/shared/datasets")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    return args, {**os.environ, "KD_EDGE_DATA": args.fashion_dir}


def publish(lines: list[str], markdown: Path | None) -> None:
    table = "\n".join(lines) + "\n"
    print(table)
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(table)


def main() -> None:
    args, env = fashion_args(__doc__, "modes")
    work = args.work
    sweep_dir = work / "sweep"
    kd_edge(
        "sweep",
        *COMMON,
        "--teacher-model",
        "seed-teacher",
        "-T",
        "1,2,4,8",
        "--alpha",
        "0.1,0.5,0.9,1",
        "--seeds",
        len(SEEDS),
        "--out",
        sweep_dir,
        env=env,
    )
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    # The modes below need a distillation setting: the best swept cell on validation, or, where the
    # student alone wins, the best cell that distils.
    best = max((c for c in summary["cells"] if c["alpha"] < 1), key=lambda c: c["val_mean"])
    setting = ["-T", f"{best['temperature']:g}", "--alpha", f"{best['alpha']:g}"]
    teachers = [sweep_dir / "teachers" / f"seed{seed}" for seed in SEEDS]
    teacher_cost = [teacher_seconds(metrics(t)) for t in teachers]

    def cell(name: str) -> list[dict]:
        return [metrics(sweep_dir / "cells" / name / f"seed{seed}") for seed in SEEDS]

    rows = [
        row("student alone", cell("alone")),
        row("offline KD, T=4, alpha=0.5", cell("T4-a0.5"), teacher_cost),
        row(f"offline KD, best swept KD cell ({best['cell']})", cell(best["cell"]), teacher_cost),
    ]
    online = distill_seeds(work, "online", ["--mode", "online", "--teacher-model", "seed-teacher", *setting], env)
    rows.append(row(f"online KD ({best['cell']})", online))
    for seed in SEEDS:
        run = work / "cnn-base-teacher" / f"seed{seed}"
        if not finished(run, "teacher"):
            kd_edge(
                "teacher",
                "--dataset",
                "fashion-mnist",
                "--model",
                "cnn-base",
                "--seed",
                seed,
                "--out",
                run,
                "--force",
                env=env,
            )
    second = [work / "cnn-base-teacher" / f"seed{seed}" for seed in SEEDS]
    multi_runs = []
    for seed in SEEDS:
        run = work / "multi" / f"seed{seed}"
        if not finished(run):
            kd_edge(
                "distill",
                *COMMON,
                "--mode",
                "multi",
                "--teacher",
                teachers[seed] / "teacher.pt",
                "--teacher",
                second[seed] / "teacher.pt",
                *setting,
                "--seed",
                seed,
                "--out",
                run,
                "--force",
                env=env,
            )
        multi_runs.append(metrics(run))
    multi_cost = [teacher_cost[i] + teacher_seconds(metrics(second[i])) for i in range(len(SEEDS))]
    rows.append(row(f"multi-teacher KD, seed-teacher + cnn-base ({best['cell']})", multi_runs, multi_cost))
    schedule_rows = []
    for label, options in SCHEDULES.items():
        slug = label.replace(" ", "").replace(">", "").replace(",", "-")
        runs = []
        for seed in SEEDS:
            run = work / "schedule" / slug / f"seed{seed}"
            if not finished(run):
                kd_edge(
                    "distill",
                    *COMMON,
                    "--teacher",
                    teachers[seed] / "teacher.pt",
                    *setting,
                    *options,
                    "--seed",
                    seed,
                    "--out",
                    run,
                    "--force",
                    env=env,
                )
            runs.append(metrics(run))
        schedule_rows.append(row(f"schedule: {label}", runs, teacher_cost))
    best_schedule = max(schedule_rows, key=lambda r: statistics.fmean(r["val"]))
    rows.append({**best_schedule, "name": f"best {best_schedule['name']}"})
    teacher_test = [metrics(t)["teacher"]["test_accuracy"] for t in teachers]
    lines = [
        f"Fashion-MNIST, seed-student (seed-teacher: {pm(teacher_test)} % test), "
        f"{len(SEEDS)} paired seeds, mean ± std; selection on validation. Best sweep cell on validation, "
        f"alone included: {summary['best']['cell']}.",
        "",
        "| recipe | val accuracy % | test accuracy % | student training s | cost incl. teachers s |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['name']} | {pm(r['val'])} | {pm(r['test'])} | {r['student_s']:.1f} | {r['cost_s']:.1f} |" for r in rows
    ]
    lines += ["", "Schedules tried (the best on validation is in the table above):", ""]
    lines += [f"- {r['name']}: val {pm(r['val'])}, test {pm(r['test'])}" for r in schedule_rows]
    (work / "distill_modes.json").write_text(json.dumps({"rows": rows, "schedules": schedule_rows}, indent=1))
    publish(lines, args.markdown)


if __name__ == "__main__":
    main()

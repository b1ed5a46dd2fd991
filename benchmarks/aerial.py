"""RSSCN7 end to end (issue 21): the defaults, distillation against the student alone, a longer recipe.

    .venv/bin/python benchmarks/aerial.py defaults --markdown benchmarks/results/aerial.md   # ~15 min
    .venv/bin/python benchmarks/aerial.py seeds --seeds 0 1 2 --jobs 2                       # ~45 min
    .venv/bin/python benchmarks/aerial.py paired --markdown benchmarks/results/aerial.md     # ~25 min
    .venv/bin/python benchmarks/aerial.py longer --markdown benchmarks/results/aerial.md     # ~37 min
    .venv/bin/python benchmarks/aerial.py alone-128 --seeds 0 1 2 --markdown benchmarks/results/aerial.md  # 26 min/seed
    .venv/bin/python benchmarks/aerial.py alone-96 --seeds 0 1 2 --jobs 2                   # ~45 min
    .venv/bin/python benchmarks/aerial.py alone-64-cutmix --seeds 0 1 2 --jobs 2            # ~25 min
    .venv/bin/python benchmarks/aerial.py alone-128-cutmix --seeds 0 1 2 --jobs 3           # ~75 min

defaults  `kd-edge pipeline --dataset folder:RSSCN7 --out WORK/defaults`, nothing else: wall time of the whole
          command and of each stage, teacher, student, FP32 and INT8 test accuracy, the bundle's form, the
          student's projected per-frame latency on the rpi4 profile (the pipeline's bench).
seeds     the defaults as whole pipeline runs with `--seed S` for each of --seeds (--jobs 2: two at once, one
          thread each): teacher and student validation and test accuracy, INT8, wall time; mean and std.
paired    the default student alone (--alpha 1) against the default student distilled (the defaults), both from
          the defaults run's frozen teacher, seeds 0, 1, 2: within a seed both start from the same weights and
          see the data in the same order and under the same augmentation draws.
longer    the longer distillation recipe (LONGER below) as one pipeline.
alone-128 the student alone at the photos' own 128 px for 250 epochs (ALONE_128; 88 % on two seeds of three), then
          `kd-edge bundle`, per seed.
alone-96  the same at 96 px (ALONE_96), its crops cut from the 128 px photos.
alone-64-cutmix, alone-128-cutmix   the default student alone at 64 px, and the 128 px recipe, with --cutmix 0.5:
          the latter is the documented longer recipe (89.58 % over 3 seeds).

Runs go through the kd-edge CLI into --work; a finished run is kept and not rerun (its times then are those
of the run that made it). RSSCN7 is read from ../shared/datasets/rsscn7 (--data). Test accuracy is reported;
every selection is on validation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from markdown_out import show

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
# 96 px, the student's own architecture as the teacher (pooled-base), long schedules: 37 min on 2 cores
LONGER = ["--image-size", "96", "--teacher-model", "pooled-base", "--teacher-epochs", "250", "--epochs", "300"]
ALONE_128 = ["--image-size", "128", "--alpha", "1", "--student-model", "pooled-base", "--epochs", "250"]
# the same at 96 px: crops cut from the 128 px photos (kd_edge.training.augment), 2.25x the 64 px student's cost
ALONE_96 = ["--image-size", "96", "--alpha", "1", "--student-model", "pooled-base", "--epochs", "250"]
# CutMix on half the batches (--cutmix 0.5), at the defaults' 64 px and in the 128 px recipe
ALONE = {
    "alone-128": ALONE_128,
    "alone-96": ALONE_96,
    "alone-64-cutmix": ["--alpha", "1", "--cutmix", "0.5"],
    "alone-128-cutmix": [*ALONE_128, "--cutmix", "0.5"],
}


def kd_edge(*args) -> float:
    """Run a kd-edge command; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "kd-edge"), *map(str, args)], check=True)
    return time.perf_counter() - started


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def pipeline(run: Path, data: Path, extra: list[str]) -> list[str]:
    """One pipeline run and its figures, as markdown lines."""
    wall = None if (run / "report.md").is_file() else kd_edge("pipeline", "--dataset", f"folder:{data}", *extra,
                                                                "--out", run)  # fmt: skip
    m = metrics(run)
    times = m["wall_time_s"]
    names = ("teacher", "student", "export", "quantize", "bundle", "bench", "report")
    stages = ", ".join(f"{name} {times[name]:.0f} s" for name in names if name in times)
    q = m["quantize"]
    bench = [r for r in m["bench"]["results"] if r.get("batch_size") == 1]
    projected = "; ".join(
        f"{r['model']} {r['threads']} thread(s): {r['p50_ms']:.3f} ms on this host"
        + (f", {r['projected_p50_ms']:.3f} ms projected" if r.get("projected_p50_ms") else "")
        for r in bench
    )
    return [
        f"* command: `kd-edge pipeline --dataset folder:RSSCN7 {' '.join(extra)} --out {run.name}`",
        f"* wall time: {wall:.0f} s (this run)" if wall else "* wall time: (kept run; see its metrics.json)",
        f"* stages: {stages}; total {times.get('total', 0):.0f} s",
        f"* data: {m['data']['train']} train / {m['data']['val']} val / {m['data']['test']} test, input "
        f"{m['data']['input_shape']}",
        *(
            f"* {role} {m[role]['model']} ({m[role]['epochs']} epochs): test {m[role]['test_accuracy']:.2%}"
            for role in ("teacher", "student")
        ),
        f"* FP32 {q['fp32_test_accuracy']:.2%}, INT8 {q['int8_test_accuracy']:.2%} on test "
        f"(drop {q['test_drop_points']:.2f} points; validation drop {q['val_drop_points']:.2f})",
        f"* bundle: {m['bundle']['form']} ({m['bundle']['reason']})",
        f"* bench (profile {m['bench']['profile']}): {projected}",
    ]


def paired(work: Path, data: Path, teacher: Path, jobs: int) -> list[str]:
    """Each (cell, seed) run once; with ``jobs`` 2, two at once with one thread each (the accuracies do not
    depend on it; the train seconds then are those of a shared machine)."""
    cells = {"student alone (alpha 1)": ["--alpha", "1"], "distilled (defaults)": ["--teacher", teacher]}
    threads = ["--threads", "1"] if jobs > 1 else []
    runs = {
        (name, seed): work / f"paired-{'alone' if '--alpha' in options else 'kd'}-{seed}"
        for name, options in cells.items()
        for seed in SEEDS
    }

    def train(key) -> None:
        (name, seed), run = key, runs[key]
        if not (run / "metrics.json").is_file() or "student" not in metrics(run):
            kd_edge("distill", "--dataset", f"folder:{data}", *cells[name], *threads, "--seed", seed, "--out", run,
                    "--force")  # fmt: skip

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(train, runs))
    results: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for (name, _), run in runs.items():
        m = metrics(run)["student"]
        results.setdefault(name, []).append(m["test_accuracy"])
        seconds.setdefault(name, []).append(m["train_seconds"])
    lines = [
        "| student | test accuracy, seeds 0, 1, 2 | mean +- std | train seconds (mean) |",
        "| --- | --- | --- | --- |",
    ]
    for name, values in results.items():
        listed = ", ".join(f"{100 * v:.2f}" for v in values)
        lines.append(f"| {name} | {listed} | {pm(values)} | {statistics.mean(seconds[name]):.0f} |")
    alone, distilled = results.values()
    gains = [100 * (kd - solo) for solo, kd in zip(alone, distilled, strict=True)]
    lines.append(f"\nPaired gain of distillation per seed: {', '.join(f'{g:+.2f}' for g in gains)} points.")
    if jobs > 1:
        lines.append(f"Train seconds with {jobs} runs at once, one thread each.")
    return lines


def alone(name: str, work: Path, data: Path, seeds: list[int], jobs: int) -> list[str]:
    """ALONE[name] trained per seed (``jobs`` at once, one thread each when more than one), then bundled one after
    the other: test and validation accuracy, INT8, the form shipped, the times."""
    threads = ["--threads", "1"] if jobs > 1 else []

    def train(seed: int) -> None:
        run = work / f"{name}-{seed}"
        if not (run / "metrics.json").is_file() or "student" not in metrics(run):
            kd_edge("distill", "--dataset", f"folder:{data}", *ALONE[name], *threads, "--seed", seed, "--out", run,
                    "--force")  # fmt: skip

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(train, seeds))
    lines = [
        "| seed | test (val) | INT8 test | bundle ships | train s | bundle s |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    for seed in seeds:
        run, bundle = work / f"{name}-{seed}", work / f"{name}-{seed}-bundle"
        bundle_seconds = kd_edge("bundle", run, "--out", bundle, "--force")
        student, card = metrics(run)["student"], json.loads((bundle / "model.json").read_text())
        lines.append(
            f"| {seed} | {student['test_accuracy']:.2%} ({student['val_accuracy']:.2%}) | "
            f"{card['test_accuracy']:.2%} | {card['bundle']['deployable']['form']} | {student['train_seconds']:.0f} | "
            f"{bundle_seconds:.0f} |"
        )
    return lines


def seeded_defaults(work: Path, data: Path, seeds: list[int], jobs: int) -> list[str]:
    """The defaults' pipeline once per seed, ``jobs`` at once (one thread each when more than one)."""
    threads = ["--threads", "1"] if jobs > 1 else []

    def run(seed: int) -> None:
        out = work / f"defaults-seed{seed}"
        if not (out / "report.md").is_file():
            kd_edge("pipeline", "--dataset", f"folder:{data}", "--seed", seed, *threads, "--out", out)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(run, seeds))
    lines = [
        "| seed | teacher val / test | student val / test | INT8 test | pipeline s |",
        "| --- | --- | --- | --- | ---: |",
    ]
    students, validations = [], []
    for seed in seeds:
        m = metrics(work / f"defaults-seed{seed}")
        teacher, student = m["teacher"], m["student"]
        students.append(student["test_accuracy"])
        validations.append(student["val_accuracy"])
        lines.append(
            f"| {seed} | {teacher['val_accuracy']:.2%} / {teacher['test_accuracy']:.2%} | {student['val_accuracy']:.2%}"
            f" / {student['test_accuracy']:.2%} | {m['quantize']['int8_test_accuracy']:.2%} | "
            f"{m['wall_time_s']['total']:.0f} |"
        )
    listed = ", ".join(map(str, seeds))
    lines.append(f"\nStudent over seeds {listed}: test {pm(students)}, validation {pm(validations)}.")
    if jobs > 1:
        lines.append(f"{jobs} runs at once, one thread each: their times are those of a shared machine.")
    return lines


def pm(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.2f} +- {100 * statistics.stdev(values):.2f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("defaults", "seeds", "paired", "longer", *ALONE))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "rsscn7")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "aerial-benchmark")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each when 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the seeds of seeds and alone-*")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.what == "defaults":
        lines = pipeline(args.work / "defaults", args.data, [])
    elif args.what == "seeds":
        lines = seeded_defaults(args.work, args.data, args.seeds, args.jobs)
    elif args.what == "longer":
        lines = pipeline(args.work / "longer", args.data, LONGER)
    elif args.what in ALONE:
        lines = alone(args.what, args.work, args.data, args.seeds, args.jobs)
    else:
        lines = paired(args.work, args.data, args.work / "defaults" / "teacher.pt", args.jobs)
    show([f"## {args.what} ({time.strftime('%Y-%m-%d')})", "", *lines], args.markdown)


if __name__ == "__main__":
    sys.exit(main())

"""A grid of temperatures and alphas, each cell distilled with several seeds, resumable.

    sweep(SweepSettings(temperatures=(1, 4), alphas=(0.1, 0.5), seeds=3), "runs/sweep")

Layout of OUT:

    teachers/seed<S>/      the teacher of seed S (offline mode without --teacher), shared by every cell
    cells/T<T>-a<A>/seed<S>/  one `kd-edge distill` run folder per cell and seed
    cells/alone/seed<S>/   alpha = 1: the student alone, whatever the temperature (run once per seed)
    sweep.json, sweep.md, sweep.png   mean and standard deviation per cell; the best on validation

Every run folder is continued with ``--resume``'s rules: a finished one is kept, an interrupted
one resumes from its saved state, and one that was run with other settings (epochs, teacher
file, data...) is refused with what differs, so a summary never mixes two configurations.

Within a seed every cell starts from the same student weights and data order (``distill``'s
seeding), so the cells are compared pairwise. The best cell is chosen on the validation split;
the test split is only reported.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from kd_edge.interrupt import stop_if_requested
from kd_edge.io import atomic_save_figure, atomic_write_json, atomic_write_text, ensure_writable_dir
from kd_edge.settings.search import SweepSettings
from kd_edge.settings.training import TeacherSettings


@dataclass(frozen=True)
class Cell:
    temperature: float | None  # None: alpha = 1, where the temperature plays no part
    alpha: float

    @property
    def name(self) -> str:
        return "alone" if self.temperature is None else f"T{self.temperature:g}-a{self.alpha:g}"


def cells_of(config: SweepSettings) -> list[Cell]:
    cells = [Cell(None if alpha >= 1 else t, alpha) for t in config.temperatures for alpha in config.alphas]
    return list(dict.fromkeys(cells))  # alpha = 1 at every temperature is one cell


def is_finished(run_dir: Path, stage: str = "student") -> bool:
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return False
    try:
        return stage in json.loads(metrics.read_text()) and (run_dir / f"{stage}.pt").is_file()
    except json.JSONDecodeError:
        return False


def seeds_of(config: SweepSettings) -> tuple[int, ...]:
    first = config.distill.run.seed
    return tuple(range(first, first + config.seeds))


def sweep(config: SweepSettings, out, *, teachers: tuple[str, ...] = (), progress_factory=None, on_cell=None) -> dict:
    """Run every unfinished (cell, seed) in ``out``, distilling from ``teachers`` (offline without one: a teacher
    trained per seed), then summarise; ``on_cell(name, seed, ran)`` reports each."""
    from kd_edge.training.distill import distill, train_teacher

    out = ensure_writable_dir(out)
    base = config.distill
    base.check_teachers(len(teachers))
    new_progress = progress_factory or (lambda: None)
    for seed in seeds_of(config):
        teacher_paths = tuple(str(t) for t in teachers)
        if base.mode == "offline" and not teacher_paths and any(c.temperature is not None for c in cells_of(config)):
            teacher_dir = out / "teachers" / f"seed{seed}"
            stop_if_requested(f"the teacher of seed {seed}")
            settings = TeacherSettings(
                data=base.data, run=replace(base.run, seed=seed), teacher=base.teacher, optim=base.optim
            )
            ran = not is_finished(teacher_dir, "teacher")
            train_teacher(settings, teacher_dir, resume=True, progress=new_progress() if ran else None)
            if on_cell and ran:
                on_cell("teacher", seed, True)
            teacher_paths = (str(teacher_dir / "teacher.pt"),)
        for cell in cells_of(config):
            run_dir = out / "cells" / cell.name / f"seed{seed}"
            stop_if_requested(f"cell {cell.name}, seed {seed}")
            alone = cell.temperature is None
            settings = replace(
                base,
                kd=replace(base.kd, alpha=cell.alpha, temperature=cell.temperature or base.kd.temperature),
                mode="offline" if alone else base.mode,
                teacher_weights="equal" if alone else base.teacher_weights,
                run=replace(base.run, seed=seed),
            )
            ran = not is_finished(run_dir)
            cell_teachers = () if alone else teacher_paths
            # resume: a finished cell is checked against these settings and kept, an interrupted one continues
            distill(
                settings,
                run_dir,
                teachers=cell_teachers,
                resume=True,
                progress=new_progress() if ran else None,
                stop_at_chance=False,  # a cell at chance is one of the sweep's results
            )
            if on_cell:
                on_cell(cell.name, seed, ran)
    return summarize(config, out)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(config: SweepSettings, out: Path) -> dict:
    rows = []
    for cell in cells_of(config):
        students = [
            json.loads((out / "cells" / cell.name / f"seed{seed}" / "metrics.json").read_text())["student"]
            for seed in seeds_of(config)
        ]
        val, test = ([s[key] for s in students] for key in ("val_accuracy", "test_accuracy"))
        (val_mean, val_std), (test_mean, test_std) = mean_std(val), mean_std(test)
        rows.append(
            {
                "cell": cell.name,
                "temperature": cell.temperature,
                "alpha": cell.alpha,
                "val_mean": val_mean,
                "val_std": val_std,
                "test_mean": test_mean,
                "test_std": test_std,
                "train_seconds_mean": statistics.fmean(s["train_seconds"] for s in students),
                "seeds": list(seeds_of(config)),
                "val": val,
                "test": test,
            }
        )
    best = max(rows, key=lambda row: row["val_mean"])
    summary = {
        "mode": config.distill.mode,
        "dataset": config.distill.data.dataset,
        "student_model": config.distill.student.model,
        "selected_on": "validation (mean over seeds); test is only reported",
        "best": {key: best[key] for key in ("cell", "temperature", "alpha", "val_mean", "test_mean", "test_std")},
        "cells": rows,
    }
    atomic_write_json(out / "sweep.json", summary)
    atomic_write_text(out / "sweep.md", markdown(summary, config.seeds))
    heat_map(config, rows, out / "sweep.png")
    return summary


def markdown(summary: dict, seeds: int) -> str:
    lines = [
        f"Sweep of {summary['mode']} distillation on {summary['dataset']} ({summary['student_model']}), "
        f"{seeds} seed(s) per cell: mean ± std. Best on validation: **{summary['best']['cell']}**.",
        "",
        "| T | alpha | val accuracy | test accuracy | train s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in summary["cells"]:
        temperature = "-" if row["temperature"] is None else f"{row['temperature']:g}"
        lines.append(
            f"| {temperature} | {row['alpha']:g} | {100 * row['val_mean']:.2f} ± {100 * row['val_std']:.2f} | "
            f"{100 * row['test_mean']:.2f} ± {100 * row['test_std']:.2f} | {row['train_seconds_mean']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def heat_map(config: SweepSettings, rows: list[dict], path: Path) -> bool:
    """Mean validation accuracy per (T, alpha); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    temperatures = sorted(set(config.temperatures))
    alphas = sorted(set(config.alphas))
    by_cell = {row["cell"]: row for row in rows}
    grid = [[by_cell[Cell(None if a >= 1 else t, a).name]["val_mean"] * 100 for a in alphas] for t in temperatures]
    figure, axes = plt.subplots(figsize=(1.3 * len(alphas) + 2.5, 0.8 * len(temperatures) + 1.8))
    image = axes.imshow(grid, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    axes.set_yticks(range(len(temperatures)), [f"{t:g}" for t in temperatures])
    axes.set_xlabel("alpha (weight of the hard-label term)")
    axes.set_ylabel("temperature T")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", color="white", fontsize=8)
    axes.set_title(f"validation accuracy %, mean of {config.seeds} seed(s)")
    figure.colorbar(image)
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=110)
    plt.close(figure)
    return True

"""Does distillation pay with a longer budget and a stronger teacher? (issue 10's goal, second setting)

    .venv/bin/python benchmarks/kd_budget.py --markdown benchmarks/results/kd_budget.md   # ~2 h

distill_modes.py finds no mode that earns its cost at 5 student epochs, where the student is
still learning and its teacher (seed-teacher, 5 epochs) is only 1.4 points ahead. Here:

  teachers  seed-teacher and cnn-base, each trained 15 epochs with --augment (seed 0), frozen,
            the same for every run;
  students  seed-student, the default recipe (AdamW, one-cycle, batch 256), no augmentation
            (frozen teachers' soft labels are cached), 15 or 30 epochs:
              student alone (alpha 1); offline KD at T=4 with alpha 0.5 and 0.1;
            and at 30 epochs, with the better of those two KD cells on validation:
              online KD (a seed-teacher trains alongside, from scratch, for the same epochs);
              multi-teacher KD (seed-teacher + cnn-base, equal weights);
              two schedules (alpha 0.9 -> 0.1 linear; T 8 -> 1 cosine).

Seeds 0, 1, 2 pair the rows: within a seed every student starts from the same weights and sees
the data in the same order. Each run keeps its best epoch on validation; test accuracy is
reported. The goal checked per row, against the student alone at the same budget: more than
two standard deviations (of the student alone's test accuracy) better, and at least half of
the gap between the student alone and the teacher (the ensemble for multi-teacher KD,
the seed-teacher otherwise) recovered.

Two runs go at once, one thread each. Runs are kept in --work; a finished run is not rerun.
"""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distill_modes import SCHEDULES, fashion_args, finished, kd_edge, metrics, pm, publish  # sibling's helpers

SEEDS = (0, 1, 2)
BUDGETS = (15, 30)
MODES_BUDGET = 30  # where the student alone overfits: the budget at which distillation has most to give
TEACHER_EPOCHS = 15
DATA = ["--dataset", "fashion-mnist", "--threads", "1"]
ALONE = "student alone"
CELLS = {ALONE: ["--alpha", "1"], "KD T=4, alpha 0.5": ["-T", "4", "--alpha", "0.5"]}
CELLS["KD T=4, alpha 0.1"] = ["-T", "4", "--alpha", "0.1"]
SCHEDULES_TRIED = ("alpha 0.9 -> 0.1, linear", "T 8 -> 1, cosine")


def slug(recipe: str) -> str:
    return recipe.split(" (")[0].replace(" ", "").replace("=", "").replace(",", "-").replace(">", "")


def train_teacher(folder: Path, model: str, env) -> dict:
    if not finished(folder, "teacher"):
        command = ["teacher", *DATA, "--model", model, "--epochs", TEACHER_EPOCHS, "--augment"]
        kd_edge(*command, "--seed", 0, "--out", folder, "--force", env=env)
    return metrics(folder)


def student_run(work: Path, job: tuple, env) -> dict:
    """One student: job is (epochs, recipe name, its options, frozen teacher files, seed)."""
    epochs, recipe, options, teachers, seed = job
    run = work / f"e{epochs}" / slug(recipe) / f"seed{seed}"
    if not finished(run):
        frozen = [option for path in teachers for option in ("--teacher", path)]
        command = ["distill", *DATA, "--student-model", "seed-student", "--epochs", epochs, *frozen, *options]
        kd_edge(*command, "--seed", seed, "--out", run, "--force", env=env)
    return metrics(run)


def run_all(work: Path, jobs: list[tuple], env) -> dict:
    with ThreadPoolExecutor(max_workers=2) as pool:  # two single-threaded runs fill this machine's 2 cores
        runs = pool.map(lambda job: student_run(work, job, env), jobs)
        return {(epochs, recipe, seed): run for (epochs, recipe, *_, seed), run in zip(jobs, runs, strict=True)}


def goal(alone_test: list[float], test: list[float], teacher_test: float) -> str:
    gain = statistics.fmean(test) - statistics.fmean(alone_test)
    paired = [t - a for t, a in zip(test, alone_test, strict=True)]
    gap = teacher_test - statistics.fmean(alone_test)
    two_std = 2 * statistics.stdev(alone_test)
    share = f"{gain / gap:.0%} of the {100 * gap:.2f}-point gap" if gap > 0 else "no gap to recover"
    met = gain > two_std and gap > 0 and gain >= gap / 2
    return (
        f"{100 * gain:+.2f} (paired {pm(paired)}; 2 std of alone {100 * two_std:.2f}); "
        f"{share}; goal {'met' if met else 'not met'}"
    )


def main() -> None:
    args, env = fashion_args(__doc__, "kd_budget")
    work = args.work
    seed_teacher = train_teacher(work / "teacher", "seed-teacher", env)["teacher"]
    seed_file = work / "teacher" / "teacher.pt"
    cells = [
        (epochs, recipe, options, [] if recipe == ALONE else [seed_file], seed)
        for epochs in BUDGETS
        for recipe, options in CELLS.items()
        for seed in SEEDS
    ]
    # The cells at MODES_BUDGET first: the modes need the better KD cell there.
    found = run_all(work, [job for job in cells if job[0] == MODES_BUDGET], env)
    cnn_base = train_teacher(work / "teacher-cnn-base", "cnn-base", env)["teacher"]

    def row_runs(epochs: int, recipe: str) -> list[dict]:
        return [run for job, run in found.items() if job[0] == epochs and job[1] == recipe]

    def val_mean(recipe: str) -> float:
        return statistics.fmean(r["student"]["val_accuracy"] for r in row_runs(MODES_BUDGET, recipe))

    best = max((r for r in CELLS if r != ALONE), key=val_mean)
    setting = CELLS[best]
    named = best.removeprefix("KD ")
    modes = {
        f"online KD ({named})": (["--mode", "online", "--teacher-model", "seed-teacher", *setting], []),
        f"multi-teacher KD, seed-teacher + cnn-base ({named})": (
            ["--mode", "multi", *setting],
            [seed_file, work / "teacher-cnn-base" / "teacher.pt"],
        ),
    }
    for label in SCHEDULES_TRIED:
        modes[f"schedule {label} (from {named})"] = ([*setting, *SCHEDULES[label]], [seed_file])
    mode_jobs = [
        (MODES_BUDGET, name, options, teachers, seed) for name, (options, teachers) in modes.items() for seed in SEEDS
    ]
    found |= run_all(work, mode_jobs + [job for job in cells if job[0] != MODES_BUDGET], env)

    lines = [
        f"Fashion-MNIST, seed-student, {len(SEEDS)} paired seeds, mean ± std; each run's best epoch on "
        f"validation. Frozen teachers, {TEACHER_EPOCHS} epochs with --augment: seed-teacher "
        f"{100 * seed_teacher['test_accuracy']:.2f} % test, cnn-base {100 * cnn_base['test_accuracy']:.2f} %. "
        f"Modes at {MODES_BUDGET} epochs use the better KD cell there on validation: {best}.",
        "",
        "| student epochs | recipe | val accuracy % | test accuracy % | student training s | teacher test % "
        "| against alone, test points |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for epochs in BUDGETS:
        alone_test = [r["student"]["test_accuracy"] for r in row_runs(epochs, ALONE)]
        for recipe in dict.fromkeys(job[1] for job in found if job[0] == epochs):
            runs = row_runs(epochs, recipe)
            students = [r["student"] for r in runs]
            test = [s["test_accuracy"] for s in students]
            # Frozen teachers are the same in every seed; online KD's differ, and the goal uses their mean.
            teacher_test = [r["teacher"]["test_accuracy"] for r in runs if "teacher" in r]
            versus = goal(alone_test, test, statistics.fmean(teacher_test)) if teacher_test else ""
            lines.append(
                f"| {epochs} | {recipe} | {pm([s['val_accuracy'] for s in students])} | "
                f"{pm(test)} | "
                f"{statistics.fmean(s['train_seconds'] for s in students):.0f} | "
                f"{pm(teacher_test) if teacher_test else ''} | {versus} |"
            )
    publish(lines, args.markdown)


if __name__ == "__main__":
    main()

"""How many epochs should kd-edge's default teacher and student train on Fashion-MNIST? (issue 25)

    .venv/bin/python benchmarks/default_recipe.py --data-dir ../shared/datasets   # ~10 min on 2 cores

Runs ``kd-edge distill --dataset fashion-mnist`` with each (teacher epochs, student epochs) of
--recipes, seeds 0, 1, 2 (paired: within a seed every recipe's teacher and student start from the
same weights and see the data in the same order), each as its own process timed from outside.
The choice is made on validation: the cheapest recipe whose student's mean validation accuracy
is within one standard deviation (over the seeds) of the longest recipe's. Test accuracy is
reported, never used to choose. Writes benchmarks/results/OUT.{md,json} (--out, default default-recipe).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def run(recipe: tuple[int, ...], seed: int, data_dir: Path, work: Path) -> dict:
    teacher_epochs, student_epochs, batch = (*recipe, 256)[:3]
    out = work / f"t{teacher_epochs}-s{student_epochs}-b{batch}-seed{seed}"
    kd_edge = str(Path(sys.executable).with_name("kd-edge"))
    command = [kd_edge, "distill", "--dataset", "fashion-mnist", "--data-dir", str(data_dir), "--out", str(out),
               "--force", "--seed", str(seed), "--teacher-epochs", str(teacher_epochs),
               "--epochs", str(student_epochs), "--batch-size", str(batch)]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "recipe": list(recipe),
        "seed": seed,
        "process_seconds": round(seconds, 1),
        "teacher_val": metrics["teacher"]["val_accuracy"],
        "teacher_test": metrics["teacher"]["test_accuracy"],
        "student_val": metrics["student"]["val_accuracy"],
        "student_test": metrics["student"]["test_accuracy"],
        "precision": metrics["data"]["precision"],
    }


def summary(rows: list[dict], recipe: list[int], key: str, scale: float = 100.0) -> tuple[float, float]:
    values = [scale * r[key] for r in rows if r["recipe"] == recipe]
    return statistics.mean(values), statistics.stdev(values)


def markdown(rows: list[dict], recipes: list[list[int]]) -> str:
    longest = max(recipes, key=lambda r: r[0] + r[1])
    best_val, best_std = summary(rows, longest, "student_val")
    cheapest = min(
        (r for r in recipes if summary(rows, r, "student_val")[0] >= best_val - best_std),
        key=lambda r: summary(rows, r, "process_seconds", 1.0)[0],
    )
    lines = [
        f"Fashion-MNIST, `kd-edge distill` defaults but the epochs, seeds 0, 1, 2 (paired), mean ± std; "
        f"precision {rows[0]['precision']}. Chosen on validation: the cheapest recipe within one std of the "
        f"longest's student validation accuracy ({best_val:.2f} - {best_std:.2f} %): **teacher {cheapest[0]}, "
        f"student {cheapest[1]} epochs, batch {(*cheapest, 256)[2]}**.",
        "",
        "| teacher epochs | student epochs | batch | whole run s | teacher val % | teacher test % | student val % | "
        "student test % |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for recipe in recipes:
        cells = [summary(rows, recipe, "process_seconds", 1.0)] + [
            summary(rows, recipe, key) for key in ("teacher_val", "teacher_test", "student_val", "student_test")
        ]
        figures = " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in cells)
        lines.append(f"| {recipe[0]} | {recipe[1]} | {(*recipe, 256)[2]} | {figures} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    parser.add_argument(
        "--recipes", default="2:3,2:2,1:3,1:2", help="teacher:student epochs[:batch, default 256], comma-separated"
    )
    parser.add_argument("--out", default="default-recipe", help="results file names under benchmarks/results/")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / "work" / "default-recipe")
    args = parser.parse_args()
    recipes = [[int(x) for x in r.split(":")] for r in args.recipes.split(",")]
    rows = []
    for seed in range(args.seeds):
        for recipe in recipes:  # seeds outermost: a drift of the machine's speed touches every recipe alike
            rows.append(run(tuple(recipe), seed, args.data_dir.resolve(), args.work))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(rows, recipes))
    print(markdown(rows, recipes))


if __name__ == "__main__":
    main()

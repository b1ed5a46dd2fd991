"""`kd-edge search` on Fashion-MNIST for the Raspberry Pi 4, at a tight and a loose latency budget.

    .venv/bin/python benchmarks/search_budgets.py --markdown benchmarks/results/search.md

1. The defaults' teacher (`kd-edge teacher --dataset fashion-mnist`) and the fixed default
   student distilled from it (`kd-edge distill --teacher ...`: cnn-small, 3 epochs), plus the
   same student at 7 epochs, the training a search finalist gets (rungs of 200, 400 and 800 steps
   are 1, 2 and 4 epochs here).
2. The default student's projected rpi4 latency, measured as the search measures its
   candidates (exported, quantized, one thread, batch 1, under the profile), in its faster form.
3. Two searches with the default space: budget = half that latency (the goal: at least as
   accurate as the default student at no more than half its latency) and budget = that
   latency (the goal: clearly more accurate within the same latency), --time-limit each.

Everything goes through the kd-edge CLI into --work; run again to resume.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def kd_edge(*args, env) -> float:
    print("kd-edge", " ".join(map(str, args)), flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kd_edge", *map(str, args)], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def default_student_latency(run: Path, teacher: Path, work: Path) -> dict:
    """The default student's latency exactly as the search times its finalists."""
    from kd_edge.search.space import Candidate, describe_space
    from kd_edge.search.timing import CandidateMeasurer
    from kd_edge.settings import SearchSettings
    from kd_edge.training.checkpoint import load_checkpoint

    config = SearchSettings(latency_budget_ms=1.0, profile="rpi4")
    teacher = load_checkpoint(teacher)
    candidate: Candidate = describe_space(("cnn-small",), teacher)[0]
    candidate.rungs = [{"val_accuracy": json.loads((run / "metrics.json").read_text())["student"]["val_accuracy"],
                        "run": str(run)}]  # fmt: skip
    return CandidateMeasurer(config, teacher.card, None).finalist(candidate, work / "default-timed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "search")
    parser.add_argument("--fashion-dir", default="/work/shared/datasets")
    parser.add_argument("--time-limit", default="12m")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    os.environ["KD_EDGE_DATA"] = args.fashion_dir
    env = dict(os.environ)
    work = args.work
    teacher = work / "teacher"
    if not (teacher / "teacher.pt").is_file():
        kd_edge("teacher", "--dataset", "fashion-mnist", "--out", teacher, "--force", env=env)
    students = {}
    for epochs in (3, 7):
        run = work / f"default-{epochs}ep"
        if not (run / "student.pt").is_file():
            flags = ["--epochs", epochs] if epochs != 3 else []
            kd_edge("distill", "--teacher", teacher / "teacher.pt", *flags, "--out", run, "--force", env=env)
        students[epochs] = json.loads((run / "metrics.json").read_text())["student"]
    timed = default_student_latency(work / "default-3ep", teacher / "teacher.pt", work)
    form = min(timed["latency"], key=lambda f: timed["latency"][f]["ms"])
    default_ms = timed["latency"][form]["ms"]
    searches = {}
    for label, budget in (("tight", default_ms / 2), ("loose", default_ms)):
        out = work / f"search-{label}"
        seconds = kd_edge(
            "search", "--teacher", teacher / "teacher.pt", "--profile", "rpi4", "--latency-budget", f"{budget:.4f}ms",
            "--time-limit", args.time_limit, "--out", out, env=env,
        )  # fmt: skip
        searches[label] = {"budget_ms": budget, "wall_s": seconds, **json.loads((out / "search.json").read_text())}
    lines = [
        f"Default student (cnn-small): {form} form, {default_ms:.4f} ms projected on rpi4 (1 thread, batch 1); "
        + "; ".join(
            f"{e} epochs: val {100 * s['val_accuracy']:.2f} %, test {100 * s['test_accuracy']:.2f} %"
            for e, s in students.items()
        ),
        "",
        "| budget | candidates fitting untrained | finalists | chosen | val % | test % | board ms (form, source) "
        "| vs default latency | search wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, found in searches.items():
        chosen = found["chosen"]
        fits = sum(c["fits_untrained"] for c in found["candidates"])
        cells = (
            [chosen["name"], f"{100 * chosen['val_accuracy']:.2f}", f"{100 * chosen['test_accuracy']:.2f}",
             f"{chosen['board_ms']:.4f} ({chosen['fastest_form']}, {chosen['latency_source']})",
             f"{chosen['board_ms'] / default_ms:.2f}x"]
            if chosen else ["none fits", "", "", "", ""]
        )  # fmt: skip
        lines.append(
            f"| {label}: {found['budget_ms']:.4f} ms | {fits} of {len(found['candidates'])} | "
            f"{len(found['finalists'])} | " + " | ".join(cells) + f" | {found['wall_s']:.0f} |"
        )
    for label in searches:
        lines += ["", f"Front, {label} budget:", "", (work / f"search-{label}" / "search.md").read_text()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

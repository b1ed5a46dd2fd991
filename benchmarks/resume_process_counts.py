"""A distillation started on 1 process and resumed on 2 (torchrun, gloo), and the other way, under the default
step budget with ``--lr-scaling linear``, against uninterrupted runs on the new count; 3 seeds each.

    .venv/bin/python benchmarks/resume_process_counts.py --seeds 3 --markdown benchmarks/results/resume-counts.md

Each resumed run is stopped with SIGTERM when the student's first state is saved (the end of its first
epoch), then continued with ``--resume`` on the other count. The step budget plans other epochs on each
count (mnist-5k: 17 and 30 epochs on 1 process, 36 and 65 on 2), and the resumed run must follow the new
count's plan, with its learning rate (as metrics.json reports it; tests/test_fit_state.py checks the
optimiser's own), and reach the uninterrupted new-count run's test accuracy within the seeds' spread.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SINGLE = [sys.executable, "-m", "kd_edge"]
TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "kd_edge"]
LAUNCHERS = {1: SINGLE, 2: TWO}


def args(out: Path, seed: int) -> list[str]:
    return ["distill", "--dataset", "mnist-5k", "--lr-scaling", "linear", "--seed", str(seed), "--out", str(out)]


def uninterrupted(out: Path, processes: int, seed: int) -> dict:
    subprocess.run([*LAUNCHERS[processes], *args(out, seed)], check=True, capture_output=True)
    return summary(out)


def resumed(out: Path, first: int, then: int, seed: int) -> dict:
    child = subprocess.Popen([*LAUNCHERS[first], *args(out, seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not (out / "student.state.pt").exists():
        if child.poll() is not None:
            raise SystemExit(f"the {first}-process run ended before its student state: {child.communicate()[1]}")
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=300)
    subprocess.run([*LAUNCHERS[then], *args(out, seed), "--resume"], check=True, capture_output=True)
    return summary(out)


def summary(out: Path) -> dict:
    student = json.loads((out / "metrics.json").read_text())["student"]
    return {
        "test": student["test_accuracy"],
        "epochs": student["epochs"],
        "world": student["distributed"]["world_size"],
        "lr": student["distributed"]["effective_lr"],
    }


def mean_std(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    options = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="resume-counts-") as work:
        work = Path(work)
        for seed in range(options.seeds):
            for name, run in (
                ("1 process", lambda out, s: uninterrupted(out, 1, s)),
                ("2 processes", lambda out, s: uninterrupted(out, 2, s)),
                ("1 then 2", lambda out, s: resumed(out, 1, 2, s)),
                ("2 then 1", lambda out, s: resumed(out, 2, 1, s)),
            ):
                result = run(work / f"{name.replace(' ', '-')}-{seed}", seed)
                rows.setdefault(name, []).append(result)
                print(name, seed, result, flush=True)
    lines = [
        f"mnist-5k, `kd-edge distill` defaults with `--lr-scaling linear`, seeds 0-{options.seeds - 1} "
        "(`benchmarks/resume_process_counts.py`); a resumed run was stopped at the end of the student's first epoch.",
        "",
        "| run | processes at the end | student epochs planned | learning rate | student test % (mean ± std) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, results in rows.items():
        lines.append(
            f"| {name} | {results[0]['world']} | {results[0]['epochs']} | {results[0]['lr']:g} "
            f"| {mean_std([r['test'] for r in results])} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if options.markdown:
        options.markdown.write_text(text)


if __name__ == "__main__":
    main()

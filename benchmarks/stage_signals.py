"""SIGTERM (or, with --ctrl-c, SIGINT to the whole process group) at random moments of the stages that do
not train (export, quantize, bundle, bench, a search's timing) and of sweeps, each stopped run continued by
running the same command again, each result compared with an uninterrupted run's.

    .venv/bin/python benchmarks/stage_signals.py --pipeline 8 --search 3 --sweep 3 \\
        --markdown benchmarks/results/stage-signals.md

* pipeline: one uninterrupted `kd-edge pipeline --dataset mnist-5k --deterministic` is the reference (the
  quantizer's latency search off: its choice of FP32 nodes follows timings, which no rerun repeats). Each
  trial copies the reference's run folder, forgets its post-training stages, runs the pipeline again and
  sends SIGTERM after a random delay within those stages' time; the stopped run must exit 143 and say how
  to continue; running it again must finish with the reference's INT8 model and bundle, byte for byte.
* search: a tiny `kd-edge search` from the reference's teacher, SIGTERM at a random moment of the stages
  that do not train (timing the untrained candidates; exporting, quantizing and timing the finalists), in
  turn; run again, the chosen student and its validation accuracy must be the reference's.
* sweep: a 2-cell `kd-edge sweep` from the reference's teacher, SIGTERM at a random moment; run again, every
  cell's validation and test accuracy must be the reference's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KD_EDGE = [sys.executable, "-m", "kd_edge"]
POST_TRAINING = ("export", "quantize", "bundle", "bench", "report")
SIGNAL = (signal.SIGTERM, False)  # (signal, to the whole process group); --ctrl-c: (SIGINT, True)
CONFIG = """
[quantize]
optimize-latency = false
[bench]
rounds = 2
runs = 100
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result


def stop_after(args: list[str], delay: float, done: Path) -> tuple[int, str, float]:
    """Start ``args``, SIGTERM it after ``delay`` s; (exit code, where it stopped, seconds from signal to exit).
    A run whose last output (``done``) exists by then had finished its work: it does not count as a trial."""
    signum, group = SIGNAL
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=group)
    time.sleep(delay)
    if child.poll() is not None or done.exists():
        child.communicate()
        return child.returncode, "finished before the signal", 0.0
    signalled = time.perf_counter()
    if group:  # Ctrl-C in a terminal: every process of the foreground group, the bench children included
        os.killpg(child.pid, signum)
    else:
        child.send_signal(signum)
    _, stderr = child.communicate(timeout=600)
    stopped = re.search(r"Stopped: (.*?)(?:; everything written|; the state is saved|\. To continue)", stderr)
    where = stopped.group(1) if stopped else stderr.strip().splitlines()[-1][:120] if stderr.strip() else "?"
    where = re.sub(r"/\S*/(pipeline|search)-\d+/", "", where)  # the trial's temporary folder
    return child.returncode, where, time.perf_counter() - signalled


def pipeline_result(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "int8": sha(folder / "student.int8.onnx"),
        "bundle": sha(folder / "bundle" / "model.onnx"),
        "int8_test": metrics["quantize"]["int8_test_accuracy"],
        "student_test": metrics["student"]["test_accuracy"],
    }


def pipeline_trials(work: Path, trials: int, rng: random.Random) -> tuple[list[dict], Path, dict]:
    config = work / "stages.toml"
    config.write_text(CONFIG)
    reference = work / "reference"
    args = [*KD_EDGE, "pipeline", "--dataset", "mnist-5k", "--deterministic", "--config", str(config)]
    run([*args, "--out", str(reference)])
    expected = pipeline_result(reference)
    state = json.loads((reference / "pipeline.json").read_text())
    window = sum(state[stage]["seconds"] for stage in POST_TRAINING)
    print(f"pipeline reference: post-training stages {window:.1f} s; {expected}", flush=True)
    rows = []
    while len(rows) < trials:
        folder = work / f"pipeline-{len(rows)}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(reference, folder)
        record = {name: value for name, value in state.items() if name not in POST_TRAINING}
        (folder / "pipeline.json").write_text(json.dumps(record))
        (folder / "report.html").unlink()  # the last output: its return marks a run that had finished
        delay = rng.uniform(1.5, 1.5 + window)  # about 1.5 s of start-up (imports, reading the record) first
        code, where, exit_s = stop_after([*args, "--out", str(folder)], delay, folder / "report.html")
        if where == "finished before the signal":
            continue
        again = run([*args, "--out", str(folder)], check=False)
        result = pipeline_result(folder) if again.returncode == 0 else {}
        differs = [key for key in expected if result.get(key) != expected[key]]
        rows.append(row("pipeline", delay, code, where, exit_s, again.returncode, not differs))
        if differs:  # the bundle's form follows timings: a busy machine can flip it, a signal should not
            rows[-1]["differs"] = {key: (expected[key], result.get(key)) for key in differs}
        print(rows[-1], flush=True)
    return rows, reference, expected


def timed_phases(args: list[str], folder: Path) -> dict:
    """When the search's training (candidates/) and its finalists' timing (finalists/) began, and its end, in s."""
    started, seen = time.perf_counter(), {}
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while child.poll() is None:
        for phase in ("candidates", "finalists"):
            if phase not in seen and (folder / phase).exists():
                seen[phase] = round(time.perf_counter() - started, 1)
        time.sleep(0.05)
    if child.returncode != 0:
        raise SystemExit(f"the reference search failed:\n{child.stderr.read()[-2000:]}")
    return {**seen, "end": round(time.perf_counter() - started, 1)}


def search_result(folder: Path) -> dict:
    chosen = json.loads((folder / "search.json").read_text())["chosen"]
    return {"name": chosen["name"], "val": chosen["val_accuracy"]}


def search_trials(work: Path, teacher: Path, trials: int, rng: random.Random) -> list[dict]:
    args = [
        *KD_EDGE, "search", "--teacher", str(teacher), "--latency-budget", "5ms", "--profile", "rpi4",
        "--space", "cnn@w0.25d1,cnn@w0.5d1,seed@w0.5", "--rungs", "2", "--finalists", "2", "--rung-steps", "40",
        "--bench-runs", "40", "--bench-rounds", "2", "--threads", "1",
    ]  # fmt: skip
    phases = timed_phases([*args, "--out", str(work / "search-reference")], work / "search-reference")
    expected = search_result(work / "search-reference")
    print(f"search reference: phases {phases}; {expected}", flush=True)
    # the stages that do not train: timing the untrained candidates, then the finalists (export, INT8, timing)
    windows = [(2.0, phases["candidates"]), (phases["finalists"], phases["end"])]
    return run_trials("search", args, work, trials, lambda n: rng.uniform(*windows[n % 2]), "search.json",
                      search_result, expected)  # fmt: skip


def sweep_result(folder: Path) -> list:
    return [(c["cell"], c["val"], c["test"]) for c in json.loads((folder / "sweep.json").read_text())["cells"]]


def sweep_trials(work: Path, teacher: Path, trials: int, rng: random.Random) -> list[dict]:
    args = [
        *KD_EDGE, "sweep", "--dataset", "mnist-5k", "--teacher", str(teacher), "-T", "2,4", "--alpha", "0.5",
        "--seeds", "1", "--epochs", "4", "--deterministic",
    ]  # fmt: skip
    started = time.perf_counter()
    run([*args, "--out", str(work / "sweep-reference")])
    length, expected = time.perf_counter() - started, sweep_result(work / "sweep-reference")
    print(f"sweep reference: {length:.1f} s; {expected}", flush=True)
    return run_trials("sweep", args, work, trials, lambda n: rng.uniform(2.0, length), "sweep.json", sweep_result,
                      expected)  # fmt: skip


def run_trials(command, args, work: Path, trials: int, delay_of, done: str, result, expected) -> list[dict]:
    """``trials`` runs of ``args``, the n-th signalled after ``delay_of(n)`` s, each run again and its ``result``
    (of its folder) compared with ``expected``; a run that wrote ``done`` before the signal is not a trial."""
    rows = []
    while len(rows) < trials:
        folder = work / f"{command}-{len(rows)}"
        shutil.rmtree(folder, ignore_errors=True)
        delay = delay_of(len(rows))
        code, where, exit_s = stop_after([*args, "--out", str(folder)], delay, folder / done)
        if where == "finished before the signal":
            continue
        again = run([*args, "--out", str(folder)], check=False)
        same = again.returncode == 0 and result(folder) == expected
        rows.append(row(command, delay, code, where, exit_s, again.returncode, same))
        print(rows[-1], flush=True)
    return rows


def row(command, delay, code, where, exit_s, again, same) -> dict:
    return {
        "command": command,
        "signal_after_s": round(delay, 2),
        "exit": code,
        "stopped": where,
        "exit_after_signal_s": round(exit_s, 2),
        "run_again": again,
        "same_result": same,
    }


def markdown(rows: list[dict], seed: int) -> str:
    lines = [
        f"{'SIGINT to the process group (Ctrl-C)' if SIGNAL[1] else 'SIGTERM'} at random moments, then the same "
        f"command run again (`benchmarks/stage_signals.py`, seed {seed}).",
        "",
        "| command | signal after | exit | where it stopped | exit after signal | run again | same result |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['command']} | {r['signal_after_s']} s | {r['exit']} | {r['stopped']} | {r['exit_after_signal_s']} s "
            f"| {r['run_again']} | {'yes' if r['same_result'] else 'NO: ' + ', '.join(r.get('differs', ['?']))} |"
        )
    code = 128 + SIGNAL[0]
    ok = sum(r["exit"] == code and r["run_again"] == 0 and r["same_result"] for r in rows)
    lines += ["", f"{ok} of {len(rows)} stopped with {code} and, run again, gave the uninterrupted run's result."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=int, default=8)
    parser.add_argument("--search", type=int, default=3)
    parser.add_argument("--sweep", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--ctrl-c", action="store_true", help="SIGINT to the whole process group, as a terminal sends")
    args = parser.parse_args()
    global SIGNAL
    SIGNAL = (signal.SIGINT, True) if args.ctrl_c else SIGNAL
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="stage-signals-") as work:
        work = Path(work)
        rows, reference, _ = pipeline_trials(work, args.pipeline, rng)
        teacher = reference / "teacher.pt"
        rows += search_trials(work, teacher, args.search, rng) if args.search else []
        rows += sweep_trials(work, teacher, args.sweep, rng) if args.sweep else []
    text = markdown(rows, args.seed)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

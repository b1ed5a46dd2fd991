"""SIGKILL and SIGTERM at random moments of a Fashion-MNIST distillation, each run resumed to the end.

    .venv/bin/python benchmarks/kill_trials.py --runs 3 --kills 7 --markdown benchmarks/results/kill_trials.md

One uninterrupted `kd-edge distill --dataset fashion-mnist --deterministic` is the reference;
its wall time W sets the delays. Each trial run is started, killed with SIGKILL after a random
delay (uniform over 1 s to 2W / kills, so that the kills, resumed from what was saved, spread
over data loading, the teacher, the soft labels, the student and the saves), restarted with
--resume, killed again, ... --kills times, then left to finish; a last run is stopped with
SIGTERM at a random moment and must exit 143 and resume too. After each run: the student.pt must
load as a complete kd-edge checkpoint, and its metrics must equal the reference's
(deterministic training resumed from the saved state is the same training).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def command(out: Path, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "kd_edge", "distill", "--dataset", "fashion-mnist", "--deterministic"]
    return [*args, "--out", str(out), *(["--resume"] if resume else [])]


def where(out: Path) -> str:
    """Which stage the run was in, from the files it had written."""
    for stage in ("student", "teacher"):
        state = out / f"{stage}.state.pt"
        if state.exists():
            import torch

            try:
                saved = torch.load(state, weights_only=True)
                return f"{stage} epoch {saved['epoch']} step {saved['steps_done']}"
            except Exception:
                return f"{stage} (state being written)"
    if (out / "teacher.pt").exists():
        return "student, before its first state save" if not (out / "student.pt").exists() else "finishing"
    return "data loading or teacher before its first state save"


def summary(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    student = metrics["student"]
    return {
        "test": student["test_accuracy"],
        "history": [(h["loss"], h["val_accuracy"]) for h in student["history"]],
        "teacher_test": metrics["teacher"]["test_accuracy"],
    }


def valid_student(out: Path) -> bool:
    from kd_edge.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(out / "student.pt")
    return bool(checkpoint.metrics.get("complete")) and not list(out.glob("*.state*.pt"))


def trial(out: Path, kills: int, rng: random.Random, env: dict, longest: float, final_signal=None) -> dict:
    events, resume = [], False
    for number in range(kills + (final_signal is not None)):
        process = subprocess.Popen(command(out, resume), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delay = rng.uniform(1, longest)
        try:
            process.wait(timeout=delay)
            events.append({"delay_s": round(delay, 1), "killed": False, "finished_first": True})
            break
        except subprocess.TimeoutExpired:
            pass
        sig = final_signal if final_signal is not None and number == kills else signal.SIGKILL
        at = where(out)
        process.send_signal(sig)
        _, stderr = process.communicate()
        events.append(
            {"delay_s": round(delay, 1), "signal": signal.Signals(sig).name, "at": at, "exit": process.returncode}
        )
        if sig == signal.SIGTERM:
            events[-1]["message_ok"] = b"--resume" in stderr and b"Traceback" not in stderr
        resume = True
    started = time.perf_counter()
    finish = subprocess.run(command(out, resume), env=env, capture_output=True)
    events.append({"finish_exit": finish.returncode, "finish_s": round(time.perf_counter() - started, 1)})
    return {"events": events, "ok": finish.returncode == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kills", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fashion-dir", default="/work/shared/datasets")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--reference", type=Path, help="a finished reference run to reuse (with --reference-seconds)")
    parser.add_argument("--reference-seconds", type=float, help="its wall time, which sets the delays")
    parser.add_argument("--no-sigterm", action="store_true", help="SIGKILL runs only")
    args = parser.parse_args()
    env = {**os.environ, "KD_EDGE_DATA": args.fashion_dir}
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kd-edge-kills-") as work:
        work = Path(work)
        if args.reference:
            reference_dir, longest = args.reference, args.reference_seconds
        else:
            reference_dir, started = work / "reference", time.perf_counter()
            subprocess.run(command(reference_dir, False), env=env, check=True, capture_output=True)
            longest = time.perf_counter() - started
        reference = summary(reference_dir)
        rows = []
        for run in range(args.runs + (not args.no_sigterm)):
            out = work / f"run{run}"
            sigterm = run == args.runs  # the last run ends with a SIGTERM instead
            spread = longest if sigterm else 2 * longest / args.kills
            result = trial(out, 0 if sigterm else args.kills, rng, env, spread, signal.SIGTERM if sigterm else None)
            result.update(valid=result["ok"] and valid_student(out), same=result["ok"] and summary(out) == reference)
            rows.append(result)
            print(json.dumps(result), flush=True)
    kills = sum(1 for r in rows for e in r["events"] if e.get("signal") == "SIGKILL")
    lines = [
        f"Reference: student {100 * reference['test']:.2f} % test, teacher {100 * reference['teacher_test']:.2f} %, "
        f"{longest:.0f} s. "
        f"{kills} SIGKILLs, {len(rows)} runs.",
        "",
        "| run | signals (delay s, where) | finished | valid student | metrics equal the reference |",
        "| --- | --- | --- | --- | --- |",
    ]
    for number, row in enumerate(rows):
        signals = "; ".join(
            f"{e['signal']} after {e['delay_s']} s in {e['at']} (exit {e['exit']})"
            for e in row["events"]
            if "signal" in e
        )
        lines.append(f"| {number} | {signals or 'none'} | {row['ok']} | {row['valid']} | {row['same']} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()

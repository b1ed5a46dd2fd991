"""The same `kd-edge bundle` five times on one run folder: the same deployable form and exclusions? (issue 22)

    .venv/bin/python benchmarks/deployable_form.py RUN_DIR    # writes benchmarks/results/deployable-form.md, ~5 min

Each run is the command a user types (a fresh process, default settings: the rpi4 profile at its 4
threads, projected from 1 host thread, batch 1, 15 interleaved rounds). Reported per run: the form
shipped, the nodes the quantizer kept in FP32, the INT8/FP32 ratio projected on the board (geometric
mean of the rounds) and this host's own, its 95 % lower bound, the range of the per-round ratios, the
wall time and the archive's SHA-256: every run writes the same --out, so the same form makes the same archive
(the timings go beside it, to bundle.form-timing.json).
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "deployable-form"
RESULTS = HERE / "results"
RUNS = 5


def one_bundle(run_dir: Path, number: int) -> dict:
    out = WORK / "bundle"  # one --out for every run: the archive names its folder
    started = time.perf_counter()
    command = [sys.executable, "-m", "kd_edge", "bundle", str(run_dir), "--out", str(out), "--force"]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(completed.stdout + completed.stderr)
    seconds = time.perf_counter() - started
    card = json.loads((out / "model.json").read_text())
    bundle = card["bundle"]
    int8_card = card if bundle["deployable"]["form"] == "int8" else json.loads(
        subprocess.run([sys.executable, "-c", "import json, sys; from kd_edge.runtime.session import read_card; "
                        "print(json.dumps(read_card(sys.argv[1]).to_dict()))", str(out / "model.int8.onnx")],
                       capture_output=True, text=True, check=True).stdout
    )  # fmt: skip
    decision = json.loads((WORK / "bundle.form-timing.json").read_text())
    return {
        "form": bundle["deployable"]["form"],
        "fp32_nodes": int8_card["quantization"]["excluded_nodes"],
        "ratio": decision["ratio"],
        "host_ratio": host_ratio(decision),
        "lower_bound": decision["lower_bound"],
        "round_ratios": [min(decision["round_ratios"]), max(decision["round_ratios"])],
        "threads": decision["threads"],
        "rounds": len(decision["round_ratios"]),
        "seconds": seconds,
        "archive_sha256": hashlib.sha256((WORK / "bundle.tar.gz").read_bytes()).hexdigest(),
    }


def host_ratio(decision: dict) -> float:
    """INT8/FP32 as timed on this host (geometric mean of the rounds), before any projection."""
    logs = [math.log(i / f) for f, i in zip(decision["fp32_p50_ms"], decision["int8_p50_ms"], strict=True)]
    return math.exp(sum(logs) / len(logs))


def main():
    run_dir = Path(sys.argv[1]).resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    runs = []
    for number in range(1, RUNS + 1):
        runs.append(one_bundle(run_dir, number))
        print(json.dumps(runs[-1]), flush=True)
    lines = [
        "# The same deployable form every time",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `.venv/bin/python benchmarks/deployable_form.py {run_dir}` (the "
        "demo student: `kd-edge pipeline --dataset mnist-5k`).",
        "",
        f"`kd-edge bundle {run_dir.name}` run {RUNS} times, each in a fresh process, default settings "
        f"(rpi4 profile: projected at its {runs[0]['threads']} threads from 1 host thread, batch 1, "
        f"{runs[0]['rounds']} rounds).",
        "",
        "| run | form | nodes kept in FP32 | INT8/FP32 on rpi4 (projected) | 95 % lower bound | per-round ratios | "
        "on this host (1 thread) | seconds | archive SHA-256 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for number, run in enumerate(runs, start=1):
        lines.append(
            f"| {number} | {run['form'].upper()} | {', '.join(run['fp32_nodes']) or 'none'} | {run['ratio']:.2f}x | "
            f"{run['lower_bound']:.2f}x | {run['round_ratios'][0]:.2f}x to {run['round_ratios'][1]:.2f}x | "
            f"{run['host_ratio']:.2f}x | {run['seconds']:.0f} | {run['archive_sha256'][:12]} |"
        )
    same = len({(r["form"], tuple(r["fp32_nodes"])) for r in runs}) == 1
    lines += [
        "",
        f"Same form and same nodes in all {RUNS} runs: {'yes' if same else 'NO'}. The same archive, byte for byte: "
        f"{'yes' if len({r['archive_sha256'] for r in runs}) == 1 else 'NO'}.",
        "",
        "The forms are timed on the machine that makes the bundle and their ratio projected on the board (each "
        "round scaled by the board's INT8/FP32 cost against this host's, measured once a round): an x86 host's "
        "INT8/FP32 ratio is not an ARM board's. The projection is calibrated, not measured: on the board, "
        "`kd-edge bench` of the bundle's two model files times both forms, and `kd-edge bundle --form int8|fp32` "
        "then ships the form the board found faster.",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deployable-form.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "deployable-form.json").write_text(json.dumps(runs, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

"""Does bf16 autocast cost the default recipe accuracy? `kd-edge distill --dataset mnist-5k` defaults with
`--precision fp32` and `--precision bf16` (what `auto` picks on CUDA and on CPUs with native bf16), paired seeds.

    .venv/bin/python benchmarks/precision_accuracy.py --seeds 3 --markdown benchmarks/results/precision-accuracy.md

On a CPU without native bf16 the bf16 runs are emulated (several times slower): the figures are about the
numerics, not the speed. A CUDA run of the pipeline read 96.0 % student test accuracy against 97.4 % on CPU
with the same seed; this separates bf16's share of that from the seed's and the device's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def distill(out: Path, precision: str, seed: int) -> dict:
    args = ["distill", "--dataset", "mnist-5k", "--precision", precision, "--seed", str(seed), "--out", str(out)]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kd_edge", *args], check=True, capture_output=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "teacher": metrics["teacher"]["test_accuracy"],
        "student": metrics["student"]["test_accuracy"],
        "student_val": metrics["student"]["val_accuracy"],
        "seconds": time.perf_counter() - started,
    }


def mean_std(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    options = parser.parse_args()
    results: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory(prefix="precision-") as work:
        for seed in range(options.seeds):
            for precision in results:  # alternating: both precisions see the same machine load
                results[precision].append(distill(Path(work) / f"{precision}-{seed}", precision, seed))
                print(precision, seed, results[precision][-1], flush=True)
    lines = [
        f"mnist-5k, `kd-edge distill` defaults, seeds 0-{options.seeds - 1} (`benchmarks/precision_accuracy.py`): "
        "test accuracy %, mean ± std.",
        "",
        "| precision | teacher test | student val | student test | per-seed student test | wall s (mean) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for precision, runs in results.items():
        per_seed = ", ".join(f"{100 * r['student']:.1f}" for r in runs)
        lines.append(
            f"| {precision} | {mean_std([r['teacher'] for r in runs])} | {mean_std([r['student_val'] for r in runs])} "
            f"| {mean_std([r['student'] for r in runs])} | {per_seed} "
            f"| {statistics.fmean(r['seconds'] for r in runs):.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if options.markdown:
        options.markdown.write_text(text)


if __name__ == "__main__":
    main()

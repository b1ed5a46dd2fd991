"""The core benchmark's teacher and student, FP32 and INT8, under `kd-edge bench` on two profiles, twice (issue 4).

    .venv/bin/python benchmarks/target_benchmark.py [--run c]

Exports and quantizes the run's teacher and student (benchmarks/work/<run>), then runs
`kd-edge bench` with --threads 1 and 2, batch 1 and 32, on the Fashion-MNIST test
split, under the `host` profile and the `rpi4` profile, each twice. Writes the four
JSON reports and a Markdown table with both repeats side by side to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"
KD_EDGE = str(Path(sys.executable).with_name("kd-edge"))
PROFILES = ("host", "rpi4")


def sh(*args) -> None:
    completed = subprocess.run([KD_EDGE, *map(str, args)], capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"kd-edge {' '.join(map(str, args))} failed:\n{completed.stdout}\n{completed.stderr}")


def models(run: str, data_dir: Path) -> list[Path]:
    out = WORK / "exports" / f"{run}-targets"
    paths = []
    for network in ("teacher", "student"):
        sh("export", WORK / run / f"{network}.pt", "--onnx", "--out", out, "--data-dir", data_dir, "--force")
        sh("quantize", out / f"{network}.onnx", "--data-dir", data_dir, "--force")
        paths += [out / f"{network}.onnx", out / f"{network}.int8.onnx"]
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="c")
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    paths = models(args.run, args.data_dir)
    reports = {}
    for profile in PROFILES:
        for repeat in (1, 2):
            target = RESULTS / f"bench-{profile}-{repeat}.json"
            sh(
                "bench",
                *paths,
                "--threads",
                "1",
                "--threads",
                "2",
                "--batch-size",
                "1",
                "--batch-size",
                "32",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                args.data_dir,
                "--profile",
                profile,
                "--json",
                target,
            )
            reports[profile, repeat] = json.loads(target.read_text())
    (RESULTS / "bench.md").write_text(markdown(reports))
    print(markdown(reports))


def markdown(reports: dict) -> str:
    lines = [
        "| profile | model | threads | batch | p50 ms, run 1 | p50 ms, run 2 | difference | p99 ms (run 1) | "
        "images/s (run 1) | accuracy | size (bytes) | peak RSS MB | stable (1, 2) | projected p50 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for profile in PROFILES:
        for first, second in zip(reports[profile, 1]["results"], reports[profile, 2]["results"], strict=True):
            a, b = first["latency_ms"]["p50"], second["latency_ms"]["p50"]
            projected = first["emulation"]["projection"].get("projected_p50_ms")
            lines.append(
                f"| {profile} | {Path(first['model']).name} | {first['threads']} | {first['batch_size']} | {a:.4f} "
                f"| {b:.4f} | {100 * (b - a) / a:+.1f} % | "
                f"{first['latency_ms']['p99']:.4f} | {first['throughput_ips']:,.0f} | "
                f"{100 * first['accuracy']:.2f} % | {first['size_bytes']:,} | "
                f"{first['peak_rss_mb']:.0f} | {'yes' if first['stable'] else 'no'}, "
                f"{'yes' if second['stable'] else 'no'} | "
                f"{'n/a' if projected is None else f'{projected:.3f}'} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""kd-edge against the reference script, side by side, on the full Fashion-MNIST.

Runs each variant as its own process, one after the other in one session, times
the whole process from the outside, reads the test accuracies, and writes a
Markdown table and the raw JSON to benchmarks/results/.

    .venv/bin/python benchmarks/core_benchmark.py                 # all variants (~20 min on 2 cores)
    .venv/bin/python benchmarks/core_benchmark.py --only a,c,d    # some of them
    .venv/bin/python benchmarks/core_benchmark.py --only a,c --rounds 3   # a, c, a, c, a, c: core-rounds.md
    .venv/bin/python benchmarks/core_benchmark.py --only a,c --rounds 3 --isa avx2 --name core-rounds-avx2

--isa avx2 runs every variant, the reference too, as on a CPU with AVX2 and FMA but no AVX-512 (nor native
bf16), the kind the builds run on: oneDNN, ATen's kernels and MKL are each told to use no newer instructions.
The clock, caches and memory stay this host's, so it is an approximation of such a host, not one.

Data: --data-dir (default ../shared/datasets, holding fashion-mnist/*.gz), or
Debian's /usr/share/datasets. The reference script reads torchvision's layout,
so the IDX files are unpacked once into benchmarks/work/data/FashionMNIST/raw.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

from markdown_out import percent
from timed_child import run_timed

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"
IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

# Long recipe: as many epochs as fit in the reference script's wall time.
LONG = ["--teacher-epochs", "8", "--epochs", "20"]

VARIANTS = {
    "a": ("reference script, loss fixed", None),
    "b": ("kd-edge --preset reference", ["--preset", "reference"]),
    "c": ("kd-edge defaults", []),
    "d": ("kd-edge defaults, student alone (--alpha 1)", ["--alpha", "1"]),
    "e": (f"kd-edge defaults, {' '.join(LONG)}", LONG),
    "f": (f"kd-edge defaults, {' '.join(LONG)}, student alone (--alpha 1)", [*LONG, "--alpha", "1"]),
    "g": (f"kd-edge defaults, {' '.join(LONG)}, --student-model cnn-tiny", [*LONG, "--student-model", "cnn-tiny"]),
    # What a CPU without native bf16 runs (--precision auto picks float32 there), on whatever host this is.
    "h": ("kd-edge defaults in float32 (--precision fp32)", ["--precision", "fp32"]),
}


# The environment that caps each library's instructions at a named ISA (each reads it when it first runs).
ISA_CAPS = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def find_fashion(data_dir: Path) -> Path:
    for folder in (data_dir / "fashion-mnist", data_dir, Path("/usr/share/datasets/fashion-mnist")):
        if all((folder / f"{name}.gz").is_file() or (folder / name).is_file() for name in IDX_NAMES):
            return folder
    sys.exit(f"Fashion-MNIST not found under {data_dir}; pass --data-dir or apt-get install dataset-fashion-mnist")


def unpack_for_torchvision(source: Path) -> Path:
    raw = WORK / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_NAMES:
        if not (raw / name).is_file():
            packed = source / f"{name}.gz"
            if packed.is_file():
                with gzip.open(packed) as src, open(raw / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copy(source / name, raw / name)
    return WORK / "data"


def run_reference(torchvision_root: Path) -> dict:
    log = WORK / "a.log"
    child = run_timed([sys.executable, str(HERE / "reference_fixed.py"), "--root", str(torchvision_root)], log)
    result = json.loads(log.read_text().strip().splitlines()[-1])
    return {
        "process_seconds": child.seconds,
        "cpu_seconds": child.cpu_seconds,
        "teacher_test_accuracy": result["teacher_test_accuracy"],
        "student_test_accuracy": result["student_test_accuracy"],
        "teacher_seconds": result["teacher_seconds"],
        "student_seconds": result["student_seconds"],
        "other_seconds": result["script_seconds"] - result["teacher_seconds"] - result["student_seconds"],
    }


def run_kd_edge(key: str, extra: list[str], data_dir: Path) -> dict:
    out = WORK / key
    command = [
        str(Path(sys.executable).with_name("kd-edge")),
        "distill",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--force",
        *extra,
    ]
    child = run_timed(command, WORK / f"{key}.log")
    metrics = json.loads((out / "metrics.json").read_text())
    walls = metrics["wall_time_s"]
    teacher = metrics.get("teacher", {})
    return {
        "process_seconds": child.seconds,
        "cpu_seconds": child.cpu_seconds,
        "teacher_test_accuracy": teacher.get("test_accuracy"),
        "student_test_accuracy": metrics["student"]["test_accuracy"],
        "teacher_seconds": walls.get("teacher", 0.0),
        "student_seconds": walls.get("student", 0.0),
        "soft_label_seconds": walls.get("soft_labels", 0.0),
        "other_seconds": child.seconds
        - walls.get("teacher", 0.0)
        - walls.get("student", 0.0)
        - walls.get("soft_labels", 0.0),
        "command": "kd-edge " + " ".join(command[1:]),
    }


def markdown(results: dict) -> str:
    reference = results.get("a")
    lines = [
        "| variant | teacher test acc | student test acc | teacher s | soft labels s | student s | other s | whole "
        "run s | vs reference wall time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, row in results.items():
        ratio = f"{row['process_seconds'] / reference['process_seconds']:.2f}x" if reference else "n/a"
        lines.append(
            f"| ({key}) {VARIANTS[key][0]} | {percent(row['teacher_test_accuracy'])} | "
            f"{percent(row['student_test_accuracy'])} | "
            f"{row['teacher_seconds']:.1f} | {row.get('soft_label_seconds', 0.0):.1f} | {row['student_seconds']:.1f} | "
            f"{row['other_seconds']:.1f} | {row['process_seconds']:.1f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def rounds_markdown(rounds: list[dict]) -> str:
    """Each round's rows, then per variant the mean and std of its wall time and student accuracy, and its
    wall and CPU time as ratios of the reference's in the same round."""
    lines = [
        "| round | variant | student test acc | whole run s | CPU s | vs reference, same round (wall; CPU) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for number, results in enumerate(rounds, start=1):
        reference = results.get("a")
        for key, row in results.items():
            ratio = "n/a"
            if reference:
                ratio = f"{speedup(reference, row, 'process_seconds')}; {speedup(reference, row, 'cpu_seconds')} faster"
            lines.append(
                f"| {number} | ({key}) {VARIANTS[key][0]} | {percent(row['student_test_accuracy'])} | "
                f"{row['process_seconds']:.1f} | {cpu_seconds(row)} | {ratio} |"
            )
    lines += [
        "",
        "| variant | student test acc, mean ± std | whole run s, mean ± std | vs reference, wall | vs reference, CPU |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in rounds[0]:
        accuracies = [100 * results[key]["student_test_accuracy"] for results in rounds]
        seconds = [results[key]["process_seconds"] for results in rounds]
        accuracy = f"{statistics.mean(accuracies):.2f} ± {statistics.stdev(accuracies):.2f} %"
        lines.append(
            f"| ({key}) {VARIANTS[key][0]} | {accuracy} | "
            f"{statistics.mean(seconds):.1f} ± {statistics.stdev(seconds):.1f} | "
            f"{mean_speedup(rounds, key, 'process_seconds')} | {mean_speedup(rounds, key, 'cpu_seconds')} |"
        )
    return "\n".join(lines) + "\n"


def speedup(reference: dict, row: dict, field: str) -> str:
    return f"{reference[field] / row[field]:.2f}x" if field in reference and field in row else "n/a"


def cpu_seconds(row: dict) -> str:
    return f"{row['cpu_seconds']:.1f}" if "cpu_seconds" in row else "n/a"


def mean_speedup(rounds: list[dict], key: str, field: str) -> str:
    """The mean of the rounds' ratios, and each: JSON written before CPU time was recorded has none."""
    ratios = [
        results["a"][field] / results[key][field]
        for results in rounds
        if "a" in results and field in results["a"] and field in results[key]
    ]
    if not ratios:
        return "n/a"
    return f"{statistics.mean(ratios):.2f}x faster (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    parser.add_argument(
        "--only",
        default=",".join(VARIANTS),
        help="comma-separated variant keys: " + ", ".join(f"{k}={v[0]}" for k, v in VARIANTS.items()),
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the chosen variants in turn this many times; writes NAME.md (--name)"
    )
    parser.add_argument(
        "--isa", choices=sorted(ISA_CAPS), help="run every variant with its libraries capped at this ISA"
    )
    parser.add_argument("--name", default="core-rounds", help="with --rounds: the results' file name, without suffix")
    args = parser.parse_args()

    os.environ.update(ISA_CAPS.get(args.isa, {}))  # the children inherit it
    source = find_fashion(args.data_dir.resolve())
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.rounds > 1:
        run_rounds(args.only.split(","), args.rounds, source, args.name)
        return
    # --only reruns some variants and keeps the others' earlier results.
    previous = RESULTS / "core.json"
    results = json.loads(previous.read_text()) if previous.is_file() else {}
    for key in args.only.split(","):
        label, extra = VARIANTS[key]
        print(f"running ({key}) {label} ...", flush=True)
        results[key] = (
            run_reference(unpack_for_torchvision(source)) if extra is None else run_kd_edge(key, extra, source)
        )
        print(json.dumps(results[key]), flush=True)
    results = {key: results[key] for key in VARIANTS if key in results}
    (RESULTS / "core.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "core.md").write_text(markdown(results))
    print(markdown(results))


def run_rounds(keys: list[str], rounds: int, source: Path, name: str) -> None:
    """The variants in turn, ``rounds`` times (a, c, a, c, ...): the machine's drift falls on all alike."""
    done = []
    for number in range(1, rounds + 1):
        results = {}
        for key in keys:
            label, extra = VARIANTS[key]
            print(f"round {number}: ({key}) {label} ...", flush=True)
            results[key] = (
                run_reference(unpack_for_torchvision(source)) if extra is None else run_kd_edge(key, extra, source)
            )
            print(json.dumps(results[key]), flush=True)
        done.append(results)
        (RESULTS / f"{name}.json").write_text(json.dumps(done, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(rounds_markdown(done))
    print(rounds_markdown(done))


if __name__ == "__main__":
    main()

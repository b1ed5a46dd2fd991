"""Size, accuracy and latency of each deployable form of the core benchmark's students (issue 3).

    .venv/bin/python benchmarks/quantize_benchmark.py [--runs b,c,e] [--threads 2]

For each run folder of benchmarks/work (written by core_benchmark.py) it exports the
student to ONNX, quantizes it with each calibration method, fine-tunes it with QAT,
then times every form with kd-edge bench's harness (each measurement alone in a
fresh process, the forms alternating over 5 rounds):
PyTorch eager FP32, ONNX Runtime FP32, INT8 static (minmax, entropy, percentile),
INT8 after QAT, and an empty ONNX Runtime call (an Identity model) as the floor.
Writes benchmarks/results/quantize.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"
KD_EDGE = str(Path(sys.executable).with_name("kd-edge"))
METHODS = ("minmax", "entropy", "percentile")


def sh(*args) -> None:
    completed = subprocess.run([KD_EDGE, *map(str, args)], capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"kd-edge {' '.join(map(str, args))} failed:\n{completed.stdout}\n{completed.stderr}")


def build_forms(run: str, data_dir: Path) -> dict[str, Path]:
    """Every deployable form of one run's student, as ONNX files."""
    out = WORK / "exports" / run
    sh("export", WORK / run, "--onnx", "--out", out, "--data-dir", data_dir, "--force")
    forms = {"ONNX FP32": out / "student.onnx"}
    for method in METHODS:
        target = out / f"student.int8-{method}.onnx"
        sh("quantize", out / "student.onnx", "--method", method, "--out", target, "--data-dir", data_dir, "--force")
        forms[f"INT8 static, {method}"] = target
    sh("qat", WORK / run, "--epochs", "2", "--out", out, "--data-dir", data_dir, "--force")
    forms["INT8 QAT (2 epochs)"] = out / "student.qat.onnx"
    return forms


def empty_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "empty",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, 28, 28])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    from kd_edge.runtime import ModelCard

    card = ModelCard(classes=tuple("0123456789"), input_shape=(1, 28, 28), mean=(0.0,), std=(1.0,))
    for key, value in card.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def torch_latency_ms(checkpoint: Path, images: np.ndarray, normalize, threads: int, runs: int) -> float:
    import torch

    from kd_edge.training.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint).build_model().eval()
    inputs = torch.from_numpy(normalize(images))
    times = []
    with torch.inference_mode():
        for _ in range(20):
            model(inputs)
        for _ in range(runs):
            start = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def measure(run: str, forms: dict[str, Path], threads: int, data_dir: Path) -> list[dict]:
    from kd_edge.data import load_dataset
    from kd_edge.runtime import OnnxModel
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark
    from kd_edge.settings import BenchSettings

    dataset = load_dataset("fashion-mnist", data_dir)
    models = {name: OnnxModel(path, threads) for name, path in forms.items()}
    models["empty ONNX Runtime call"] = OnnxModel(empty_model(WORK / "exports" / "empty.onnx"), threads)
    # kd-edge bench's harness: each measurement alone in a fresh process, models alternating over 5 rounds.
    settings = BenchSettings(threads=(threads,), batch_sizes=(1, 64), warmup=20, runs=2500, rounds=5)
    job = BenchJob(models=tuple(str(m.path) for m in models.values()), settings=settings)
    report = run_benchmark(job, images=dataset.val.images[:64])
    batch1 = {name: report.p50_ms(str(model.path), 1) for name, model in models.items()}
    batch64 = {name: report.p50_ms(str(model.path), 64) for name, model in models.items()}
    fp32 = models["ONNX FP32"]
    rows = [
        {
            "run": run,
            "form": "PyTorch eager FP32",
            "size_bytes": (WORK / run / "student.pt").stat().st_size,
            "test_accuracy": json.loads((WORK / run / "metrics.json").read_text())["student"]["test_accuracy"],
            "batch1_ms": torch_latency_ms(
                WORK / run / "student.pt", dataset.val.images[:1], fp32.preprocess, threads, 5000
            ),
            "batch64_ms": torch_latency_ms(
                WORK / run / "student.pt", dataset.val.images[:64], fp32.preprocess, threads, 500
            ),
        }
    ]
    for name, model in models.items():
        empty = name.startswith("empty")
        rows.append(
            {
                "run": run,
                "form": name,
                "size_bytes": model.path.stat().st_size,
                "test_accuracy": None if empty else model.accuracy(dataset.test.images, dataset.test.labels),
                "batch1_ms": batch1[name],
                "batch64_ms": batch64[name],
                "fp32_nodes": (model.card.quantization or {}).get("excluded_nodes"),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| student | form | size (bytes) | test acc | batch 1 (us) | batch 64 (ms) | FP32 nodes, disabled ORT "
        "optimisers |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        acc = "n/a" if row["test_accuracy"] is None else f"{100 * row['test_accuracy']:.2f} %"
        notes = ", ".join(row.get("fp32_nodes") or [])
        lines.append(
            f"| {row['run']} | {row['form']} | {row['size_bytes']:,} | {acc} | {1e3 * row['batch1_ms']:.1f} | "
            f"{row['batch64_ms']:.3f} | {notes} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="b,c,e", help="run folders under benchmarks/work")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in args.runs.split(","):
        print(f"building the forms of {run} ...", flush=True)
        rows += measure(run, build_forms(run, args.data_dir), args.threads, args.data_dir)
        print(markdown(rows), flush=True)
    (RESULTS / "quantize.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "quantize.md").write_text(markdown(rows))


if __name__ == "__main__":
    main()

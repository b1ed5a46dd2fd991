"""Is the INT8 student fast outside kd-edge? FP32 against INT8 in kd-edge's runtime and in a plain session (issue 8).

    .venv/bin/python benchmarks/portable_int8.py [--run c] [--rounds 5]
    # writes benchmarks/results/portable_int8.{md,json}, ~5 min

Takes the student of a core-benchmark run folder (benchmarks/work/<run>, written by
core_benchmark.py), exports it, and quantizes it twice with kd-edge's quantizer:

* "INT8 (kd-edge)": as `kd-edge quantize` does now (latency search, pools before the
  Relu where an FP32 node meets INT8);
* "INT8, first conv FP32, not rearranged": the graph the previous version shipped, whose
  speed depended on a hint only kd-edge's runtime read (QDQ propagation off).

Each model is timed at batch 1 and 64 on 1 and 2 threads, each measurement in a fresh
process, the models alternating over --rounds rounds, in two ways: kd-edge's runtime
(`OnnxModel`) and a plain `onnxruntime.InferenceSession(path, options)` whose options
are the defaults but `intra_op_num_threads` (what a C++ or ROS program does).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"


def time_in_child(runtime: str, path: str, threads: int, batch: int, images: np.ndarray, runs: int, queue) -> None:
    if runtime == "plain":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        from kd_edge.runtime import OnnxModel

        inputs = OnnxModel(path, threads=1).preprocess(images[:batch])  # the same preprocessing, outside the timing
        run = lambda: session.run(None, {"input": inputs})  # noqa: E731
    else:
        from kd_edge.runtime import OnnxModel

        model = OnnxModel(path, threads=threads)
        inputs = model.preprocess(images[:batch])
        run = lambda: model.logits(inputs)  # noqa: E731
    for _ in range(20):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    queue.put(float(np.median(times)) * 1e3)


def measure(models: dict[str, Path], images: np.ndarray, rounds: int) -> dict:
    context = multiprocessing.get_context("spawn")
    samples: dict[tuple, list[float]] = {}
    settings = [
        (runtime, threads, batch) for runtime in ("kd-edge", "plain") for threads in (1, 2) for batch in (1, 64)
    ]
    for _ in range(rounds):
        for runtime, threads, batch in settings:
            for name, path in models.items():
                queue = context.Queue()
                runs = 2000 if batch == 1 else 200
                process = context.Process(
                    target=time_in_child, args=(runtime, str(path), threads, batch, images, runs, queue)
                )
                process.start()
                samples.setdefault((name, runtime, threads, batch), []).append(queue.get())
                process.join()
    return {key: float(np.median(values)) for key, values in samples.items()}


def build(run: str, data_dir: Path | None) -> dict[str, Path]:
    from kd_edge.deploy import quantize as quantizer
    from kd_edge.deploy.export import export_onnx
    from kd_edge.settings import QuantizeSettings

    out = WORK / "portable" / run
    data = {"data_dir": data_dir and str(data_dir), "force": True}
    fp32 = export_onnx(WORK / run, out, **data).path
    settings = QuantizeSettings(compare_latency=False)
    current = quantizer.quantize(fp32, settings, out=out / "int8.onnx", **data)
    first_conv = quantizer.quantizable_nodes(fp32)[0]
    arrange = quantizer.pool_before_relu
    quantizer.pool_before_relu = lambda model, fp32_nodes: model  # the previous version's graph
    try:
        previous_settings = QuantizeSettings(compare_latency=False, exclude=(first_conv,), optimize_latency=False)
        previous = quantizer.quantize(fp32, previous_settings, out=out / "int8-previous.onnx", **data)
    finally:
        quantizer.pool_before_relu = arrange
    print(f"kd-edge's INT8 keeps in FP32: {current.excluded_nodes or 'nothing'}", flush=True)
    return {"FP32": fp32, "INT8 (kd-edge)": current.path, "INT8, first conv FP32, not rearranged": previous.path}


def markdown(timings: dict, models: dict[str, Path]) -> str:
    lines = [
        "| model | runtime | threads | batch 1 (us) | INT8/FP32 | batch 64 (ms) | INT8/FP32 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for runtime in ("kd-edge", "plain"):
        for threads in (1, 2):
            for name in models:
                b1, b64 = timings[name, runtime, threads, 1], timings[name, runtime, threads, 64]
                r1 = b1 / timings["FP32", runtime, threads, 1]
                r64 = b64 / timings["FP32", runtime, threads, 64]
                label = "kd-edge OnnxModel" if runtime == "kd-edge" else "plain InferenceSession"
                lines.append(f"| {name} | {label} | {threads} | {1e3 * b1:.1f} | {r1:.2f}x | {b64:.3f} | {r64:.2f}x |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="c", help="a run folder under benchmarks/work (core_benchmark.py)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    args = parser.parse_args()
    from kd_edge.runtime import OnnxModel

    models = build(args.run, args.data_dir)
    from kd_edge.data import load_data

    images = load_data(OnnxModel(models["FP32"]).card.data, str(args.data_dir)).val.images[:64]
    timings = measure(models, images, args.rounds)
    RESULTS.mkdir(exist_ok=True)
    rows = [{"model": k[0], "runtime": k[1], "threads": k[2], "batch": k[3], "p50_ms": v} for k, v in timings.items()]
    (RESULTS / "portable_int8.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "portable_int8.md").write_text(markdown(timings, models))
    print(markdown(timings, models))


if __name__ == "__main__":
    sys.exit(main())

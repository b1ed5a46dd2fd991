"""Which ONNX exporter should kd-edge use? torch.onnx's dynamo exporter against its TorchScript one (issue 15).

    .venv/bin/python benchmarks/exporters.py                # build, then time; ~15 min
    .venv/bin/python benchmarks/exporters.py --time-only    # time the files built before

For every registry model at Fashion-MNIST's input (1x28x28, 10 classes, initial weights of
seed 0: latency does not depend on the weights), each exporter writes the model through
`kd-edge export` (`export_onnx`: checker, shape inference, parity on 256 validation
images and 16 at batch 1), and `kd-edge quantize` turns each into INT8 the same way (first
convolution FP32, as kd-edge ships it; no latency search, so both graphs get the same
treatment). Reported: export seconds, graph size (nodes, initializers, bytes), parity, and
the latency of the FP32 and INT8 files in a plain `onnxruntime.InferenceSession` (default
options but one intra-op thread), at batch 1 and 64, the four files of a model alternating
over --rounds rounds in one process (about 0.3 s of calls per file, round and batch
size). Writes benchmarks/results/exporters.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "exporters"
RESULTS = HERE / "results"
EXPORTERS = ("dynamo", "torchscript")


def checkpoint(name: str, data_dir: str) -> Path:
    import torch

    from kd_edge.data import load_data
    from kd_edge.runtime import DataRef, ModelCard
    from kd_edge.training.checkpoint import save_checkpoint
    from kd_edge.training.models import ModelSpec

    ref = DataRef(dataset="fashion-mnist", data_dir=data_dir)
    dataset = load_data(ref)
    torch.manual_seed(0)
    spec = ModelSpec(name, dataset.num_classes, 1, 28)
    card = ModelCard(
        classes=tuple(dataset.classes), input_shape=(1, 28, 28), mean=(0.286,), std=(0.353,), data=ref, model=name
    )
    return save_checkpoint(WORK / "checkpoints" / f"{name}.pt", spec.build().eval(), spec, card, {}, {})


def build(name: str, data_dir: str) -> dict:
    import onnx

    from kd_edge.deploy.export import export_onnx
    from kd_edge.deploy.quantize import quantizable_nodes, quantize
    from kd_edge.settings import ExportSettings, QuantizeSettings

    source = checkpoint(name, data_dir)
    rows = {}
    for exporter in EXPORTERS:
        started = time.perf_counter()
        result = export_onnx(source, WORK / exporter, ExportSettings(exporter=exporter), name=name, force=True)
        seconds = time.perf_counter() - started
        settings = QuantizeSettings(
            calibration_size=200,
            exclude=(quantizable_nodes(result.path)[0],),
            max_accuracy_drop=100.0,  # untrained weights: only the graph matters here
            optimize_latency=False,
            compare_latency=False,
        )
        int8 = quantize(result.path, settings, out=WORK / exporter / f"{name}.int8.onnx", force=True)
        graph = onnx.load(str(result.path)).graph
        rows[exporter] = {
            "export_s": seconds,
            "nodes": len(graph.node),
            "initializers": len(graph.initializer),
            "bytes": result.path.stat().st_size,
            "opset": result.card.versions["opset"],
            "max_abs_diff": result.parity.max_abs_diff,
            "max_abs_diff_batch1": result.parity.max_abs_diff_batch1,
            "int8_nodes": len(onnx.load(str(int8.path)).graph.node),
            "files": {"fp32": str(result.path), "int8": str(int8.path)},
        }
    return rows


def plain_session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def time_models(files: dict[str, str], rounds: int) -> dict[str, dict[int, float]]:
    """Median milliseconds per run at batch 1 and 64, the files alternating within each round."""
    sessions = {key: plain_session(path) for key, path in files.items()}
    rng = np.random.default_rng(0)
    samples = {key: {1: [], 64: []} for key in files}
    for _ in range(rounds):
        for batch in (1, 64):
            inputs = {"input": rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)}
            for key, session in sessions.items():
                started = time.perf_counter()
                for _ in range(5):
                    session.run(None, inputs)
                # About 0.3 s of calls per file and round: 400 calls of a small CNN, 5 of resnet18 at batch 64.
                runs = int(np.clip(0.3 / ((time.perf_counter() - started) / 5), 5, 400))
                for _ in range(runs):
                    started = time.perf_counter()
                    session.run(None, inputs)
                    samples[key][batch].append(time.perf_counter() - started)
    return {key: {batch: 1e3 * float(np.median(times)) for batch, times in by.items()} for key, by in samples.items()}


def markdown(table: dict) -> str:
    lines = [
        "| model | exporter | export (s) | nodes | initializers | KiB | opset | parity max diff (b256 / b1) "
        "| FP32 b1 (us) | FP32 b64 (ms) | INT8 nodes | INT8 b1 (us) | INT8 b64 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in table.items():
        for exporter, r in rows.items():
            t = r["latency_ms"]
            lines.append(
                f"| {name} | {exporter} | {r['export_s']:.1f} | {r['nodes']} | {r['initializers']} "
                f"| {r['bytes'] / 1024:.0f} | {r['opset']} | {r['max_abs_diff']:.1e} / {r['max_abs_diff_batch1']:.1e} "
                f"| {1e3 * t['fp32'][1]:.0f} | {t['fp32'][64]:.2f} | {r['int8_nodes']} "
                f"| {1e3 * t['int8'][1]:.0f} | {t['int8'][64]:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion-dir", default="/work/shared/datasets")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--time-only", action="store_true", help="Time the files an earlier run built.")
    args = parser.parse_args()
    from kd_edge.training.models import list_models

    built = WORK / "built.json"
    if args.time_only:
        table = json.loads(built.read_text())
    else:
        table = {}
        for name in list_models():
            print(f"building {name}", flush=True)
            table[name] = build(name, args.fashion_dir)
        built.write_text(json.dumps(table, indent=1))
    for name, rows in table.items():
        print(f"timing {name}", flush=True)
        files = {(exporter, form): path for exporter, r in rows.items() for form, path in r["files"].items()}
        timings = time_models({f"{e}/{f}": p for (e, f), p in files.items()}, args.rounds)
        for exporter, r in rows.items():
            r["latency_ms"] = {form: timings[f"{exporter}/{form}"] for form in ("fp32", "int8")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "exporters.json").write_text(json.dumps(table, indent=1))
    (RESULTS / "exporters.md").write_text(markdown(table))
    print(markdown(table))


if __name__ == "__main__":
    main()

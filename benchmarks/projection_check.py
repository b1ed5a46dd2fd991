"""Projected board latency against published board measurements (issue 8).

    .venv/bin/python benchmarks/projection_check.py        # writes benchmarks/results/projection.{md,json}, ~3 min

Two registry models at ImageNet's input (3x224x224, 1000 classes), ResNet-18 and
MobileNetV2, are exported to ONNX (FP32) and quantized (INT8, static QDQ, per-channel,
calibrated on random images: latency does not depend on the weights), then timed by
``kd-edge bench`` with one thread under the rpi4 and rpi-zero-2w profiles. The
projections are set against the single-thread figures ncnn publishes for the same
networks on those boards (benchmark/README.md of Tencent/ncnn: a Raspberry Pi 4 at
1.5 GHz and a Pi Zero 2 W at 1.0 GHz, `benchncnn 8 1 0`), ncnn being the runtime
with public per-board, per-thread-count numbers for these networks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "projection"
RESULTS = HERE / "results"
SOURCE = "github.com/Tencent/ncnn benchmark/README.md, benchncnn 8 1 0 (one thread), average ms"
# (model, data type) -> {profile: published single-thread ms}
PUBLISHED = {
    ("resnet18", "fp32"): {"rpi4": 226.49, "rpi-zero-2w": 654.69},
    ("resnet18", "int8"): {"rpi4": 188.99, "rpi-zero-2w": 479.40},
    ("mobilenet-v2", "fp32"): {"rpi4": 110.10, "rpi-zero-2w": 274.23},
}
PROFILES = ("rpi4", "rpi-zero-2w")


def build(name: str) -> tuple[Path, Path]:
    """An FP32 and an INT8 ONNX model of a registry network at 3x224x224, each with a model card."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from kd_edge.deploy.onnx_graph import write_onnx
    from kd_edge.runtime import ModelCard
    from kd_edge.runtime.card import write_card
    from kd_edge.training.models import count_parameters, create_model

    WORK.mkdir(parents=True, exist_ok=True)
    fp32, int8 = WORK / f"{name}.onnx", WORK / f"{name}.int8.onnx"
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000, in_channels=3, image_size=224).eval()
    card = ModelCard(
        classes=tuple(str(i) for i in range(1000)),
        input_shape=(3, 224, 224),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        model=name,
        parameters=count_parameters(model),
    )
    write_onnx(model, card, fp32)

    class RandomImages(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((1, 3, 224, 224), dtype=np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(int8), RandomImages(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip
    write_card(int8, card.__class__(**{**card.to_dict(), "quantization": {"mode": "static", "format": "qdq"}}))
    return fp32, int8


def main():
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark
    from kd_edge.settings import BenchSettings

    models = {}
    for name in ("resnet18", "mobilenet-v2"):
        models[name, "fp32"], models[name, "int8"] = build(name)
    images = np.random.default_rng(1).integers(0, 256, (4, 3, 224, 224), dtype=np.uint8)
    rows = []
    for profile in PROFILES:
        settings = BenchSettings(threads=(1,), batch_sizes=(1,), runs=40, rounds=2, warmup=5, profile=profile)
        report = run_benchmark(
            BenchJob(models=tuple(str(p) for p in models.values()), settings=settings), images=images
        )
        host = report.environment["host_gops_per_core"]
        for (name, dtype), path in models.items():
            result = next(r for r in report.results if r.model == str(path))
            published = PUBLISHED.get((name, dtype), {}).get(profile)
            projected = result.projected_p50_ms
            rows.append({
                "model": name, "data_type": dtype, "profile": profile, "host_p50_ms": result.latency_ms.p50,
                "projected_ms": projected, "published_ms": published,
                "projected_over_published": None if published is None else projected / published,
                "host_gops_per_core": host, "factor": result.emulation["projection"]["factor"],
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "projection.json").write_text(json.dumps({"source": SOURCE, "rows": rows}, indent=2) + "\n")
    (RESULTS / "projection.md").write_text(markdown(rows))
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model (3x224x224) | data type | profile | host 1-thread p50 ms | projected ms | published ms (ncnn, 1 "
        "thread) | projected / published |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        published = "n/a" if row["published_ms"] is None else f"{row['published_ms']:.1f}"
        ratio = "n/a" if row["projected_over_published"] is None else f"{row['projected_over_published']:.2f}x"
        lines.append(
            f"| {row['model']} | {row['data_type']} | {row['profile']} | {row['host_p50_ms']:.2f} | "
            f"{row['projected_ms']:.1f} | {published} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

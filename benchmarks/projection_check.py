"""Board projections against published board measurements, at 1 and 4 threads (issues 8 and 22).

    .venv/bin/python benchmarks/projection_check.py              # ~15 min the first time (exports, host timing)
    .venv/bin/python benchmarks/projection_check.py --reuse      # refit and rewrite from the last host timing

ncnn's benchncnn tables (benchmark/README.md of Tencent/ncnn) give the same networks' latency on a
Raspberry Pi 4 (1.5 GHz) and a Pi Zero 2 W at 1 and 4 threads, FP32 and INT8. Here each network is
built at ImageNet's input (3x224x224, random weights: latency does not depend on them), exported
to ONNX with kd-edge's exporter, quantized (static QDQ, per channel) for the INT8 rows, and timed
with one thread on this host by `kd-edge bench`'s harness.

Calibration (what kd_edge/runtime/bench/profiles.py holds), per board and data type, from every
network with a published figure: the efficiency is the geometric mean of (projection without it /
published 1-thread figure), the serial fraction the mean of Amdahl's s implied by the published
4-thread / 1-thread ratios. The check is leave-one-out: each network is projected at 1 and 4
threads with constants fitted on the *other* networks only, against its own published figures.
The table also shows the projections of the profiles as shipped, and says where the shipped
constants and this run's fit differ by more than 5 %.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "projection"
RESULTS = HERE / "results"
SOURCE = (
    "github.com/Tencent/ncnn benchmark/README.md: Raspberry Pi 4 Model B (Cortex-A72 1.5 GHz x 4) and Raspberry Pi "
    "Zero 2 W (Cortex-A53 1.0 GHz x 4), `benchncnn 8 1 0` and `benchncnn 8 4 0`, average ms"
)
# (network, data type) -> {board: (1-thread ms, 4-thread ms)}, as published
PUBLISHED = {
    ("resnet18", "fp32"): {"rpi4": (226.49, 176.18), "rpi-zero-2w": (654.69, 353.45)},
    ("mobilenet_v2", "fp32"): {"rpi4": (110.10, 72.62), "rpi-zero-2w": (274.23, 147.39)},
    ("squeezenet1_1", "fp32"): {"rpi4": (92.60, 58.93), "rpi-zero-2w": (240.77, 119.93)},
    ("shufflenet_v2_x1_0", "fp32"): {"rpi4": (50.30, 29.78), "rpi-zero-2w": (129.18, 64.13)},
    ("mnasnet1_0", "fp32"): {"rpi4": (100.50, 61.82), "rpi-zero-2w": (265.93, 126.53)},
    ("efficientnet_b0", "fp32"): {"rpi4": (194.41, 94.39), "rpi-zero-2w": (519.00, 202.14)},
    ("regnet_y_400mf", "fp32"): {"rpi4": (135.69, 81.09), "rpi-zero-2w": (329.87, 156.96)},
    ("googlenet", "fp32"): {"rpi4": (283.92, 143.09), "rpi-zero-2w": (780.39, 324.45)},
    ("resnet50", "fp32"): {"rpi4": (636.02, 335.34), "rpi-zero-2w": (1802.79, 782.63)},
    ("resnet18", "int8"): {"rpi4": (188.99, 97.99), "rpi-zero-2w": (479.40, 195.51)},
    ("squeezenet1_1", "int8"): {"rpi4": (81.90, 49.33), "rpi-zero-2w": (212.94, 96.55)},
    ("googlenet", "int8"): {"rpi4": (252.23, 118.78), "rpi-zero-2w": (664.15, 251.63)},
    ("resnet50", "int8"): {"rpi4": (503.46, 236.38), "rpi-zero-2w": (1313.15, 497.57)},
}
HOST_TIMING = WORK / "host.json"  # the last host measurement, for --reuse
BOARDS = ("rpi4", "rpi-zero-2w")


def build(name: str, dtype: str) -> Path:
    """The network as an ONNX model with a kd-edge card (and its INT8 form for ``dtype`` int8); cached."""
    import torch
    import torchvision

    from kd_edge.deploy.onnx_graph import write_onnx
    from kd_edge.runtime import ModelCard

    WORK.mkdir(parents=True, exist_ok=True)
    fp32 = WORK / f"{name}.onnx"
    if not fp32.exists():
        torch.manual_seed(0)
        extra = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
        model = getattr(torchvision.models, name)(weights=None, **extra).eval()
        card = ModelCard(classes=tuple(str(i) for i in range(1000)), input_shape=(3, 224, 224),
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), model=name)  # fmt: skip
        write_onnx(model, card, fp32)
    return fp32 if dtype == "fp32" else quantized(fp32)


def quantized(fp32: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from kd_edge.runtime.card import write_card
    from kd_edge.runtime.session import read_card

    int8 = fp32.with_suffix(".int8.onnx")
    if int8.exists():
        return int8

    class RandomImages(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((1, 3, 224, 224), dtype=np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(int8), RandomImages(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip
    card = read_card(fp32)
    write_card(int8, card.__class__(**{**card.to_dict(), "quantization": {"mode": "static", "format": "qdq"}}))
    return int8


def host_one_thread(models: dict) -> tuple[dict, dict]:
    """Each model's host 1-thread p50 (ms, batch 1) and the host's per-core throughput, from the bench harness."""
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark
    from kd_edge.runtime.bench.projection import host_throughput_per_core
    from kd_edge.settings import BenchSettings

    images = np.random.default_rng(1).integers(0, 256, (4, 3, 224, 224), dtype=np.uint8)
    settings = BenchSettings(threads=(1,), batch_sizes=(1,), runs=30, rounds=2, warmup=3, profile="host")
    report = run_benchmark(BenchJob(models=tuple(str(p) for p in models.values()), settings=settings), images=images)
    p50 = {key: report.p50_ms(str(path), 1, 1) for key, path in models.items()}
    return p50, host_throughput_per_core()


def constants(p50: dict, host: dict, board: str, dtype: str, names: list[str]) -> dict:
    """Efficiency and serial fraction of ``board`` for ``dtype``, fitted on the networks ``names``."""
    from kd_edge.runtime.bench.profiles import get_profile

    peak = get_profile(board).peak_gops_per_core(dtype)
    raw = [p50[name, dtype] * host[dtype] / peak / PUBLISHED[name, dtype][board][0] for name in names]
    ratios = [PUBLISHED[name, dtype][board][1] / PUBLISHED[name, dtype][board][0] for name in names]
    return {
        "efficiency": float(np.exp(np.mean(np.log(raw)))),
        "serial_fraction": float(np.mean([(r - 0.25) / 0.75 for r in ratios])),
    }


def networks(dtype: str) -> list[str]:
    return [name for name, kind in PUBLISHED if kind == dtype]


def fit(p50: dict, host: dict) -> dict:
    """Every board's constants, fitted on every network: {board: {"efficiency": {dtype: e}, ...}}."""
    fitted = {}
    for board in BOARDS:
        both = {dtype: constants(p50, host, board, dtype, networks(dtype)) for dtype in ("fp32", "int8")}
        fitted[board] = {key: {dtype: both[dtype][key] for dtype in both} for key in ("efficiency", "serial_fraction")}
    return fitted


def project(p50: float, dtype: str, profile, host: dict) -> tuple[float, float]:
    from kd_edge.runtime.bench.projection import projection

    by_threads = projection(p50, 4, dtype, profile, host)["by_threads"]
    return by_threads[1], by_threads[4]


def rows_of(p50: dict, host: dict) -> list[dict]:
    """Each network on each board: projected with the shipped profile, and leave-one-out, against published."""
    from dataclasses import replace

    from kd_edge.runtime.bench.profiles import get_profile

    rows = []
    for (name, dtype), boards in PUBLISHED.items():
        for board, (one, four) in boards.items():
            shipped = project(p50[name, dtype], dtype, get_profile(board), host)
            others = constants(p50, host, board, dtype, [n for n in networks(dtype) if n != name])
            held_out = replace(get_profile(board), efficiency={dtype: others["efficiency"]},
                               serial_fraction={dtype: others["serial_fraction"]})  # fmt: skip
            loo = project(p50[name, dtype], dtype, held_out, host)
            rows.append({
                "network": name, "data_type": dtype, "board": board, "host_1t_ms": p50[name, dtype],
                "published_1t_ms": one, "published_4t_ms": four,
                "shipped_1t_ms": shipped[0], "shipped_4t_ms": shipped[1],
                "loo_1t_ms": loo[0], "loo_4t_ms": loo[1], "loo_ratio_1t": loo[0] / one, "loo_ratio_4t": loo[1] / four,
            })  # fmt: skip
    return rows


def within(row: dict) -> bool:
    return all(0.5 <= row[key] <= 2 for key in ("loo_ratio_1t", "loo_ratio_4t"))


def markdown(rows: list[dict], fitted: dict, host: dict) -> str:
    from kd_edge.runtime.bench.profiles import get_profile

    lines = [
        f"Host per-core throughput (ONNX Runtime, 256x256 matrix product): fp32 {host['fp32']:.1f} GFLOP/s, int8 "
        f"{host['int8']:.1f} GOP/s. Published: {SOURCE}.",
        "",
        "| board | data type | efficiency shipped (this run's fit) | serial fraction shipped (fit) |",
        "| --- | --- | --- | --- |",
    ]
    for board in BOARDS:
        profile = get_profile(board)
        for dtype in ("fp32", "int8"):
            shipped = (profile.efficiency[dtype], profile.serial_fraction[dtype])
            fit_values = (fitted[board]["efficiency"][dtype], fitted[board]["serial_fraction"][dtype])
            flag = "" if all(abs(a / b - 1) <= 0.05 for a, b in zip(shipped, fit_values, strict=True)) else " DIFFERS"
            lines.append(
                f"| {board} | {dtype} | {shipped[0]:.2f} ({fit_values[0]:.2f}) | {shipped[1]:.2f} ({fit_values[1]:.2f})"
                f"{flag} |"
            )
    lines += [
        "",
        "ms at batch 1. Shipped: the profiles as kd-edge has them. Left out: constants fitted on the other networks.",
        "",
        "| network (3x224x224) | type | board | host 1T | shipped 1T | left out 1T | published 1T | ratio | "
        "shipped 4T | left out 4T | published 4T | ratio | within 2x |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['data_type']} | {r['board']} | {r['host_1t_ms']:.1f} | {r['shipped_1t_ms']:.0f} | "
            f"{r['loo_1t_ms']:.0f} | {r['published_1t_ms']:.0f} | {r['loo_ratio_1t']:.2f}x | "
            f"{r['shipped_4t_ms']:.0f} | "
            f"{r['loo_4t_ms']:.0f} | {r['published_4t_ms']:.0f} | {r['loo_ratio_4t']:.2f}x | "
            f"{'yes' if within(r) else 'NO'} |"
        )
    inside = sum(within(r) for r in rows)
    lines += ["", f"Left-out projections within 2x of the published figure at both 1 and 4 threads: {inside} of "
              f"{len(rows)}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def measure_or_reuse(reuse: bool) -> tuple[dict, dict]:
    if reuse and HOST_TIMING.is_file():
        saved = json.loads(HOST_TIMING.read_text())
        return {tuple(key.split("|")): ms for key, ms in saved["p50"].items()}, saved["host_gops_per_core"]
    models = {(name, dtype): build(name, dtype) for name, dtype in PUBLISHED}
    p50, host = host_one_thread(models)
    saved = {"host_gops_per_core": host, "p50": {f"{name}|{dtype}": ms for (name, dtype), ms in p50.items()}}
    HOST_TIMING.write_text(json.dumps(saved, indent=1) + "\n")
    return p50, host


def main():
    p50, host = measure_or_reuse("--reuse" in sys.argv)
    fitted = fit(p50, host)
    rows = rows_of(p50, host)
    RESULTS.mkdir(exist_ok=True)
    record = {"source": SOURCE, "host_gops_per_core": host, "fitted": fitted, "rows": rows}
    (RESULTS / "projection.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(rows, fitted, host)
    (RESULTS / "projection.md").write_text(text)
    print(json.dumps(fitted, indent=2))
    print(text)


if __name__ == "__main__":
    sys.exit(main())

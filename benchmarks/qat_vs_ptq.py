"""Is quantization-aware training worth it? QAT against post-training INT8 at equal extra epochs (issue 15).

    .venv/bin/python benchmarks/qat_vs_ptq.py --markdown benchmarks/results/qat_vs_ptq.md   # ~25 min

Fashion-MNIST, the defaults' student (`kd-edge distill --dataset fashion-mnist`), seeds 0, 1, 2.
From each distilled student, three INT8 models, quantized the same way (`kd-edge quantize`'s
calibration on 500 validation images, first convolution FP32, no latency search):

  PTQ                     the student as distilled, quantized;
  PTQ after 2 FP32 epochs the student distilled 2 more epochs from the same teacher with QAT's
                          recipe (AdamW, lr 5e-4 cosine, no weight decay, same T and alpha), then
                          quantized: the fair comparison, the same extra training without fake quant;
  QAT, 2 epochs           `kd-edge qat RUN --epochs 2` (torchao PT2E fake quantization), quantized.

Reported: test accuracy of each INT8 model (mean and std over the seeds), and of the FP32 model
it came from. Runs are kept in --work; a finished step is not rerun.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from distill_modes import fashion_args, kd_edge, pm, publish  # the sibling benchmark's helpers

SEEDS = (0, 1, 2)
EXTRA_EPOCHS = 2


def quantized(run: Path, folder: Path, data_dir: str) -> dict:
    """Export the run's student and quantize it as QAT's model is quantized: first convolution FP32."""
    from kd_edge.deploy.export import export_onnx
    from kd_edge.deploy.quantize import quantizable_nodes, quantize
    from kd_edge.runtime import read_card
    from kd_edge.settings import QuantizeSettings

    int8_path = folder / "student.int8.onnx"
    if not int8_path.is_file():
        fp32 = export_onnx(run, folder, name="student", data_dir=data_dir, force=True).path
        settings = QuantizeSettings(
            exclude=(quantizable_nodes(fp32)[0],), optimize_latency=False, compare_latency=False
        )
        quantize(fp32, settings, out=int8_path, data_dir=data_dir, force=True)
    card = read_card(int8_path)
    return {"fp32": card.fp32_test_accuracy, "int8": card.test_accuracy}


def qat(run: Path, folder: Path, seed: int, env) -> dict:
    from kd_edge.runtime import read_card

    path = folder / f"{run.name}.qat.onnx"
    if not path.is_file():
        kd_edge(
            "qat", run, "--epochs", EXTRA_EPOCHS, "--out", folder, "--seed", seed,
            "--no-optimize-latency", "--no-compare-latency", "--force", env=env,
        )  # fmt: skip
    card = read_card(path)
    return {"fp32": card.fp32_test_accuracy, "int8": card.test_accuracy}


def fine_tuned(run: Path, out: Path, seed: int, env) -> Path:
    if not (out / "metrics.json").is_file():
        kd_edge(
            "distill", "--dataset", "fashion-mnist", "--teacher", run / "teacher.pt", "--init", run / "student.pt",
            "--epochs", EXTRA_EPOCHS, "--lr", "5e-4", "--schedule", "cosine", "--weight-decay", "0",
            "--precision", "fp32", "--seed", seed, "--out", out, "--force", env=env,
        )  # fmt: skip
    return out


def main() -> None:
    args, env = fashion_args(__doc__, "qat")
    rows: dict[str, list[dict]] = {"PTQ": [], f"PTQ after {EXTRA_EPOCHS} FP32 epochs": [], "QAT": []}
    for seed in SEEDS:
        base = args.work / "base" / f"seed{seed}"
        if not (base / "metrics.json").is_file():
            kd_edge("distill", "--dataset", "fashion-mnist", "--seed", seed, "--out", base, "--force", env=env)
        rows["PTQ"].append(quantized(base, args.work / "ptq" / f"seed{seed}", args.fashion_dir))
        tuned = fine_tuned(base, args.work / "fine-tuned" / f"seed{seed}", seed, env)
        rows[f"PTQ after {EXTRA_EPOCHS} FP32 epochs"].append(
            quantized(tuned, args.work / "ptq-fine-tuned" / f"seed{seed}", args.fashion_dir)
        )
        rows["QAT"].append(qat(base, args.work / "qat" / f"seed{seed}", seed, env))
    lines = [
        f"| INT8 model (seeds {', '.join(map(str, SEEDS))}) | FP32 test % | INT8 test % | drop (points) |",
        "| --- | --- | --- | --- |",
    ]
    for name, runs in rows.items():
        drops = [r["fp32"] - r["int8"] for r in runs]
        lines.append(
            f"| {name} | {pm([r['fp32'] for r in runs])} | {pm([r['int8'] for r in runs])} "
            f"| {100 * statistics.fmean(drops):.2f} ± {100 * statistics.stdev(drops):.2f} |"
        )
    (args.work / "rows.json").write_text(json.dumps(rows, indent=1))
    publish(lines, args.markdown)


if __name__ == "__main__":
    main()

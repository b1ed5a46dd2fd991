"""Every registry model, FP32 and INT8, in ONNX Runtime 1.16, 1.18 and this host's release, on x86 and on
emulated aarch64 (issue 22).

    .venv/bin/python benchmarks/onnxruntime_releases.py    # writes benchmarks/results/onnxruntime-releases.md

Each registry network is trained for one epoch on MNIST-5k (so that its classes mean something),
bundled by `kd-edge bundle --form int8` (export, INT8 with the budget lifted: this measures the
runtimes, not the quantization), and its bundle's samples (300; 30 for ResNet-18, whose 300 take over
an hour per release under QEMU) are run by `python -m
kd_edge.runtime.check` in each ONNX Runtime release: on this host in a virtual environment per
release (kd_edge.deploy.host_runtimes), and on an emulated Cortex-A72 by `kd-edge verify-arm
--onnxruntime`. Each cell is the top-1 agreement with this host's own ONNX Runtime over the
samples (and, for FP32, the largest logit difference). Several hours of CPU the first time:
the trained runs and bundles are kept in benchmarks/work/releases and reused.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "releases"
RESULTS = HERE / "results"
RELEASES = ("1.16.3", "1.18.1")  # and this host's
SAMPLES = {"resnet18": 30}  # the bundle's default is 300
MODELS = ("cnn-tiny", "cnn-small", "cnn-base", "seed-student", "seed-teacher", "mobilenet-v2", "mobilenet-v3-small",
          "resnet18")  # fmt: skip


def bundle_of(model: str) -> Path:
    from kd_edge.errors import TeacherTooWeakError
    from kd_edge.pipeline.chains import deploy
    from kd_edge.settings import (
        BundleSettings,
        DataSettings,
        DeploySettings,
        QuantizeSettings,
        TeacherSettings,  # fmt: skip
    )
    from kd_edge.training.distill import train_teacher

    samples = SAMPLES.get(model, 300)
    run, bundle = WORK / model / "run", WORK / model / f"bundle-{samples}"
    if not (run / "teacher.pt").is_file():
        default = TeacherSettings()
        settings = replace(default, data=DataSettings(dataset="mnist-5k"),
                           teacher=replace(default.teacher, model=model, epochs=1))  # fmt: skip
        try:
            train_teacher(settings, run)
        except TeacherTooWeakError:  # one epoch is too few for some networks: their files are still what is measured
            pass
    if not (bundle / "model.json").is_file():
        settings = DeploySettings(
            quantize=QuantizeSettings(max_accuracy_drop=100, compare_latency=False),
            bundle=BundleSettings(form="int8", samples=samples),
        )
        deploy(run / "teacher.pt", bundle, settings, force=True)
    return bundle


def x86_cells(bundle: Path, releases: tuple[str, ...]) -> dict:
    """{(release, form): (agreement, max |diff|)} against this host's ONNX Runtime, on x86."""
    from kd_edge.deploy.host_runtimes import prepare_runtime, run_check
    from kd_edge.runtime.check import forms_of, sample_logits

    samples = bundle / "samples.npz"
    with np.load(samples) as archive:
        host = sample_logits(forms_of(bundle), archive["images"])
    cells = {}
    for release in releases:
        logits, facts = run_check(prepare_runtime(release), bundle, samples, WORK / "check.npz")
        assert facts["onnxruntime"] == release, facts
        for form, values in logits.items():
            agreement = float((values.argmax(1) == host[form].argmax(1)).mean())
            cells[release, form] = (agreement, float(np.abs(values - host[form]).max()))
    return cells


def arm_cells(bundle: Path, releases: tuple[str, ...]) -> dict:
    from kd_edge.deploy.verify_arm import verify_arm
    from kd_edge.settings import ArmSettings

    result = verify_arm(bundle, ArmSettings(cpus=("cortex-a72",), onnxruntime=releases), progress=lambda m: None)
    return {(c.onnxruntime, c.form): (c.top1_agreement, c.max_abs_logit_diff) for c in result.checks}


def cell(values: tuple[float, float] | None, form: str) -> str:
    if values is None:
        return "n/a"
    agreement, diff = values
    return f"{agreement:.1%}" + (f" ({diff:.1e})" if form == "fp32" else "")


def model_rows(model: str, releases: tuple[str, ...]) -> list[dict]:
    """The FP32 and INT8 rows of ``model`` (kept in its work folder: a rerun measures only what is missing)."""
    saved = WORK / model / f"rows-{'-'.join(releases)}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    bundle = bundle_of(model)
    x86, arm = x86_cells(bundle, releases), arm_cells(bundle, releases)
    accuracy = json.loads((WORK / model / "run" / "metrics.json").read_text())["teacher"]["val_accuracy"]
    rows = [
        {"model": model, "form": form, "val_accuracy": accuracy, "samples": SAMPLES.get(model, 300),
         "x86": {r: x86.get((r, form)) for r in releases}, "aarch64": {r: arm.get((r, form)) for r in releases}}
        for form in ("fp32", "int8")
    ]  # fmt: skip
    saved.write_text(json.dumps(rows))
    return rows


def main():
    import onnxruntime

    releases = (*RELEASES, onnxruntime.__version__)
    rows = []
    for model in MODELS:
        rows += model_rows(model, releases)
        print(json.dumps(rows[-2:]), flush=True)
    header = " | ".join(f"x86 {r}" for r in releases) + " | " + " | ".join(f"aarch64 {r}" for r in releases)
    lines = [
        "# Every registry model in older ONNX Runtime releases, on x86 and emulated aarch64",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `.venv/bin/python benchmarks/onnxruntime_releases.py`. "
        "The MobileNets sit at chance after one epoch (10 % validation accuracy), so their agreement says "
        "little; their FP32 logit differences do.",
        "",
        "Top-1 agreement with this host's ONNX Runtime "
        f"{onnxruntime.__version__} over each bundle's samples (FP32: and the largest |logit difference|); "
        "aarch64 is an emulated Cortex-A72 (QEMU). Each network trained one epoch on MNIST-5k (its validation "
        "accuracy shown: one epoch leaves some at chance; the files are what is measured).",
        "",
        f"| model | validation accuracy | samples | form | {header} |",
        "| --- | --- | --- | --- |" + " --- |" * (2 * len(releases)),
    ]
    for row in rows:
        cells = [cell(row["x86"][r], row["form"]) for r in releases] + [
            cell(row["aarch64"][r], row["form"]) for r in releases
        ]
        lines.append(
            f"| {row['model']} | {row['val_accuracy']:.1%} | {row.get('samples', 300)} | {row['form']} | "
            + " | ".join(cells)
            + " |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onnxruntime-releases.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "onnxruntime-releases.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

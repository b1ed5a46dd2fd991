"""`kd-edge export`, `quantize`, `qat`, `bundle` and `verify-arm`: from a checkpoint to what a board runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kd_edge.cli.console import (
    console,
    make_progress,
    next_step,
    print_arm_result,
    print_bundle_result,
    print_latency_comparison,
    print_quantize_result,
)
from kd_edge.cli.options import DataDirOpt, ForceOpt, settings_command
from kd_edge.cli.train_commands import require_training_extra, training_process
from kd_edge.settings.deploy import ArmSettings, DeploySettings, QATSettings, QuantizeSettings


def optional_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@settings_command("export")
def export(
    settings: DeploySettings,
    given: set[str],
    source: Annotated[
        Path,
        typer.Argument(
            metavar="CHECKPOINT_OR_RUN_DIR", help="A checkpoint (.pt) or a run folder (its student.pt is exported)."
        ),
    ],
    onnx: Annotated[
        bool, typer.Option("--onnx", metavar="", help="Write ONNX (the only format; the documented command line).")
    ] = True,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for NAME.onnx (and NAME.int8.onnx).")] = Path(
        "exports"
    ),
    name: Annotated[
        str | None,
        typer.Option(
            help="The files' name; default: the run folder's (RUN.onnx), or RUN-CHECKPOINT for another checkpoint."
        ),
    ] = None,
    int8: Annotated[
        bool, typer.Option("--int8", metavar="", help="Also write an INT8 model through `kd-edge quantize`'s defaults.")
    ] = False,
    bundle: Annotated[
        Path | None, typer.Option(help="Also write a deployable bundle folder (and .tar.gz) here; implies --int8.")
    ] = None,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
):
    """Export to ONNX with a dynamic batch axis, check it, and verify it against PyTorch on validation images."""
    require_training_extra()
    from kd_edge.pipeline.chains import export_then

    def show(result) -> None:
        parity, versions = result.parity, result.card.versions
        console().print(
            f"wrote {result.path} ({result.path.stat().st_size:,} bytes, opset {versions['opset']}, "
            f"{versions['exporter']}); parity on {parity.samples} validation images: max |diff| "
            f"{parity.max_abs_diff:.2e} (batch 1: {parity.max_abs_diff_batch1:.2e}, tolerance {parity.atol:g}), "
            f"top-1 agreement {parity.top1_agreement:.0%}"
        )

    chain = export_then(
        source, out, settings, name=name, with_int8=int8, bundle=bundle, data_dir=optional_str(data_dir), force=force,
        on_export=show,
    )  # fmt: skip
    if chain.quantized is not None:
        print_quantize_result(chain.quantized)
    if chain.bundle is not None:
        print_bundle_result(chain.bundle)
        return
    both = f"{chain.export.path} {chain.quantized.path}" if chain.quantized else str(chain.export.path)
    if chain.export.card.task == "detect":
        last = chain.quantized.path if chain.quantized else chain.export.path
        next_step(
            f"kd-edge predict {last} IMAGE.jpg --draw found.png, and kd-edge bench {both} --profile rpi4 --threads 1"
        )
        return
    next_step(f"kd-edge bench {both} --threads 2 (or kd-edge bundle {source} --out runs/bundle)")


@settings_command("quantize")
def quantize(
    settings: QuantizeSettings,
    given: set[str],
    model: Annotated[
        Path, typer.Argument(metavar="MODEL.onnx", help="An FP32 ONNX model written by `kd-edge export`.")
    ],
    calibration: Annotated[
        str | None,
        typer.Option(
            help="Dataset for calibration (validation split) and evaluation (test split); default: the model's own."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output path (default: MODEL with .int8.onnx).")
    ] = None,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
):
    """Quantize to INT8 with ONNX Runtime, calibrated on validation data, within an accuracy budget."""
    require_training_extra(("onnx",), extra="quantize")
    from kd_edge.deploy.quantize import quantize as quantize_model

    result = quantize_model(
        model, settings, out=out, calibration=calibration, data_dir=optional_str(data_dir), force=force
    )
    print_quantize_result(result)
    if result.metric == "f1":  # a detector
        next_step(f"kd-edge bench {model} {result.path} --profile rpi4 --threads 1 (a whole frame of each)")
        return
    next_step(f"kd-edge bench {model} {result.path} --threads 2 (or kd-edge bundle {result.path} --out runs/bundle)")


@settings_command("qat")
def qat(
    settings: QATSettings,
    given: set[str],
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR",
            help="A run folder of `kd-edge distill` (student.pt, and teacher.pt for the soft labels).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <run>.qat.onnx.")] = Path("exports"),
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
):
    """Quantization-aware training: fine-tune the distilled student with fake INT8 quantization, export QDQ ONNX."""
    require_training_extra()
    from kd_edge.pipeline.chains import qat_to_int8

    with training_process("cpu"):
        result = qat_to_int8(
            run_dir, out, settings, data_dir=optional_str(data_dir), force=force, progress=make_progress()
        )
    console().print(
        f"wrote {result.path}: test accuracy FP32 {result.fp32_test_accuracy:.2%}, after QAT "
        f"{result.qat_test_accuracy:.2%} "
        f"(ONNX Runtime {result.onnx_test_accuracy:.2%}, top-1 agreement {result.top1_agreement:.1%}); "
        f"nodes kept in FP32: {', '.join(result.fp32_layers) or 'none'}"
    )
    if result.latency is not None:
        print_latency_comparison(result.latency, "QAT")
    next_step(f"kd-edge bundle {result.path} --out runs/bundle")


@settings_command("bundle")
def bundle(
    settings: DeploySettings,
    given: set[str],
    source: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR_OR_MODEL", help="A run folder, a checkpoint (.pt) or an ONNX model (FP32 or INT8)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The bundle folder; DIR.tar.gz is written beside it.")
    ] = Path("bundle"),
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
):
    """Write a deployable bundle: the model a board should run (INT8 only where it is not slower), its card,
    labelled samples, a README with the board's commands, SHA256SUMS, and a .tar.gz of it all."""
    from kd_edge.pipeline.chains import deploy

    if source.suffix != ".onnx":
        require_training_extra()  # a checkpoint is exported first
    print_bundle_result(deploy(source, out, settings, data_dir=optional_str(data_dir), force=force))


@settings_command("verify-arm")
def verify_arm(
    settings: ArmSettings,
    given: set[str],
    source: Annotated[
        Path, typer.Argument(metavar="BUNDLE_OR_MODEL", help="A bundle (folder or .tar.gz) or an .onnx model.")
    ],
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where the aarch64 userland is kept (default ~/.cache/kd-edge/arm).")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the comparison as JSON.")] = None,
    data_dir: DataDirOpt = None,
):
    """Run the model on aarch64 ONNX Runtime under QEMU for each CPU, compare with this host; exit 0 when they agree."""
    from kd_edge.deploy.verify_arm import verify_arm as run_verify_arm

    result = run_verify_arm(
        source,
        settings,
        cache_dir=optional_str(cache_dir),
        data_dir=optional_str(data_dir),
        progress=lambda message: console().print(f"[dim]{message}[/]"),
    )
    print_arm_result(result)
    if json_path:
        from kd_edge.io import atomic_write_json

        atomic_write_json(json_path, result.to_dict())
    if not result.passed:
        raise typer.Exit(1)


COMMANDS = {"export": export, "quantize": quantize, "qat": qat, "bundle": bundle, "verify-arm": verify_arm}

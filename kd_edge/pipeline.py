"""Chaining stages: the one place where one stage's output becomes the next one's input.

Stages themselves never call each other (export does not quantize, quantize does not
bundle); the commands that run several of them come here.

    deploy(DeployConfig(source="runs/demo", bundle=BundleConfig(out="bundle")))
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kd_edge.bundle import BundleConfig, BundleResult, write_bundle
from kd_edge.errors import QuantizationError


@dataclass(frozen=True, kw_only=True)
class DeployConfig:
    """From a run folder, a checkpoint or an ONNX model to a bundle: export, quantize, bundle."""

    source: str
    bundle: BundleConfig
    int8: bool = True
    quantize_options: dict = field(default_factory=dict)  # QuantizeConfig fields other than model, out, force


def deploy(config: DeployConfig) -> BundleResult:
    """Export (unless the source is ONNX already), quantize (unless told not to, or it is INT8 already), bundle."""
    from kd_edge.runtime.session import read_card

    source = Path(config.source)
    with tempfile.TemporaryDirectory(prefix="kd-edge-deploy-") as scratch:
        if source.suffix == ".onnx":
            if read_card(source).quantization is not None:
                return write_bundle(config.bundle, fp32=None, int8=source, int8_refused=None)
            fp32 = source
        else:
            fp32 = export_for_deployment(source, Path(scratch), config.bundle.data_dir)
        int8, refused = (
            quantize_for_deployment(fp32, Path(scratch), config) if config.int8 else (None, "--no-int8 was given")
        )
        return write_bundle(config.bundle, fp32=fp32, int8=int8, int8_refused=refused)


def export_for_deployment(source: Path, folder: Path, data_dir: str | None) -> Path:
    from kd_edge.export import ExportConfig, export_onnx

    return export_onnx(ExportConfig(source=str(source), out_dir=str(folder), data_dir=data_dir)).path


def quantize_for_deployment(fp32: Path, folder: Path, config: DeployConfig) -> tuple[Path | None, str | None]:
    """(the INT8 model, None), or (None, why there is none) when no INT8 model meets the accuracy budget."""
    from kd_edge.quantize import QuantizeConfig, quantize

    options = {"data_dir": config.bundle.data_dir, "compare_latency": False, **config.quantize_options}
    try:
        result = quantize(
            QuantizeConfig(model=str(fp32), out=str(folder / f"{fp32.stem}.int8.onnx"), force=True, **options)
        )
    except QuantizationError as exc:
        return None, f"no INT8 model met the accuracy budget: {exc}"
    return result.path, None

"""Short chains of stages that single commands run: `kd-edge bundle`, `kd-edge export --int8/--bundle`,
`kd-edge qat`. Like the full pipeline, they are the only places where one stage's output becomes the
next one's input; the stages themselves never call each other.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from kd_edge.errors import QuantizationError
from kd_edge.log import step
from kd_edge.settings.deploy import DeploySettings, QATSettings


def deploy(source, out, settings: DeploySettings | None = None, *, data_dir: str | None = None, force: bool = False):
    """From a run folder, a checkpoint or an ONNX model to a bundle in ``out``: export (unless the source is
    ONNX already), quantize (unless ``bundle.form`` is fp32, or it is INT8 already), bundle."""
    from kd_edge.deploy.bundle import check_outputs, write_bundle
    from kd_edge.runtime.bench.profiles import get_profile
    from kd_edge.runtime.session import read_card

    settings = settings or DeploySettings()
    source = Path(source)
    check_outputs(out, force)  # before the export and the quantization, not after them
    get_profile(settings.bundle.profile)
    bundle = {"data_dir": data_dir, "force": force}
    fp32, int8 = exports_of_run(source, settings)
    int8 = None if settings.bundle.form == "fp32" else int8
    if fp32 is not None and (int8 is not None or settings.bundle.form == "fp32"):
        step(f"bundle: {source}'s exports were made from its student.pt with these settings: bundled as they are")
        refused = "--form fp32 was given" if int8 is None else None
        return write_bundle(out, settings.bundle, fp32=fp32, int8=int8, int8_refused=refused, **bundle)
    with tempfile.TemporaryDirectory(prefix="kd-edge-deploy-") as scratch:
        if source.suffix == ".onnx":
            if read_card(source).quantization is not None:
                return write_bundle(out, settings.bundle, fp32=None, int8=source, **bundle)
            fp32 = source
        else:
            fp32 = export_to(source, Path(scratch), settings, data_dir)
        int8, refused = None, "--form fp32 was given"
        if settings.bundle.form != "fp32":
            int8, refused = quantize_to(fp32, Path(scratch), settings, data_dir)
        if int8 is None and settings.bundle.form == "int8":
            raise QuantizationError(
                f"--form int8 was given but {refused}; loosen --max-accuracy-drop or use --form auto"
            )
        return write_bundle(out, settings.bundle, fp32=fp32, int8=int8, int8_refused=refused, **bundle)


def exports_of_run(source: Path, settings: DeploySettings) -> tuple[Path | None, Path | None]:
    """A run folder's student.onnx and student.int8.onnx (as `kd-edge pipeline` writes them), each where its card
    says it was made from the folder's student.pt as ``settings`` would make it; (None, None) otherwise."""
    from kd_edge.deploy.quantize import made_with
    from kd_edge.runtime.bundle_files import file_sha256
    from kd_edge.runtime.session import read_card

    fp32, int8, checkpoint = source / "student.onnx", source / "student.int8.onnx", source / "student.pt"
    if not (source.is_dir() and checkpoint.is_file() and fp32.is_file()):
        return None, None
    sha, card = file_sha256(checkpoint), read_card(fp32)
    exporter, opset = settings.export.exporter, settings.export.opset
    if card.source_sha256 != sha or (opset is not None and card.versions.get("opset") != opset):
        return None, None
    if exporter is not None and exporter not in str(card.versions.get("exporter", "")):
        return None, None
    if not int8.is_file():
        return fp32, None
    card = read_card(int8)
    same = card.source_sha256 == sha and (card.quantization or {}).get("settings") == made_with(settings.quantize)
    return fp32, int8 if same else None


def export_to(source: Path, folder: Path, settings: DeploySettings, data_dir: str | None) -> Path:
    from kd_edge.deploy.export import export_onnx

    return export_onnx(source, folder, settings.export, data_dir=data_dir).path


def quantize_to(
    fp32: Path, folder: Path, settings: DeploySettings, data_dir: str | None
) -> tuple[Path | None, str | None]:
    """(the INT8 model, None), or (None, why there is none) when no INT8 model meets the accuracy budget.
    The bundle times the two forms itself, so the quantizer does not."""
    from kd_edge.deploy.quantize import quantize

    quantizer = replace(settings.quantize, compare_latency=False)
    try:
        result = quantize(fp32, quantizer, out=folder / f"{fp32.stem}.int8.onnx", data_dir=data_dir, force=True)
    except QuantizationError as exc:
        return None, f"no INT8 model met the accuracy budget: {exc}"
    return result.path, None


@dataclass(frozen=True, kw_only=True)
class ExportChain:
    """What `kd-edge export` wrote: the ONNX model, and the INT8 model and bundle when asked for."""

    export: object  # kd_edge.deploy.export.ExportResult
    quantized: object | None = None  # kd_edge.deploy.quantize.QuantizeResult
    bundle: object | None = None  # kd_edge.deploy.bundle.BundleResult


def export_then(
    source,
    out_dir,
    settings: DeploySettings,
    *,
    name: str | None = None,
    with_int8: bool = False,
    bundle=None,
    data_dir: str | None = None,
    force: bool = False,
    on_export=None,
) -> ExportChain:
    """`kd-edge export`: the ONNX model; with ``with_int8`` its INT8 model too, with ``bundle`` (a folder) a bundle of
    both. The INT8 model is calibrated on the data the export verified with. ``on_export(result)`` is told of the
    export before quantizing starts."""
    from kd_edge.deploy.bundle import write_bundle
    from kd_edge.deploy.export import export_onnx
    from kd_edge.deploy.quantize import quantize

    exported = export_onnx(source, out_dir, settings.export, name=name, data_dir=data_dir, force=force)
    if on_export is not None:
        on_export(exported)
    if not (with_int8 or bundle):
        return ExportChain(export=exported)
    # With a bundle to write, the bundle compares the forms itself.
    quantizer = replace(settings.quantize, compare_latency=settings.quantize.compare_latency and not bundle)
    quantized = quantize(exported.path, quantizer, data_dir=exported.data_dir, force=force)
    if not bundle:
        return ExportChain(export=exported, quantized=quantized)
    written = write_bundle(
        bundle, settings.bundle, fp32=exported.path, int8=quantized.path, data_dir=exported.data_dir, force=force
    )
    return ExportChain(export=exported, quantized=quantized, bundle=written)


# --- quantization-aware training, then ONNX Runtime's quantizer -----------------------------------------------

# The INT8 model's activation ranges come from calibration, not from the QAT observers,
# and integer kernels round differently from fake quantization: demand the same top-1
# class on almost every validation image rather than close logits. A student trained
# briefly has close logits, and more of its images flip: the README's tour at one epoch
# a stage agreed on 98.83 % (3 of 256 images), at the defaults on 100 %; an export
# that computes something else agrees on a fraction of them.
QAT_MIN_AGREEMENT = 0.98


@dataclass(frozen=True, kw_only=True)
class QATResult:
    path: Path
    fp32_test_accuracy: float
    qat_test_accuracy: float  # of the fake-quantised PyTorch model
    onnx_test_accuracy: float  # of the exported INT8 QDQ model, in ONNX Runtime
    top1_agreement: float
    fp32_layers: list[str]  # ONNX nodes the quantizer kept in FP32
    latency: object | None  # kd_edge.deploy.quantize_latency.LatencyComparison
    seconds: float


def qat_to_int8(
    run_dir, out_dir, settings: QATSettings | None = None, *, data_dir: str | None = None, force: bool = False,
    progress=None,
) -> QATResult:  # fmt: skip
    """`kd-edge qat`: fine-tune the student of ``run_dir`` with fake quantization, write the learnt weights as an
    FP32 graph, quantize it (the first convolution kept FP32 where QAT kept it), and check that ONNX Runtime's INT8
    model gives the fake-quantised model's top-1 class: ``out_dir``/RUN.qat.onnx."""
    from kd_edge.deploy.from_checkpoint import export_name
    from kd_edge.deploy.onnx_graph import check_parity, parity_images
    from kd_edge.deploy.qat import fine_tune, first_conv_node, write_learnt
    from kd_edge.deploy.quantize import quantize
    from kd_edge.errors import OutputError
    from kd_edge.io import ensure_writable_dir
    from kd_edge.runtime.card import write_card
    from kd_edge.runtime.session import OnnxModel

    settings = settings or QATSettings()
    out_dir = ensure_writable_dir(out_dir)
    path = out_dir / f"{export_name(Path(run_dir) / 'student.pt')}.qat.onnx"
    if path.exists() and not force:
        raise OutputError(f"{str(path)!r} already exists; pass --force to replace it or choose another --out")
    started = time.perf_counter()
    tuned = fine_tune(run_dir, settings, data_dir=data_dir, progress=progress)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".qat-") as scratch:
        learnt = write_learnt(tuned, Path(scratch) / "student.qat-fp32.onnx")
        exclude = (first_conv_node(learnt),) if tuned.fp32_layers else ()  # FP32 in QAT, FP32 in the file
        quantizer = replace(settings.quantize, exclude=exclude)
        quantized = quantize(learnt, quantizer, out=Path(scratch) / path.name, data_dir=tuned.data_dir, force=True)
        parity = check_parity(
            tuned.model,
            quantized.path,
            parity_images(tuned.dataset),
            atol=float("inf"),
            min_agreement=QAT_MIN_AGREEMENT,
        )
        card = OnnxModel(quantized.path).card
        qat = {**card.quantization, "mode": "qat", "qat_epochs": settings.epochs}
        write_card(quantized.path, replace(card, quantization=qat, fp32_test_accuracy=tuned.fp32_test_accuracy))
        quantized.path.replace(path)
    return QATResult(
        path=path,
        fp32_test_accuracy=tuned.fp32_test_accuracy,
        qat_test_accuracy=tuned.qat_test_accuracy,
        onnx_test_accuracy=quantized.int8_test_accuracy,
        top1_agreement=parity.top1_agreement,
        fp32_layers=quantized.excluded_nodes,
        latency=quantized.latency,
        seconds=time.perf_counter() - started,
    )

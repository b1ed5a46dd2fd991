"""Export a checkpoint to ONNX, check it, and prove it computes what PyTorch computes.

    result = export_onnx(ExportConfig(source="runs/demo"))   # a run folder means its student

Exporter: torch.onnx's TorchScript exporter (``dynamo=False``). It needs no extra
package (the dynamo exporter needs onnxscript), honours ``dynamic_axes`` for the
batch dimension, writes IR version 8 at opset 17, which ONNX Runtime 1.14 and
later load (ARM boards often carry older runtimes than the host), and exports
fake-quantised modules as QuantizeLinear/DequantizeLinear pairs for QAT.
The exporter used is recorded in the model's metadata.

Parity: ONNX Runtime against PyTorch on real validation images (never test), at
batch 1 and at a larger batch. A mismatch raises ExportParityError.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kd_edge import __version__
from kd_edge.checkpoint import Checkpoint, file_sha256, load_checkpoint
from kd_edge.errors import CheckpointError, ExportParityError, OutputError
from kd_edge.io import ensure_writable_dir
from kd_edge.log import step
from kd_edge.models import count_parameters
from kd_edge.runtime.card import ModelCard, write_card

DEFAULT_OPSET = 17
EXPORTER = "torch.onnx TorchScript exporter (dynamo=False)"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Float32 logits of ~10 in magnitude, summed over ~1,500 products in another order
# by ONNX Runtime (and with BatchNorm folded into the conv), differ by ~1e-6 to 1e-5.
# 1e-4 leaves headroom for that and still fails on any real error (a missing
# normalisation or a wrong layer changes logits by 0.1 or more).
PARITY_ATOL = 1e-4
PARITY_BATCH = 256
PARITY_SINGLES = 16


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Options of ``kd-edge export``. ``data_dir`` overrides the folder the checkpoint's run read its data from."""

    source: str
    out_dir: str = "exports"
    opset: int = DEFAULT_OPSET
    name: str | None = None  # the file's stem; default: export_name(checkpoint)
    data_dir: str | None = None
    force: bool = False


@dataclass(frozen=True)
class ParityReport:
    samples: int
    max_abs_diff: float
    max_abs_diff_batch1: float
    top1_agreement: float
    atol: float


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    path: Path
    parity: ParityReport
    card: ModelCard
    data_dir: str | None  # the folder the data was read from: later stages (quantize) read the same


def resolve_checkpoint(source: str | Path) -> Path:
    """A checkpoint file, or a run folder's student.pt."""
    source = Path(source)
    if source.is_dir():
        student = source / "student.pt"
        if not student.is_file():
            raise CheckpointError(
                f"run folder {str(source)!r} has no student.pt; pass the checkpoint file to export instead"
            )
        return student
    return source


def export_name(checkpoint: Path) -> str:
    """A run's student exports under the run's name, any other checkpoint as <run>-<checkpoint>,
    so that exports of different runs into one folder do not collide."""
    run = checkpoint.resolve().parent.name
    return run if checkpoint.stem == "student" else f"{run}-{checkpoint.stem}"


def export_onnx(config: ExportConfig) -> ExportResult:
    checkpoint_path = resolve_checkpoint(config.source)
    checkpoint = load_checkpoint(checkpoint_path)
    out_dir = ensure_writable_dir(config.out_dir)
    path = out_dir / f"{config.name or export_name(checkpoint_path)}.onnx"
    if path.exists() and not config.force:
        raise OutputError(f"{str(path)!r} already exists; pass --force to replace it or choose another --out")
    model = checkpoint.build_model().eval()
    card = export_card(checkpoint, model, config.opset)
    step(
        f"export: loading validation images of {card.data.dataset if card.data else 'its dataset'} for the parity check"
    )
    images = parity_images(checkpoint_dataset(checkpoint, config.data_dir))
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as scratch:
        draft = Path(scratch) / path.name
        step(f"export: {checkpoint.spec.name} to ONNX opset {config.opset}, then onnx.checker and shape inference")
        write_onnx(model, card, draft, config.opset)
        step(f"export: ONNX Runtime against PyTorch on {len(images)} validation images, batched and at batch 1")
        parity = check_parity(model, draft, images)
        draft.replace(path)
    data_dir = config.data_dir or (card.data.data_dir if card.data else None)
    return ExportResult(path=path, parity=parity, card=card, data_dir=data_dir)


def write_onnx(model: torch.nn.Module, card: ModelCard, path: Path, opset: int) -> None:
    """Export ``model``, check the graph, and write ``card`` into its metadata."""
    import onnx

    example = torch.zeros(1, *card.input_shape)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo; the choice is deliberate (module docstring).
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    proto.doc_string = (
        f"kd-edge {__version__}: {card.model} trained on {card.data.dataset if card.data else 'unknown data'}"
    )
    onnx.save(proto, str(path))
    write_card(path, card)


def export_card(checkpoint: Checkpoint, model: torch.nn.Module, opset: int) -> ModelCard:
    """The checkpoint's card, plus what the export adds: provenance and versions."""
    versions = {"kd_edge": __version__, "torch": str(torch.__version__), "opset": opset, "exporter": EXPORTER}
    return replace(
        checkpoint.card,
        model=checkpoint.spec.name,
        parameters=count_parameters(model),
        test_accuracy=checkpoint.card.test_accuracy
        if checkpoint.card.test_accuracy is not None
        else checkpoint.metrics.get("test_accuracy"),
        source_sha256=file_sha256(checkpoint.path),
        versions=versions,
    )


def checkpoint_dataset(checkpoint: Checkpoint, data_dir: str | None):
    """The dataset a checkpoint was trained on, from its card's data reference (``data_dir`` overrides the folder)."""
    from kd_edge.data import load_data

    if checkpoint.card.data is None:
        raise CheckpointError(
            f"{str(checkpoint.path)!r} does not record its dataset; re-create it with `kd-edge distill`"
        )
    dataset = load_data(checkpoint.card.data, data_dir)
    if tuple(dataset.input_shape) != tuple(checkpoint.card.input_shape):
        raise CheckpointError(
            f"dataset {dataset.name!r} gives input {list(dataset.input_shape)}, the checkpoint expects "
            f"{list(checkpoint.card.input_shape)}"
        )
    return dataset


def parity_images(dataset) -> np.ndarray:
    """Up to PARITY_BATCH validation images, uint8 NCHW, all classes represented."""
    order = np.concatenate(
        [
            np.flatnonzero(dataset.val.labels == c)[: PARITY_BATCH // dataset.num_classes + 1]
            for c in range(dataset.num_classes)
        ]
    )
    return dataset.val.images[np.sort(order)[:PARITY_BATCH]]


def check_parity(
    model: torch.nn.Module, path: Path, images: np.ndarray, atol: float = PARITY_ATOL, min_agreement: float = 1.0
) -> ParityReport:
    """ONNX Runtime (through the runtime's own preprocessing) against PyTorch, batched and at batch 1.

    Passes when every logit is within ``atol`` and at least ``min_agreement`` of the
    images (all of them, by default) get the same top-1 class.
    """
    from kd_edge.runtime import OnnxModel

    onnx_model = OnnxModel(path)
    inputs = onnx_model.preprocess(images)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    batched = onnx_model.logits(inputs)
    singles = np.concatenate([onnx_model.logits(inputs[i : i + 1]) for i in range(min(PARITY_SINGLES, len(inputs)))])
    diff = float(np.abs(batched - expected).max())
    diff_single = float(np.abs(singles - expected[: len(singles)]).max())
    same = np.concatenate(
        [batched.argmax(1) == expected.argmax(1), singles.argmax(1) == expected[: len(singles)].argmax(1)]
    )
    agreement = float(same.mean())  # over the batched and the batch-1 runs together
    report = ParityReport(len(inputs), diff, diff_single, agreement, atol)
    if max(diff, diff_single) > atol or agreement < min_agreement:
        raise ExportParityError(
            f"the ONNX model does not compute what the PyTorch model computes on {len(inputs)} validation images: "
            f"max |difference| {diff:.3g} (batch {len(inputs)}) and {diff_single:.3g} (batch 1) against a tolerance "
            f"of {atol:g}, top-1 agreement {agreement:.2%}. The model uses an operation that does not export "
            "faithfully; "
            "nothing was written. Report the model and torch version."
        )
    return report

"""A PyTorch model to an ONNX file that describes itself, and the proof that it computes what PyTorch computes.

Exporters (``ExportSettings.exporter``):

* ``dynamo`` (the default): ``torch.onnx.export(dynamo=True)``, built on torch.export, the
  path PyTorch maintains. The batch dimension is declared dynamic through ``dynamic_shapes``;
  the graph goes through onnxscript's optimiser. It writes opset 18 or later; kd-edge then
  lowers the IR version to the oldest that opset allows (IR 8) and keeps only the opset
  imports the nodes use (deploy/portable.py), so ONNX Runtime 1.16 and later load it, as
  they load the TorchScript exporter's files (ARM boards often carry older runtimes than
  the host).
* ``torchscript``: the TorchScript exporter (``dynamo=False``), which torch 2.9 and later
  deprecate (its DeprecationWarning is shown, not hidden); it writes opset 17.

With no exporter chosen, a model that torch.export cannot capture (data-dependent control
flow, for instance) falls back to the TorchScript exporter, and the card says why
(``versions.exporter_fallback``). The exporter used is recorded in the model's metadata.

Parity: ONNX Runtime against PyTorch on real images, at batch 1 and at a larger batch. A
mismatch raises ExportParityError.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kd_edge import __version__
from kd_edge.deploy.portable import make_portable
from kd_edge.errors import ExportError, ExportParityError
from kd_edge.log import heartbeat, quiet_loggers, step
from kd_edge.runtime.card import ModelCard, write_card
from kd_edge.settings.deploy import DEFAULT_EXPORTER, DEFAULT_OPSET, EXPORTERS, ExportSettings

INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Float32 logits of ~10 in magnitude, summed over ~1,500 products in another order
# by ONNX Runtime (and with BatchNorm folded into the conv), differ by ~1e-6 to 1e-5.
# 1e-4 leaves headroom for that and still fails on any real error (a missing
# normalisation or a wrong layer changes logits by 0.1 or more).
PARITY_ATOL = 1e-4
PARITY_BATCH = 256


@dataclass(frozen=True)
class ParityReport:
    samples: int
    max_abs_diff: float
    max_abs_diff_batch1: float
    top1_agreement: float
    atol: float


def write_onnx(
    model: torch.nn.Module, card: ModelCard, path: Path, settings: ExportSettings | None = None
) -> ModelCard:
    """Export ``model``, check the graph, and write ``card`` (plus the exporter and opset used) into its metadata.

    No exporter chosen means dynamo, falling back to torchscript where torch.export cannot capture the model.
    Returns the card as written.
    """
    import onnx

    settings = settings or ExportSettings()
    exporter, opset = settings.exporter, settings.opset
    chosen = exporter or DEFAULT_EXPORTER
    versions = {}
    try:
        proto = export_proto(model, card.input_shape, chosen, opset or DEFAULT_OPSET[chosen])
    except ExportError as exc:
        if exporter is not None:
            raise
        chosen, opset = "torchscript", min(opset or DEFAULT_OPSET["torchscript"], DEFAULT_OPSET["torchscript"])
        step(f"export: {exc}; falling back to the TorchScript exporter")
        versions["exporter_fallback"] = str(exc)
        proto = export_proto(model, card.input_shape, chosen, opset)
    onnx.checker.check_model(proto, full_check=True)
    proto = make_portable(onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True))
    proto.doc_string = (
        f"kd-edge {__version__}: {card.model} trained on {card.data.dataset if card.data else 'unknown data'}"
    )
    onnx.save(proto, str(path))
    opset_used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    card = replace(card, versions={**card.versions, "opset": opset_used, "exporter": EXPORTERS[chosen], **versions})
    write_card(path, card)
    return card


def export_proto(model: torch.nn.Module, input_shape, exporter: str, opset: int):
    """The ONNX graph of ``model`` with a dynamic batch axis, from the chosen exporter."""
    import onnx

    step(f"export: {model.__class__.__name__} to ONNX opset {opset} with the {exporter} exporter, then onnx.checker")
    # Batch 2, not 1: torch.export specialises a dimension of size 1, and a traced batch of 1
    # could hide the batch dimension from the TorchScript exporter's dynamic axes.
    example = torch.zeros(2, *input_shape)
    if exporter == "torchscript":
        with tempfile.TemporaryDirectory(prefix="kd-edge-export-") as scratch:
            file = Path(scratch) / "model.onnx"
            torch.onnx.export(
                model,
                (example,),
                str(file),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
            return onnx.load(str(file))
    try:
        # torch.export takes seconds to a minute and reports nothing; a failed capture also
        # logs its whole graph (and prints it: that much stays, for whoever debugs the model).
        with quiet_loggers("torch", "onnxscript", "onnx_ir"), heartbeat("export: torch.export is still working"):
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                optimize=True,
                verbose=False,
            )
    except torch.onnx.OnnxExporterError as exc:
        cause = exc.__cause__ or exc  # the exporter's own message is advice to PyTorch developers
        reason = f"{cause.__class__.__name__}: {(str(cause).strip().splitlines() or [''])[0][:200]}"
        raise ExportError(f"torch.export could not capture {model.__class__.__name__} ({reason})") from exc
    return program.model_proto  # IR 10 as the exporter stamps it; write_onnx makes it portable


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
    # Each side at batch 1 as well, on every image: an export that specialised the batch size
    # (a traced `if x.shape[0] == 1`) agrees at one batch size and not at the other.
    firsts = [inputs[i : i + 1] for i in range(len(inputs))]
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
        expected_singles = np.concatenate([model(torch.from_numpy(single)).numpy() for single in firsts])
    batched = onnx_model.logits(inputs)
    singles = np.concatenate([onnx_model.logits(single) for single in firsts])
    diff = float(np.abs(batched - expected).max())
    diff_single = float(np.abs(singles - expected_singles).max())
    same = np.concatenate([batched.argmax(1) == expected.argmax(1), singles.argmax(1) == expected_singles.argmax(1)])
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

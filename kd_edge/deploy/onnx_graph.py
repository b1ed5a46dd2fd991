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

The graph takes what a camera pipeline has (``CameraInput``): uint8 pixels, NHWC by default
(``ExportSettings.input_layout``), RGB or BGR; the cast, the channel order and
``(pixel / 255 - mean) / std`` are its first nodes, so a board feeds a resized frame with no
arithmetic of its own. The card says so (``input_type``, ``layout``, ``channel_order``).

Parity: ONNX Runtime on the uint8 frames against PyTorch on the float tensors training
normalised, on real images, at batch 1 and at a larger batch. A mismatch raises ExportParityError.
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
from kd_edge.training.batches import Normalizer

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


class CameraInput(torch.nn.Module):
    """``network`` behind the camera frame's uint8 pixels: cast, layout, channel order and normalisation in the
    graph, with training's ``Normalizer`` constants."""

    def __init__(self, network: torch.nn.Module, card: ModelCard):
        super().__init__()
        self.network = network
        self.nhwc = card.layout == "NHWC"
        self.bgr = card.channel_order == "BGR"
        normalizer = Normalizer(card.mean, card.std, "cpu")
        self.register_buffer("scale", normalizer.scale)
        self.register_buffer("shift", normalizer.shift)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        images = pixels.to(torch.float32)
        if self.nhwc:
            images = images.permute(0, 3, 1, 2)
        if self.bgr:
            images = images[:, [2, 1, 0]]
        return self.network(images * self.scale - self.shift)


def camera_card(card: ModelCard, settings: ExportSettings) -> ModelCard:
    """``card`` for a graph that takes uint8 pixels as ``settings`` lays them out."""
    colour = card.input_shape[0] == 3
    return replace(
        card,
        input_type="uint8",
        layout=settings.input_layout.upper(),
        channel_order=settings.channel_order.upper() if colour else "GRAY",
    )


def write_onnx(
    model: torch.nn.Module, card: ModelCard, path: Path, settings: ExportSettings | None = None
) -> ModelCard:
    """Export ``model`` behind ``CameraInput``, check the graph, and write ``card`` (as the graph takes its input,
    plus the exporter and opset used) into its metadata.

    No exporter chosen means dynamo, falling back to torchscript where torch.export cannot capture the model.
    Returns the card as written.
    """
    import onnx

    settings = settings or ExportSettings()
    card = camera_card(card, settings)
    model = CameraInput(model, card).eval()
    exporter, opset = settings.exporter, settings.opset
    chosen = exporter or DEFAULT_EXPORTER
    versions = {}
    try:
        proto = export_proto(model, card.image_shape, chosen, opset or DEFAULT_OPSET[chosen])
    except ExportError as exc:
        if exporter is not None:
            raise
        chosen, opset = "torchscript", min(opset or DEFAULT_OPSET["torchscript"], DEFAULT_OPSET["torchscript"])
        step(f"export: {exc}; falling back to the TorchScript exporter")
        versions["exporter_fallback"] = str(exc)
        proto = export_proto(model, card.image_shape, chosen, opset)
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


def export_proto(model: torch.nn.Module, image_shape, exporter: str, opset: int):
    """The ONNX graph of ``model`` (uint8 images of ``image_shape``) with a dynamic batch axis, from the chosen
    exporter."""
    import onnx

    name = type(getattr(model, "network", model)).__name__  # the user's network, not its CameraInput
    step(f"export: {name} to ONNX opset {opset} with the {exporter} exporter, then onnx.checker")
    # Batch 2, not 1: torch.export specialises a dimension of size 1, and a traced batch of 1
    # could hide the batch dimension from the TorchScript exporter's dynamic axes.
    example = torch.zeros(2, *image_shape, dtype=torch.uint8)
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
        raise ExportError(f"torch.export could not capture {name} ({reason})") from exc
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
    """ONNX Runtime on ``images`` (uint8 NCHW) as the graph takes them, against PyTorch on the float tensors
    training's ``Normalizer`` makes of them, batched and at batch 1.

    Passes when every logit is within ``atol`` and at least ``min_agreement`` of the
    images (all of them, by default) get the same top-1 class.
    """
    from kd_edge.runtime import OnnxModel

    onnx_model = OnnxModel(path)
    card = onnx_model.card
    normalised = Normalizer(card.mean, card.std, "cpu")(torch.from_numpy(images)).contiguous()
    frames = onnx_model.preprocess(images)  # the graph's own input: uint8 NHWC, for a default export
    # Each side at batch 1 as well, on every image: an export that specialised the batch size
    # (a traced `if x.shape[0] == 1`) agrees at one batch size and not at the other.
    with torch.no_grad():
        expected = model(normalised).numpy()
        expected_singles = np.concatenate([model(normalised[i : i + 1]).numpy() for i in range(len(images))])
    batched = onnx_model.logits(frames)
    singles = np.concatenate([onnx_model.logits(frames[i : i + 1]) for i in range(len(frames))])
    diff = float(np.abs(batched - expected).max())
    diff_single = float(np.abs(singles - expected_singles).max())
    same = np.concatenate([batched.argmax(1) == expected.argmax(1), singles.argmax(1) == expected_singles.argmax(1)])
    agreement = float(same.mean())  # over the batched and the batch-1 runs together
    report = ParityReport(len(images), diff, diff_single, agreement, atol)
    if max(diff, diff_single) > atol or agreement < min_agreement:
        raise ExportParityError(
            f"the ONNX model does not compute what the PyTorch model computes on {len(images)} validation images: "
            f"max |difference| {diff:.3g} (batch {len(images)}) and {diff_single:.3g} (batch 1) against a tolerance "
            f"of {atol:g}, top-1 agreement {agreement:.2%}. The model uses an operation that does not export "
            "faithfully; "
            "nothing was written. Report the model and torch version."
        )
    return report

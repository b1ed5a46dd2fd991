"""The export stage: a checkpoint (or a run folder's student) to a checked ONNX model that computes what it did.

    result = export_onnx("runs/demo", "exports")   # a run folder means its student

Parity runs on the checkpoint's own validation images (never test); the graph and the
checks are ``kd_edge.deploy.onnx_graph``'s.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from kd_edge.deploy.from_checkpoint import (
    checkpoint_dataset,
    detection_frames,
    export_card,
    export_name,
    resolve_checkpoint,
)
from kd_edge.deploy.onnx_graph import ParityReport, check_parity, parity_images, write_onnx
from kd_edge.errors import OutputError
from kd_edge.io import ensure_writable_dir
from kd_edge.log import step
from kd_edge.runtime.card import ModelCard
from kd_edge.settings.deploy import ExportSettings
from kd_edge.training.checkpoint import load_checkpoint


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    path: Path
    parity: ParityReport
    card: ModelCard
    data_dir: str | None  # the folder the data was read from: later stages (quantize) read the same


def export_onnx(
    source,
    out_dir,
    settings: ExportSettings | None = None,
    *,
    name: str | None = None,
    data_dir: str | None = None,
    force: bool = False,
) -> ExportResult:
    """Export ``source`` (a checkpoint, or a run folder's student.pt) to ``out_dir``/NAME.onnx (NAME: ``name``,
    else ``export_name``); ``data_dir`` overrides the folder the checkpoint's run read its data from."""
    checkpoint_path = resolve_checkpoint(source)
    checkpoint = load_checkpoint(checkpoint_path)
    out_dir = ensure_writable_dir(out_dir)
    path = out_dir / f"{name or export_name(checkpoint_path)}.onnx"
    if path.exists() and not force:
        raise OutputError(f"{str(path)!r} already exists; pass --force to replace it or choose another --out")
    model = checkpoint.build_model().eval()
    step(
        "export: loading validation images of "
        f"{checkpoint.card.data.dataset if checkpoint.card.data else 'its dataset'} for the parity check"
    )
    if checkpoint.card.task == "detect":  # whole frames: the detector's output is a heatmap a frame
        images = detection_frames(checkpoint, data_dir)
    else:
        images = parity_images(checkpoint_dataset(checkpoint, data_dir))
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as scratch:
        draft = Path(scratch) / path.name
        card = write_onnx(model, export_card(checkpoint, model), draft, settings)
        step(f"export: ONNX Runtime against PyTorch on {len(images)} validation images, batched and at batch 1")
        parity = check_parity(model, draft, images)
        draft.replace(path)
    data_dir = data_dir or (card.data.data_dir if card.data else None)
    return ExportResult(path=path, parity=parity, card=card, data_dir=data_dir)

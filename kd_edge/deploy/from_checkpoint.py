"""What a checkpoint says about its own export: the file's name, the model card it carries, the data it was
trained on. Shared by the export stage, QAT and the search's candidates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from kd_edge import __version__
from kd_edge.errors import CheckpointError
from kd_edge.runtime.card import ModelCard
from kd_edge.training.checkpoint import Checkpoint, file_sha256
from kd_edge.training.models import count_parameters


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


def export_card(checkpoint: Checkpoint, model: torch.nn.Module) -> ModelCard:
    """The checkpoint's card plus provenance and versions (``write_onnx`` adds the exporter's)."""
    return replace(
        checkpoint.card,
        model=checkpoint.spec.name,
        parameters=count_parameters(model),
        test_accuracy=checkpoint.card.test_accuracy
        if checkpoint.card.test_accuracy is not None
        else checkpoint.metrics.get("test_accuracy"),
        source_sha256=file_sha256(checkpoint.path),
        versions={"kd_edge": __version__, "torch": str(torch.__version__)},
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


def detection_frames(checkpoint: Checkpoint, data_dir: str | None, limit: int = 16):
    """Up to ``limit`` validation frames of a detector's data, as its export takes them: (N, 3, S, S) uint8, each
    read at the card's frame size and zero-padded to a square (``kd_edge.runtime.detections.letterbox``)."""
    import numpy as np

    from kd_edge.data.yolo import card_splits
    from kd_edge.runtime.detections import pad_square

    side = checkpoint.card.input_shape[1]
    val = card_splits(checkpoint.card, data_dir)["val"][:limit]
    return np.stack([pad_square(scene.image, side).transpose(2, 0, 1) for scene in val])

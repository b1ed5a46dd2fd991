"""Checkpoints that later stages can use on their own, saved atomically, loaded safely.

A checkpoint is a plain dict of tensors and primitives, so ``torch.load`` can read
it with ``weights_only=True`` (no pickled code runs). It holds the model's
registry name and constructor arguments, its model card (classes, input shape,
normalisation, data reference: the schema the ONNX export carries too), the
metrics and config that produced it, and versions.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kd_edge import __version__
from kd_edge.errors import CheckpointError
from kd_edge.io import atomic_write
from kd_edge.log import step
from kd_edge.runtime.card import ModelCard
from kd_edge.training.detectors import create_detector
from kd_edge.training.models import ModelSpec

FORMAT = "kd-edge-checkpoint"
FORMAT_VERSION = 2  # 2: a model card replaces version 1's "data" dict
# Measured on this machine at this hour: the run folder's metrics.json keeps them, the checkpoint does not, so
# that training twice gives the same file, and its ONNX exports the same bytes.
MACHINE_TIMINGS = ("train_seconds", "images_per_second")


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    path: Path
    spec: ModelSpec
    state_dict: dict
    card: ModelCard
    metrics: dict
    config: dict
    kd_edge_version: str

    def build_model(self) -> nn.Module:
        spec = self.spec
        model = (
            create_detector(spec.name, spec.num_classes, spec.in_channels) if spec.task == "detect" else spec.build()
        )
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"{str(self.path)!r}: weights do not fit model {self.spec.name!r} ({exc})") from exc
        return model


def save_checkpoint(path, model: nn.Module, spec: ModelSpec, card: ModelCard, metrics: dict, config: dict) -> Path:
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kd_edge_version": __version__,
        "torch_version": str(torch.__version__),
        "model": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "card": card.to_dict(),
        "metrics": {key: value for key, value in metrics.items() if key not in MACHINE_TIMINGS},
        "config": config,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


def load_checkpoint(path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; pass the teacher.pt or student.pt of a run folder"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        raise CheckpointError(
            f"cannot load checkpoint {str(path)!r}: it is truncated, corrupt, or holds objects that are "
            f"unsafe to load ({load_failure_reason(exc)}). Re-create it with `kd-edge teacher` or `kd-edge distill`."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a kd-edge checkpoint (a plain state_dict has no model name or metadata); "
            "re-create it with kd-edge"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} was written by a newer kd-edge ({payload.get('kd_edge_version')}); upgrade kd-edge"
        )
    try:
        return Checkpoint(
            path=path,
            spec=ModelSpec(**payload["model"]),
            state_dict=payload["state_dict"],
            card=ModelCard.from_dict(
                payload["card"] if "card" in payload else card_of_version_1(payload), f"checkpoint {str(path)!r}"
            ),
            metrics=payload.get("metrics", {}),
            config=payload.get("config", {}),
            kd_edge_version=payload.get("kd_edge_version", "unknown"),
        )
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(path)!r} lacks a required field ({exc}); re-create it with kd-edge") from exc


def load_weights(path) -> dict[str, torch.Tensor]:
    """The parameters in a kd-edge checkpoint or in a plain PyTorch weights file (a state_dict, as
    torchvision's pretrained files are, or a dict holding one under "state_dict" or "model")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--init {str(path)!r} does not exist; give a checkpoint or a weights file, or 'scratch'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load --init {str(path)!r}: it is not a PyTorch weights file, or it holds objects that are unsafe "
            f"to load ({load_failure_reason(exc)})"
        ) from exc
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return payload["state_dict"]
    for key in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not isinstance(payload, dict) or not any(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"--init {str(path)!r} holds no named tensors; give a checkpoint or a state_dict file")
    return {name: value for name, value in payload.items() if isinstance(value, torch.Tensor)}


def transfer_matching(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> dict:
    """Copy into ``model`` every tensor of ``weights`` whose name and shape match; report what was and was not.

    Partial transfer (a teacher's layers into a smaller student, a pretrained backbone into a
    new head) loads what fits and leaves the rest as initialised.
    """
    state = model.state_dict()
    loaded = [name for name, value in weights.items() if name in state and state[name].shape == value.shape]
    mismatched = {
        name: {"expected": list(state[name].shape), "found": list(value.shape)}
        for name, value in weights.items()
        if name in state and state[name].shape != value.shape
    }
    with torch.no_grad():
        for name in loaded:
            state[name].copy_(weights[name])
    return {
        "source": source,
        "loaded": loaded,
        "shape_mismatch": mismatched,
        "not_in_source": [name for name in state if name not in weights],
        "unused_from_source": [name for name in weights if name not in state],
    }


# What a training state holds, numbered: 2 since kd-edge keeps its own optimiser state (1: torch.optim's).
STATE_FORMAT = 2


class TrainingStateFile:
    """``RUN_DIR/<stage>.state.pt``: everything ``--resume`` needs to continue a stage exactly.

    Tensors and primitives only, loaded with ``weights_only=True``. Each save first moves
    the current file to ``<stage>.state.prev.pt``, so a crash during a save, or a damaged
    latest file, leaves the one before it to resume from.
    """

    def __init__(self, run_dir: Path, stage: str, fingerprint: dict | None = None):
        self.path = Path(run_dir) / f"{stage}.state.pt"
        self.previous = Path(run_dir) / f"{stage}.state.prev.pt"
        self.fingerprint = fingerprint or {}  # what must be the same to resume (the teacher's SHA-256...)

    def save(self, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save({**state, "fingerprint": self.fingerprint, "format": STATE_FORMAT}, buffer)
        if self.path.exists():
            os.replace(self.path, self.previous)
        atomic_write(self.path, lambda handle: handle.write(buffer.getbuffer()))

    def load(self) -> dict | None:
        """The latest readable state (falling back to the previous one, with a warning); None when there is none.
        Damaged files and nothing else is an error: a run is never restarted from scratch silently."""
        damaged = []
        for path in (self.path, self.previous):
            if not path.exists():
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                damaged.append(f"{path} ({load_failure_reason(exc)})")
                continue
            if damaged:
                step(f"warning: cannot read {damaged[0]}; resuming from the state saved before it, {path}")
            self.check(state, path)
            return state
        if damaged:
            raise CheckpointError(
                f"cannot resume: the saved training state is damaged: {'; '.join(damaged)}. Start the stage over "
                "with --force instead of --resume."
            )
        return None

    def check(self, state: dict, path: Path) -> None:
        from kd_edge.training.distributed import is_main

        if not is_main():  # rank 0 checks for all (only it computed the fingerprint: file hashes)
            return
        if state.get("format", 1) != STATE_FORMAT:
            raise CheckpointError(
                f"cannot resume from {path}: it was saved by another kd-edge, in training-state format "
                f"{state.get('format', 1)} (this one reads {STATE_FORMAT}). Start the stage over with --force "
                "instead of --resume."
            )
        saved = state.get("fingerprint", {})
        changed = [key for key in self.fingerprint if saved.get(key) != self.fingerprint[key]]
        if changed:
            details = "; ".join(f"{key}: {saved.get(key)!r} then, {self.fingerprint[key]!r} now" for key in changed)
            raise CheckpointError(
                f"cannot resume from {path}: it was saved with another {', '.join(changed)} ({details}). Resume with "
                "what the run started with, or start anew with --force."
            )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.previous.unlink(missing_ok=True)


def card_of_version_1(payload: dict) -> dict:
    """Version 1 kept the preprocessing in a "data" dict and the data folder in the run's config."""
    data, data_config = dict(payload["data"]), payload.get("config", {}).get("data", {})
    ref = {
        "dataset": data.pop("dataset"),
        "data_dir": data_config.get("data_dir"),
        "image_size": data_config.get("image_size"),
    }
    return {
        **data,
        "data": ref,
        "model": payload["model"]["name"],
        "test_accuracy": payload.get("metrics", {}).get("test_accuracy"),
    }


def load_failure_reason(exc: Exception) -> str:
    """The informative line of torch's long load errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error" in line:
            return line
    return lines[0] if lines else type(exc).__name__


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""Where a student's soft labels come from, and the one KD step every mode and QAT train with.

``FrozenTeachers`` answers "what do the teachers say about these training images?" for one
teacher or several (mixed by ``kd_edge.losses.ensemble_logits``). Without augmentation an
image is the same every epoch, so each teacher's logits on the train split are computed once
and looked up by index; with augmentation the teachers run on every batch.

``KDWeights`` holds the temperature and alpha in force, moved by their schedules at the start
of each epoch; ``kd_step`` is the step function of distillation and of QAT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kd_edge.errors import CheckpointError
from kd_edge.settings.schedules import parse_schedule, scheduled_value
from kd_edge.settings.training import KDSettings, teacher_mixing
from kd_edge.training.batches import DeviceSplit, Normalizer
from kd_edge.training.checkpoint import Checkpoint, file_sha256, load_checkpoint
from kd_edge.training.evaluate import evaluation_batch_size, predict_logits
from kd_edge.training.fit import StepFn
from kd_edge.training.losses import confidence_weights, distillation_loss, ensemble_logits


@dataclass
class FrozenTeachers:
    """Frozen teachers, each with its own input normalisation, and how their outputs are mixed.

    ``weighting`` is "equal", "confidence" (per sample, ``confidence_weights``) or one fixed
    weight per teacher.
    """

    models: list[nn.Module]
    normalizers: list[Normalizer]
    weighting: str | tuple[float, ...] = "equal"
    cached: torch.Tensor | None = None  # (teachers, train images, classes) when the logits are cached

    def __post_init__(self):
        for model in self.models:
            model.eval()
            model.requires_grad_(False)

    def cache(self, train: DeviceSplit, precision: str) -> None:
        """Compute every teacher's logits on the train split once (valid while images do not change)."""
        self.cached = torch.stack(
            [predict_logits(m, train, n, precision) for m, n in zip(self.models, self.normalizers, strict=True)]
        )

    @torch.no_grad()
    def raw_logits(self, index: torch.Tensor | None, images: torch.Tensor) -> torch.Tensor:
        """(teachers, batch, classes): looked up by training index when cached, else computed."""
        if self.cached is not None and index is not None:
            return self.cached[:, index]
        return torch.stack([m(n(images)).float() for m, n in zip(self.models, self.normalizers, strict=True)])

    def mixing(self, logits: torch.Tensor) -> torch.Tensor:
        """The teachers' weights: (teachers,) or, for confidence, (teachers, batch)."""
        if self.weighting == "confidence":
            return confidence_weights(logits)
        if self.weighting == "equal":
            return torch.full((len(self.models),), 1.0 / len(self.models), device=logits.device)
        return torch.tensor(self.weighting, device=logits.device)

    def target(self, index, images, temperature: float, kd_loss: str) -> torch.Tensor:
        """Logits standing for all teachers: their own for one teacher; for several, logits whose softened
        distribution is the weighted mixture (for ``kl``) or the weighted mean of the logits (for ``mse``)."""
        logits = self.raw_logits(index, images)
        if len(self.models) == 1:
            return logits[0]
        weights = self.mixing(logits)
        if kd_loss == "mse":
            weights = weights if weights.dim() == 2 else weights[:, None]
            return (weights[..., None] * logits).sum(dim=0)
        return ensemble_logits(logits, weights, temperature)

    def accuracy(self, split: DeviceSplit) -> float:
        """Top-1 accuracy of the mixture at T=1 (one teacher: its own)."""
        correct = 0
        for _, images, labels in split.batches(evaluation_batch_size(split.images.device)):
            correct += (self.target(None, images, 1.0, "kl").argmax(1) == labels).sum().item()
        return correct / len(split)


@dataclass
class KDWeights:
    """The temperature and alpha in force this epoch; ``begin_epoch`` is ``fit``'s ``before_epoch`` hook."""

    kd: KDSettings
    temperature: float = field(init=False)
    alpha: float = field(init=False)

    def __post_init__(self):
        self.temperature, self.alpha = self.kd.temperature, self.kd.alpha

    def begin_epoch(self, epoch: int, epochs: int, val_accuracies: list[float]) -> dict:
        kd = self.kd
        self.temperature = scheduled_value(
            parse_schedule(kd.temperature_schedule, "--temperature-schedule"),
            kd.temperature,
            epoch,
            epochs,
            val_accuracies,
        )
        alpha = scheduled_value(
            parse_schedule(kd.alpha_schedule, "--alpha-schedule"), kd.alpha, epoch, epochs, val_accuracies
        )
        self.alpha = min(max(alpha, 0.0), 1.0)
        return {"temperature": round(self.temperature, 6), "alpha": round(self.alpha, 6)}


def kd_step(normalize: Normalizer, teachers: FrozenTeachers | None, weights: KDWeights) -> StepFn:
    """The distillation step: ``alpha * CE(y, s) + (1 - alpha) * KD(teachers, s)`` at the values in force."""

    def step(model, index, images, labels) -> dict:
        logits = model(normalize(images))
        target = None
        if teachers is not None and weights.alpha < 1.0:
            target = teachers.target(index, images, weights.temperature, weights.kd.kd_loss)
        terms = distillation_loss(logits, target, labels, weights.temperature, weights.alpha, weights.kd.kd_loss)
        return {**terms, "logits": logits}

    return step


class MutualPair(nn.Module):
    """Teacher and student of online distillation in one module; its output is the student's."""

    def __init__(self, teacher: nn.Module, student: nn.Module):
        super().__init__()
        self.teacher = teacher
        self.student = student

    def forward(self, x: torch.Tensor, both: bool = False):
        """The student's logits; with ``both``, (teacher's, student's), in one call (as DistributedDataParallel
        needs, to synchronise both networks' gradients)."""
        return (self.teacher(x), self.student(x)) if both else self.student(x)


def mutual_step(normalize: Normalizer, weights: KDWeights) -> StepFn:
    """Deep mutual learning (Zhang et al. 2018): each network's loss is the KD loss towards the other's
    softened output, held constant (detached), so each one's gradient comes from its own term alone."""

    def step(pair: MutualPair, index, images, labels) -> dict:
        teacher_logits, student_logits = pair(normalize(images), both=True)
        args = (labels, weights.temperature, weights.alpha, weights.kd.kd_loss)
        student = distillation_loss(student_logits, teacher_logits.detach(), *args)
        teacher = distillation_loss(teacher_logits, student_logits.detach(), *args)
        return {
            "loss": student["loss"] + teacher["loss"],
            "ce": student["ce"],
            "kd": student["kd"],
            "teacher_ce": teacher["ce"],
            "teacher_kd": teacher["kd"],
            "logits": student_logits,
        }

    return step


def teachers_of_run(run_dir: Path, student: Checkpoint, device: torch.device) -> FrozenTeachers | None:
    """The frozen teacher(s) a student of ``run_dir`` learnt from, for fine-tuning it (QAT) with the same loss:
    the run's teacher.pt (trained offline, or online beside the student), or the files given with
    --teacher. None when the student learnt alone. A teacher that is gone is an error."""
    config = student.config
    kd = KDSettings(**{k: v for k, v in config.get("kd", {}).items() if k in KDSettings.__dataclass_fields__})
    if kd.alone:
        return None
    given = config.get("teacher_paths") or ([config["teacher_path"]] if config.get("teacher_path") else [])
    paths = [Path(path) for path in given] or [run_dir / "teacher.pt"]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise CheckpointError(
            f"the teacher of {str(run_dir)!r} ({', '.join(missing)}) is missing; fine-tuning keeps the teacher's soft "
            "labels in the loss. Pass a run folder of `kd-edge distill` whose teacher still exists."
        )
    recorded = student.metrics.get("distillation", {}).get("teacher_sha256")
    recorded = [recorded] if isinstance(recorded, str) else recorded
    if recorded and [file_sha256(path) for path in paths] != list(recorded):
        raise CheckpointError(
            f"the teacher file(s) {', '.join(map(str, paths))} of {str(run_dir)!r} are not the ones its student learnt "
            "from (their SHA-256 differs from the one the student recorded): they were replaced since. Fine-tune with "
            "the original teacher, or distil the student again."
        )
    checkpoints = [load_checkpoint(path) for path in paths]
    return FrozenTeachers(
        [c.build_model().to(device) for c in checkpoints],
        [Normalizer(c.card.mean, c.card.std, device) for c in checkpoints],
        teacher_mixing(config.get("teacher_weights", "equal"), len(checkpoints)),
    )

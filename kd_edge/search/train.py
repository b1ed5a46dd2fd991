"""Training the search's candidates: distilled from its teacher, a rung at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from kd_edge.settings.data import DataSettings
from kd_edge.settings.search import SearchSettings
from kd_edge.settings.training import STUDENT, DistillSettings


class CandidateTrainer:
    """Distils a candidate from the search's teacher for some steps, continuing from its last rung's student;
    the teacher's soft labels are computed once for all candidates."""

    def __init__(self, config: SearchSettings, teacher, data: DataSettings, progress_factory: Callable | None = None):
        self.config, self.teacher, self.data, self.progress_factory = config, str(teacher), data, progress_factory
        self.soft_labels: dict = {}

    def __call__(self, name: str, steps: int, run: Path, previous: str | None) -> dict:
        from kd_edge.training.distill import distill

        settings = DistillSettings(
            data=self.data,
            run=self.config.run,
            student=replace(STUDENT, model=name, steps=steps),
            init=str(Path(previous) / "student.pt") if previous else "scratch",
        )
        progress = self.progress_factory() if self.progress_factory else None
        # resume: a finished rung of these settings (and this teacher file) is kept, not retrained; an
        # interrupted one continues; one trained with other settings is refused, naming what differs
        metrics = distill(
            settings,
            run,
            teachers=(self.teacher,),
            resume=True,
            progress=progress,
            soft_label_cache=self.soft_labels,
            stop_at_chance=False,  # a short rung near chance is what halving drops
        )
        return {
            "epochs": metrics["student"]["epochs"],
            "val_accuracy": metrics["student"]["val_accuracy"],
            "run": str(run),
        }

"""What training tells its caller: a call per step and an ``EpochLog`` per epoch.

Training functions take any object with these three methods, so a library user can pass
``SilentProgress()`` (the default) or their own logger; the command line shows a live bar
(``kd_edge.cli.progress_bar``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EpochLog:
    stage: str  # "teacher" or "student"
    epoch: int
    epochs: int
    loss: float
    train_accuracy: float
    val_accuracy: float
    images_per_second: float
    seconds: float
    terms: dict  # mean of each named loss term, e.g. {"ce": ..., "kd": ...}
    values: dict = field(default_factory=dict)  # what a schedule set for this epoch, e.g. {"temperature": 4.0}


class SilentProgress:
    def start(self, stage: str, epochs: int, steps_per_epoch: int) -> None:
        pass

    def step(self, loss: float, images_per_second: float) -> None:
        pass

    def epoch_done(self, log: EpochLog) -> None:
        pass

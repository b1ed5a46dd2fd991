"""Schedules for the distillation temperature and alpha: the value in force at each epoch.

A schedule is written ``KIND[:END[:AT]]`` and moves a value from its start (``--temperature``
or ``--alpha``) towards ``END``:

    constant          the start value every epoch
    linear:END        a straight line from start (first epoch) to END (last epoch)
    cosine:END        half a cosine from start to END: slow, fast, slow
    step:END[:AT]     start until the fraction AT of the epochs (default 0.5), END from there
    adaptive:END      start, and after every epoch whose validation accuracy did not beat the best
                      so far, half of the remaining way to END: the value moves only when the
                      student stops improving (a plateau rule, like ReduceLROnPlateau's)

Every function here is pure: the value depends on the epoch and, for ``adaptive``, on the
validation accuracies of the epochs before it, so a schedule replays exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kd_edge.errors import ConfigError

KINDS = ("constant", "linear", "cosine", "step", "adaptive")
# An epoch "improves" when it beats the best validation accuracy so far by more than this.
ADAPTIVE_MIN_GAIN = 1e-3


@dataclass(frozen=True, kw_only=True)
class Schedule:
    kind: str = "constant"
    end: float | None = None
    at: float = 0.5

    def __str__(self) -> str:
        if self.kind == "constant":
            return "constant"
        return f"{self.kind}:{self.end:g}" + (f":{self.at:g}" if self.kind == "step" and self.at != 0.5 else "")


def parse_schedule(text: str, option: str) -> Schedule:
    """``"cosine:1"`` -> Schedule(kind="cosine", end=1.0); errors name the option and the accepted forms."""
    kind, *rest = text.strip().split(":")
    forms = "constant, linear:END, cosine:END, step:END[:AT] or adaptive:END"
    if kind not in KINDS:
        raise ConfigError(f"{option} {text!r}: unknown schedule {kind!r}; write one of {forms}")
    if kind == "constant":
        if rest:
            raise ConfigError(f"{option} {text!r}: 'constant' takes no value; the start value is the option itself")
        return Schedule()
    if not rest or len(rest) > (2 if kind == "step" else 1):
        raise ConfigError(f"{option} {text!r}: write {kind}:END (for example {kind}:1), one of {forms}")
    try:
        numbers = [float(value) for value in rest]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: {':'.join(rest)!r} is not a number; write {kind}:END") from None
    at = numbers[1] if len(numbers) > 1 else 0.5
    if not 0.0 < at < 1.0:
        raise ConfigError(f"{option} {text!r}: AT is a fraction of the epochs, between 0 and 1, got {at:g}")
    return Schedule(kind=kind, end=numbers[0], at=at)


def scheduled_value(
    schedule: Schedule, start: float, epoch: int, epochs: int, val_accuracies: list[float] | tuple = ()
) -> float:
    """The value in force during ``epoch`` (1-based) of ``epochs``; ``val_accuracies`` are those of the epochs
    before it (used by ``adaptive`` only)."""
    if schedule.kind == "constant":
        return start
    end = schedule.end
    progress = (epoch - 1) / (epochs - 1) if epochs > 1 else 1.0
    if schedule.kind == "linear":
        return start + (end - start) * progress
    if schedule.kind == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule.kind == "step":
        return start if epoch - 1 < schedule.at * epochs else end
    value, best = start, -math.inf
    for accuracy in val_accuracies[: epoch - 1]:
        if accuracy > best + ADAPTIVE_MIN_GAIN:
            best = accuracy
        else:
            value += (end - value) / 2
    return value

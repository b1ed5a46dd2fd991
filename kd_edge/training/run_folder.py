"""A run folder of ``kd-edge teacher`` or ``distill``: its files, its metrics, and the rules of resuming it.

RUN_DIR/teacher.pt, student.pt   checkpoints (``kd_edge.training.checkpoint``)
RUN_DIR/metrics.json             every stage's figures, rewritten after each
RUN_DIR/config.json              the settings the run started with
RUN_DIR/<stage>.state.pt         the training state a resumed run continues from
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from kd_edge import __version__
from kd_edge.errors import ConfigError, OutputError
from kd_edge.io import atomic_write_json, ensure_writable_dir
from kd_edge.settings.training import OptimSettings
from kd_edge.training.distributed import barrier, is_main

TEACHER_FILE = "teacher.pt"
STUDENT_FILE = "student.pt"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"


class RunFolder:
    """A run folder: refuses to overwrite earlier results, records metrics after every stage.

    With ``resume`` it continues an earlier run of the same configuration instead: its
    metrics are kept, and a different configuration is refused, naming what differs.
    """

    def __init__(self, out, config: dict, artifacts: list[str], *, force: bool = False, resume: bool = False):
        if resume and force:
            raise ConfigError("--resume continues the run in --out and --force replaces it; pick one")
        self.dir = ensure_writable_dir(out) if is_main() else Path(out)
        self.config = config
        self.started = time.perf_counter()
        earlier = self.dir / CONFIG_FILE
        self.resuming = resume and earlier.is_file()
        barrier()  # every rank has looked before rank 0 writes anything
        if self.resuming:
            check_same_config(json.loads(earlier.read_text()), config, self.dir)
            self.metrics = (
                json.loads((self.dir / METRICS_FILE).read_text()) if (self.dir / METRICS_FILE).is_file() else {}
            )
            self.metrics.setdefault("wall_time_s", {})
            self.metrics["resumed"] = self.metrics.get("resumed", 0) + 1
            return
        existing = [name for name in [*artifacts, METRICS_FILE] if (self.dir / name).exists()]
        if existing and not force and is_main():  # rank 0 decides; torchrun stops the others
            reuse = ""
            if TEACHER_FILE in existing and not (self.dir / STUDENT_FILE).exists():
                teacher = self.dir / TEACHER_FILE
                reuse = (
                    f" It holds a teacher: to distil from it, pass --teacher {teacher} and another --out, or --resume "
                    "to continue this run."
                    if config.get("stage") != "detect"  # a detector's student is trained only by its own run
                    else " It holds a finished teacher: --resume continues this run from it."
                )
            raise OutputError(
                f"{str(self.dir)!r} already holds {', '.join(existing)} from an earlier run; choose another --out, "
                f"pass --resume to continue it, or --force to replace it.{reuse}"
            )
        for stale in [*self.dir.glob("*.state.pt"), *self.dir.glob("*.state.prev.pt")] if is_main() else []:
            stale.unlink()  # a fresh run must never resume from an older run's state
        self.metrics = {
            "kd_edge_version": __version__,
            "torch_version": str(torch.__version__),
            "python_version": platform.python_version(),
            "wall_time_s": {},
        }
        if is_main():  # under torchrun only rank 0 writes
            atomic_write_json(self.dir / CONFIG_FILE, config)

    def finished(self, stage: str) -> bool:
        """Did an earlier run in this folder complete ``stage`` (its metrics recorded, its checkpoint there)?"""
        return self.resuming and stage in self.metrics and (self.dir / f"{stage}.pt").is_file()

    def record(self, section: str, values: dict, seconds: float | None = None) -> None:
        self.metrics[section] = values
        if seconds is not None:
            self.metrics["wall_time_s"][section] = round(seconds, 3)
        self.metrics["wall_time_s"]["total"] = round(time.perf_counter() - self.started, 3)
        if is_main():
            atomic_write_json(self.dir / METRICS_FILE, self.metrics)


RESUMABLE_CHANGES = {("run", "resume"), ("run", "force"), ("run", "threads"), ("run", "device")}
# Settings added since run folders were first written, with the value a run written before them trained with: such a
# run resumes under today's defaults.
ADDED_SETTINGS = {("optim", "cutmix"): OptimSettings().cutmix}


def check_same_config(earlier: dict, now: dict, run_dir: Path) -> None:
    """Refuse to resume a run with other settings: the result would match neither configuration."""
    differences = [
        f"{section}.{key}: {recorded(earlier, section, key)!r} then, {value!r} now"
        for section, values in now.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if (section, key) not in RESUMABLE_CHANGES and recorded(earlier, section, key) != jsonable(value)
    ]
    differences += [
        f"{key}: {earlier.get(key)!r} then, {value!r} now"
        for key, value in now.items()
        if not isinstance(value, dict) and earlier.get(key) != jsonable(value)
    ]
    if differences:
        raise ConfigError(
            f"cannot resume {str(run_dir)!r} with other settings ({'; '.join(differences)}). Resume with the "
            "settings it started with, or start anew with --force or another --out."
        )


def recorded(config: dict, section: str, key: str):
    """A setting as a run folder's config records it (``ADDED_SETTINGS``' value where it predates the setting)."""
    return config.get(section, {}).get(key, ADDED_SETTINGS.get((section, key)))


def jsonable(value):
    return json.loads(json.dumps(value))

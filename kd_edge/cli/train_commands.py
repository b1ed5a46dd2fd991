"""`kd-edge teacher`, `distill` and `sweep`: training on the host, in one process or under torchrun."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from kd_edge.cli.console import console, make_progress, next_step, print_summary
from kd_edge.cli.options import ForceOpt, NprocOpt, ResumeOpt, TeachersOpt, settings_command
from kd_edge.errors import ConfigError, MissingDependencyError
from kd_edge.settings.detection import DetectSettings
from kd_edge.settings.search import SweepSettings
from kd_edge.settings.training import DistillSettings, TeacherSettings


@settings_command("teacher")
def teacher(
    settings: TeacherSettings,
    given: set[str],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for teacher.pt, metrics.json and config.json.")]
    = Path("runs/teacher"),
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    nproc: NprocOpt = 1,
):  # fmt: skip
    """Train a teacher with cross-entropy: writes OUT/teacher.pt, metrics.json and config.json."""
    require_training_extra()
    from kd_edge.training.distill import train_teacher

    relaunch_under_torchrun(nproc)
    say_if_nothing_to_resume(out, resume)
    with training_process(settings.run.device):
        metrics = train_teacher(settings, out, force=force, resume=resume, progress=make_progress())
    print_summary(metrics, out)
    next_step(f"kd-edge distill --dataset {settings.data.dataset} --teacher {out / 'teacher.pt'} --out RUN_DIR")


def dataset_of_teachers(inputs: dict) -> dict:
    """Distilling from a --teacher means its data: the first teacher's dataset, unless --dataset says otherwise."""
    teachers = inputs.get("teacher")
    if not teachers:
        return {}
    from kd_edge.training.checkpoint import load_checkpoint

    card = load_checkpoint(teachers[0]).card
    return {"dataset": card.data.dataset} if card.data else {}


@settings_command("distill", defaults=dataset_of_teachers)
def distill(
    settings: DistillSettings,
    given: set[str],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoints, metrics.json and config.json.")]
    = Path("runs/distill"),
    teacher: TeachersOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    nproc: NprocOpt = 1,
):  # fmt: skip
    """Distil a student: writes OUT/student.pt (+ teacher.pt when it trains one) and metrics.json.

    The loss is alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)), from one
    frozen teacher (--mode offline), several (--mode multi) or a teacher learning alongside
    (--mode online). Frozen teachers' soft labels are computed once unless --augment changes the images.
    """
    require_training_extra()
    from kd_edge.training.distill import distill as distill_student

    teachers = tuple(str(path) for path in teacher or ())
    refuse_teacher_options(teachers, given)
    settings.check_teachers(len(teachers))
    relaunch_under_torchrun(nproc)
    say_if_nothing_to_resume(out, resume)
    with training_process(settings.run.device):
        metrics = distill_student(
            settings, out, teachers=teachers, force=force, resume=resume, progress=make_progress()
        )
    print_summary(metrics, out)
    next_step(f"kd-edge export {out} --onnx --int8 --out runs/exports (or kd-edge bundle {out} --out runs/bundle)")


def say_if_nothing_to_resume(out: Path, resume: bool) -> None:
    """--resume where --out holds no earlier run (a mistyped folder, a run that never started) starts from the
    beginning; say so, rather than let a long training start over unnoticed. Not an error: a script that always
    passes --resume, to continue whatever a preemption stopped, must start its first run too."""
    from kd_edge.log import step
    from kd_edge.training.run_folder import CONFIG_FILE

    if resume and not (out / CONFIG_FILE).is_file():
        step(f"--resume: {out} holds no earlier run (no {CONFIG_FILE}), so this one starts from the beginning")


def refuse_teacher_options(teachers: tuple[str, ...], given: set[str]) -> None:
    if teachers and given & {"teacher_model", "teacher_epochs", "teacher_steps"}:
        raise ConfigError(
            "--teacher gives a trained teacher, so --teacher-model and --teacher-epochs would be ignored; drop them, "
            "or drop --teacher to train one"
        )


@settings_command("sweep", defaults=dataset_of_teachers)
def sweep(
    settings: SweepSettings,
    given: set[str],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Sweep folder; run again to resume (finished cells are kept).")
    ] = Path("runs/sweep"),
    teacher: Annotated[
        list[Path] | None,
        typer.Option(
            "--teacher",
            metavar="PATH",
            help="Teacher(s) for every cell; without it (offline) one teacher per seed is trained and shared.",
        ),
    ] = None,
):
    """Distil over a grid of temperatures and alphas, several seeds per cell, resumably.

    Writes OUT/sweep.md and sweep.json (mean and std per cell) and sweep.png (a heat map), and
    names the best cell on the validation split (the test split is only reported).
    """
    require_training_extra()
    from kd_edge.search.sweep import sweep as run_sweep

    teachers = tuple(str(path) for path in teacher or ())
    refuse_teacher_options(teachers, given)

    def on_cell(name: str, cell_seed: int, ran: bool) -> None:
        console().print(f"{name} seed {cell_seed}: {'done' if ran else 'finished earlier, kept'}")

    with training_process("cpu"):
        summary = run_sweep(settings, out, teachers=teachers, progress_factory=make_progress, on_cell=on_cell)
    console().print((out / "sweep.md").read_text())
    best = summary["best"]
    console().print(
        f"best on validation: {best['cell']} ({100 * best['val_mean']:.2f} % val, {100 * best['test_mean']:.2f} "
        f"± {100 * best['test_std']:.2f} % test); table in {out / 'sweep.md'}, heat map in {out / 'sweep.png'}"
    )


@settings_command("detect")
def detect(
    settings: DetectSettings,
    given: set[str],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoints, split.json and metrics.json.")]
    = Path("runs/detect"),
    force: ForceOpt = False,
    resume: ResumeOpt = False,
):  # fmt: skip
    """Train a centroid detector on YOLO-labelled frames: a teacher, then a student distilled from its heatmaps.

    Each network answers, per 8x8 cell of the frame, which class has an object centred there (or none);
    objects are the cells that win above a threshold, one per local maximum. The weights and the threshold
    are chosen on validation; precision, recall and F1 of the centres (inside the object's box) are reported
    on test. Writes OUT/teacher.pt, student.pt, split.json and metrics.json.
    """
    require_training_extra()
    from kd_edge.training.detect_run import train_detectors

    say_if_nothing_to_resume(out, resume)
    with training_process("cpu"):
        metrics = train_detectors(settings, out, force=force, resume=resume)
    student = metrics["student"]["test"]["overall"]
    console().print(
        f"student {metrics['student']['model']}: test F1 {student['f1']:.3f} (precision {student['precision']:.3f}, "
        f"recall {student['recall']:.3f}); metrics in {out / 'metrics.json'}"
    )
    next_step(f"kd-edge export {out} --onnx --out runs/exports")


COMMANDS = {"teacher": teacher, "distill": distill, "sweep": sweep, "detect": detect}


# --- what every training command needs ----------------------------------------------------------------------


def require_training_extra(
    modules: tuple[str, ...] = ("torch", "torchvision", "onnx", "onnxscript", "torchao"), extra: str = "train"
) -> None:
    """The host-side commands need an extra (`train`, or `quantize` for onnx alone); the runtime (bench) does not."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"this command needs {' and '.join(missing)}, which the base install leaves out; install them with: "
            f"pip install 'kd-edge[{extra}]'"
        )


@contextlib.contextmanager
def training_process(device: str):
    """Process-wide settings for a training command (never set by the library itself): the allocator's and,
    under torchrun, the process group (gloo on CPU, nccl on CUDA). (SIGINT and SIGTERM asking for a clean stop
    are the command line's, for the command's whole life: ``kd_edge.cli.user_errors``.)"""
    from kd_edge.training.device import give_back_freed_memory, keep_freed_memory
    from kd_edge.training.distributed import process_group

    keep_freed_memory()
    try:
        with process_group(device):
            yield
    finally:
        give_back_freed_memory()


def relaunch_under_torchrun(nproc: int) -> None:
    """``--nproc N``: run this same command as N processes through torchrun's own launcher (then exit)."""
    from kd_edge.training.distributed import launched_by_torchrun

    if nproc <= 1 or launched_by_torchrun():
        return
    import subprocess

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        argv.append(arg)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    raise typer.Exit(subprocess.run([*launcher, "-m", "kd_edge", *argv]).returncode)

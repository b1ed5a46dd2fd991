"""`kd-edge pipeline` and `kd-edge report`: every stage in one run folder, and the report of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kd_edge.cli.console import console, print_pipeline_summary
from kd_edge.cli.options import settings_command
from kd_edge.cli.train_commands import require_training_extra, training_process
from kd_edge.errors import ConfigError, OutputError
from kd_edge.settings.commands import PIPELINE_TABLES
from kd_edge.settings.pipeline import PipelineSettings


def stage_tables(config_path: Path) -> list:
    """The config file's [distill], [export], [quantize], [bundle] and [bench] tables, each keyed as the command
    of the same name takes its options."""
    from kd_edge.settings.files import read_toml, table

    distill = read_toml(config_path).get("distill", {})
    if "teacher" in distill or "out" in distill:
        raise ConfigError("the pipeline trains its own teacher into --out: remove 'teacher' and 'out' from [distill]")
    return [
        (options, table(config_path, name, {option.name for option in options}))
        for name, options in PIPELINE_TABLES.items()
    ]


@settings_command("pipeline", layers=stage_tables)
def pipeline(
    settings: PipelineSettings,
    given: set[str],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The run folder; run again to resume, or with changed settings to rerun what they affect.",
        ),
    ] = Path("runs/pipeline"),
    force: Annotated[
        bool,
        typer.Option("--force", metavar="", help="Run in a folder that holds files of something else than a pipeline."),
    ] = False,
):
    """Teacher, distillation, export, INT8, bundle, benchmark and report in one run folder, resumable.

    Settings of each stage come from --config's tables ([distill], [export], [quantize], [bundle], [bench], as
    the commands of the same names take them); the options here win over the file. A yolo:PATH dataset trains a
    teacher and a student detector instead, as `kd-edge detect` does ([detect] table). The resolved settings are
    written to OUT/kd-edge.toml: `kd-edge pipeline --config OUT/kd-edge.toml --out NEW` repeats the run.
    """
    require_training_extra()
    refuse_classifier_options(settings, given)
    from kd_edge.cli.progress_bar import RichProgress, new_display
    from kd_edge.pipeline.runner import run_pipeline
    from kd_edge.training.distributed import is_main
    from kd_edge.training.progress import SilentProgress

    device = settings.distill.run.device
    if not is_main():  # another torchrun rank: it trains, rank 0 shows and writes
        with training_process(device):
            run_pipeline(settings, out, force=force, progress_factory=SilentProgress)
        return
    display = new_display(console(), transient=False)
    with training_process(device), display:
        result = run_pipeline(
            settings, out, force=force, display=display, progress_factory=lambda: RichProgress(display=display)
        )
    print_pipeline_summary(result)


# The pipeline's own options that only a classifier takes: detectors read frames as they are and train on the CPU.
CLASSIFIER_ONLY = ("teacher_model", "student_model", "teacher_epochs", "epochs", "image_size", "channels", "bad_images",
                   "normalization", "augment", "device", "precision", "deterministic")  # fmt: skip


def refuse_classifier_options(settings: PipelineSettings, given: set[str]) -> None:
    ignored = [f"--{name.replace('_', '-')}" for name in CLASSIFIER_ONLY if name in given]
    if settings.detects and ignored:
        raise ConfigError(
            f"{', '.join(ignored)}: for classifiers only, and {settings.distill.data.dataset!r} trains detectors: set "
            "the detectors' options (teacher-model, student-model, steps, frame-size...; `kd-edge detect --help`) in "
            "the [detect] table of --config"
        )


def report(run_dir: Annotated[Path, typer.Argument(help="A run folder of `kd-edge pipeline`.")]):
    """Rebuild RUN_DIR/report.md and report.html from the files of a run folder."""
    from kd_edge.pipeline.report import write_report

    if not (run_dir / "metrics.json").is_file():
        raise OutputError(f"{str(run_dir)!r} has no metrics.json: give the run folder of `kd-edge pipeline`")
    paths = write_report(run_dir)
    console().print(f"wrote {paths['markdown']} and {paths['html']}")


COMMANDS = {"pipeline": pipeline, "report": report}

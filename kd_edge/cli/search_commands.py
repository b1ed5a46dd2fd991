"""`kd-edge search`: the most accurate student within a board's latency (and memory) budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kd_edge.cli.console import console, make_progress, next_step
from kd_edge.cli.options import DataDirOpt, settings_command
from kd_edge.cli.train_commands import require_training_extra, training_process
from kd_edge.settings.search import SearchSettings


@settings_command("search")
def search(
    settings: SearchSettings,
    given: set[str],
    teacher: Annotated[Path, typer.Option("--teacher", help="The teacher.pt every candidate learns from.")],
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Default: the teacher's dataset.")] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Search folder; run again to resume (nothing is retrained).")
    ] = Path("runs/search"),
    data_dir: DataDirOpt = None,
):
    """Find the most accurate student within a board's latency (and memory) budget, then bundle it.

    Times every candidate untrained on the emulated board and drops those over budget, distils the rest
    from --teacher with successive halving, times the finalists again and writes the Pareto front
    (OUT/search.md, search.json, search.png) and a bundle of the chosen student (OUT/bundle).
    """
    require_training_extra()
    from kd_edge.search.student_search import search as run_search

    with training_process("cpu"):
        result = run_search(
            teacher,
            out,
            settings,
            dataset=dataset,
            data_dir=None if data_dir is None else str(data_dir),
            progress_factory=make_progress,
        )
    console().print((out / "search.md").read_text())
    if result["chosen"] is None:
        raise typer.Exit(1)
    next_step(f"kd-edge verify-arm {result['chosen']['bundle']}  (then copy it to the board)")


COMMANDS = {"search": search}

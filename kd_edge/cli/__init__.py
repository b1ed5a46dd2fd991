"""The ``kd-edge`` command line: this module registers the command groups and maps errors to exit codes once.

    train_commands.py     teacher, distill, sweep, detect deploy_commands.py  export, quantize, qat, bundle, verify-arm
    bench_commands.py     bench, predict, profiles      search_commands.py  search
    pipeline_commands.py  pipeline, report              info_commands.py    models, datasets
    options.py            options generated from the settings dataclasses, and the file options commands share
    config_file.py        --config FILE                 console.py          what commands print
    progress_bar.py       live training progress

A command resolves its settings (flags > config file > preset > defaults), calls one library
function, and renders the result. Heavy libraries (torch, torchvision, onnx) are imported inside
the commands, so ``kd-edge --help`` is instant and works without the ``train`` extra.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import sys
from typing import Annotated

import typer

from kd_edge.errors import Interrupted, KdEdgeError

app = typer.Typer(
    help="Distil image classifiers into small students for drone-class CPUs, export them and prove how they run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def show_version(value: bool) -> None:
    if value:
        from kd_edge import __version__

        typer.echo(f"kd-edge {__version__}")
        raise typer.Exit()


@app.callback()
def kd_edge_options(
    version: Annotated[
        bool,
        typer.Option("--version", metavar="", callback=show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            metavar="",
            help="Print every repeated step (timing rounds, calibrations) and ONNX Runtime's own logging.",
        ),
    ] = False,
):
    """Distil image classifiers into small students for drone-class CPUs, export them and prove how they run."""
    if verbose:
        from kd_edge.log import VERBOSE_ENV_VAR

        os.environ[VERBOSE_ENV_VAR] = "1"


# How each command that stops cleanly on SIGINT/SIGTERM is continued (the others end at once, as usual).
CONTINUE_WITH = {
    "teacher": "run the same command with --resume",
    "distill": "run the same command with --resume",
    "sweep": "run the same command again (finished cells are kept; the interrupted one resumes)",
    "search": "run the same command again (measured latencies and trained rungs are kept; the interrupted rung "
    "resumes)",
    "pipeline": "run the same command again (finished stages are kept; an interrupted training resumes)",
    "qat": "run the same command again (fine-tuning starts over: it is short)",
}


def user_errors(command, name: str):
    """Turn a KdEdgeError into a one-paragraph message and exit code 1, a clean stop on a signal into exit
    128 + its number with the command that continues, and Ctrl-C elsewhere into exit 130. While the command
    runs, every step the library announces is printed (no silent minutes)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from kd_edge.cli.console import console
        from kd_edge.cli.progress_bar import live_line
        from kd_edge.interrupt import stop_on_signals
        from kd_edge.log import steps_shown, verbose

        speaks = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for all

        def show(message: str) -> None:
            if speaks:
                console().print(f"[dim]{message}[/]", soft_wrap=True, highlight=False)

        def show_live(message: str) -> None:
            if speaks:
                live_line.show(console(), message)

        # The long commands stop cleanly on SIGINT/SIGTERM, from their first step to their last line of output
        stops = stop_on_signals() if name in CONTINUE_WITH else contextlib.nullcontext()
        try:
            with steps_shown(show, None if verbose() else show_live), stops:
                return command(*args, **kwargs)
        except Interrupted as exc:
            if speaks:  # every rank stops; one says so
                again = CONTINUE_WITH.get(name, "run the same command again")
                typer.echo(f"Stopped: {exc}." + ("" if exc.finished else f" To continue, {again}."), err=True)
            raise typer.Exit(128 + exc.signum) from None
        except KdEdgeError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted. Checkpoints already written in the run folder are complete and kept.", err=True)
            raise typer.Exit(130) from None
        finally:
            live_line.end()

    return wrapper


def summary_line(command) -> str:
    """The docstring's first paragraph, whole: click would cut it at 45 characters with '...'."""
    first = (command.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(first.split())


def register() -> None:
    """Every command group's commands, in the order ``kd-edge --help`` lists them."""
    from kd_edge.cli import (
        bench_commands,
        deploy_commands,
        info_commands,
        pipeline_commands,
        search_commands,
        train_commands,
    )

    for group in (train_commands, search_commands, deploy_commands, bench_commands, pipeline_commands, info_commands):
        for name, command in group.COMMANDS.items():
            app.command(name, short_help=summary_line(command))(user_errors(command, name))


register()


def predict_json_value_split(args: list[str]) -> list[str]:
    """``predict ... --json=FILE.json`` as ``--json FILE.json``.

    predict's ``--json`` is a flag to click (alone, it prints the JSON), so ``--json=FILE`` would be refused as a
    value given to a flag; written with a space, the file arrives among the inputs, where predict takes it
    (runtime/predict.json_file_among). The board's command line takes both spellings; so does this one."""
    if next((arg for arg in args if not arg.startswith("-")), None) != "predict":
        return args
    split = []
    for arg in args:
        split += ["--json", arg.removeprefix("--json=")] if arg.startswith("--json=") else [arg]
    return split


def main() -> None:
    try:
        app(args=predict_json_value_split(sys.argv[1:]), prog_name="kd-edge")
    finally:
        # The interpreter's last garbage collection walks every object alive, 200,000 once torch is imported:
        # 0.8 s of each exit (benchmarks/command_exit.py). Nothing kd-edge writes waits for it (files are closed
        # and replaced atomically), so the objects alive now are left to the OS.
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())

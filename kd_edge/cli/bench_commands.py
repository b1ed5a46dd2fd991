"""`kd-edge bench`, `predict` and `profiles`: the runtime's commands, which need no torch (they run on the board)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kd_edge.cli.console import console, next_step, print_bench_table
from kd_edge.cli.options import DataDirOpt, settings_command
from kd_edge.errors import ConfigError
from kd_edge.settings.bench import BenchSettings, PredictSettings


@settings_command("bench")
def bench(
    settings: BenchSettings,
    given: set[str],
    models: Annotated[
        list[Path],
        typer.Argument(metavar="MODEL...", help="ONNX models or bundles (folders or .tar.gz), compared side by side."),
    ],
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Labelled data for accuracy: its test split.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Labelled data for accuracy: an .npz with images (and labels).")
    ] = None,
    data_dir: DataDirOpt = None,
    frames: Annotated[
        Path | None,
        typer.Option(
            help="A folder of camera frames (JPEG, PNG...): also time each frame's whole path, batch 1: decode, "
            "resize to the model's input, inference (up to 50 frames, first round)."
        ),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the results as a Markdown table.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a PNG: accuracy against latency, and latency distributions (needs matplotlib)."),
    ] = None,
):
    """Benchmark ONNX models under an emulated drone target: latency, throughput, accuracy, memory. Needs no torch.

    Accuracy comes from --dataset or --data, else a bundle's samples, else the test split of the dataset
    the model card names.
    """
    from kd_edge.io import atomic_write, atomic_write_json
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark
    from kd_edge.runtime.bench.render import markdown_table
    from kd_edge.runtime.bench.render import plot as draw

    job = BenchJob(
        models=tuple(str(m) for m in models),
        settings=settings,
        dataset=dataset,
        data=None if data is None else str(data),
        data_dir=None if data_dir is None else str(data_dir),
        frames=None if frames is None else str(frames),
    )
    report = run_benchmark(job)
    out = console()
    for warning in report.warnings:
        out.print(f"[bold yellow]warning:[/] {warning}")
    print_bench_table(report)
    if not any(r.model.endswith(".tar.gz") or Path(r.model).is_dir() for r in report.results):
        next_step(f"kd-edge bundle {report.results[0].model} --out runs/bundle (a deployable folder for the board)")
    if json_path:
        atomic_write_json(json_path, report.to_dict())
    if markdown:
        text = markdown_table(report)
        atomic_write(markdown, lambda handle: handle.write(text.encode()))
    if plot and not draw(report, plot):
        out.print("[bold yellow]warning:[/] no plot written: matplotlib is not installed (pip install matplotlib)")


@settings_command("predict")
def predict(
    settings: PredictSettings,
    given: set[str],
    model: Annotated[
        Path, typer.Argument(metavar="MODEL_OR_BUNDLE", help="An .onnx model, or a bundle folder or .tar.gz.")
    ],
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="INPUT...", help="Image files (PNG, JPEG...), folders of them, or .npz files of uint8 images."
        ),
    ],
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            metavar="[FILE.json]",
            help="Print JSON (one object per input) instead of a table; --json FILE.json writes it to that file.",
        ),
    ] = False,
    draw: Annotated[
        Path | None,
        typer.Option(
            help="A detector: write each image with its objects marked, to this file (one input image) or into this "
            "folder (several)."
        ),
    ] = None,
):
    """The model's top classes, with probabilities, for each input; for a detector, the objects it finds (class,
    centre in the image's pixels, score). Needs no torch (runs on the board)."""
    from kd_edge.runtime import OnnxModel
    from kd_edge.runtime.predict import json_file_among, predict_files, send_json

    json_file, inputs = json_file_among(inputs, json_output)
    onnx_model = OnnxModel(model, threads=settings.threads)
    if onnx_model.card.task == "detect":
        predict_objects(onnx_model, inputs, settings.threshold, draw, json_output, json_file)
        return
    if draw is not None or settings.threshold is not None:
        raise ConfigError(f"--draw and --threshold are for a detector's objects; {model} is a classifier")
    rows = predict_files(onnx_model, inputs, top_k=min(settings.top_k, len(onnx_model.classes)))
    if json_output and not send_json([row.to_dict() for row in rows], json_file):
        return
    from rich.table import Table

    table = Table(title=f"kd-edge predict with {model}")
    for column in ["input", *(f"#{i + 1}" for i in range(len(rows[0].top))), "note"]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row.input, *(f"{name} {p:.1%}" for name, p in row.top), row.note or "")
    console().print(table)


def predict_objects(model, inputs, threshold: float | None, draw: Path | None, json_output: bool, json_file):
    from kd_edge.runtime.detections import detect_files, draw_frames, frame_lines
    from kd_edge.runtime.predict import send_json

    frames = detect_files(model, inputs, threshold)
    if draw is not None:
        draw_frames(frames, draw)
    if json_output and not send_json([frame.to_dict() for frame in frames], json_file):
        return
    for line in frame_lines(frames):
        console().print(line)
    if draw is not None:
        console().print(f"drawn: {draw}")


def profiles():
    """List the device profiles that `kd-edge bench --profile` accepts."""
    from kd_edge.runtime.bench.profiles import PROFILES

    for profile in PROFILES.values():
        peaks = (profile.peak_gops_per_core("fp32"), profile.peak_gops_per_core("int8"))
        peak = "measured" if peaks[0] is None else f"{peaks[0]:g} GFLOPS fp32, {peaks[1]:g} GOPS int8 per core"
        typer.echo(f"{profile.name:16} {profile.description}; {peak}")


COMMANDS = {"bench": bench, "predict": predict, "profiles": profiles}

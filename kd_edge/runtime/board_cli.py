"""``kd-edge`` on a board that has only numpy and onnxruntime: the runtime's commands, with argparse.

    kd-edge bench bundle/ --threads 2 --rate 30      # latency, accuracy on samples.npz, the drone loop's verdict
    kd-edge predict bundle/ frame.npz                 # top classes per image (image files need Pillow)
    kd-edge predict detector/ frame.jpg --json o.json # a detector's objects (class, x, y, score) in the image
    kd-edge check bundle/                             # every form's accuracy on samples.npz
    kd-edge profiles

The full command line needs typer and rich, and today's typer needs pydantic, which is compiled per
platform: a board installing offline from a bundle has no wheel of it. So when typer is missing,
``kd-edge`` runs this instead. Its options are generated from the same settings as the full
command line's (``kd_edge.settings.commands``), so both take the same flags with the same defaults.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from kd_edge.errors import KdEdgeError
from kd_edge.settings.commands import COMMANDS, CommandOptions, resolve
from kd_edge.settings.fields import Option, help_text


def add_options(parser: argparse.ArgumentParser, command: CommandOptions) -> None:
    """One argparse option per settings option of ``command``: same flags, same help, default None (not given)."""
    for option in command.options:
        kind, text = option.kind(), help_text(option, command.settings)
        if kind is bool:
            positive, negative = option.flags()[0].split("/")
            parser.add_argument(positive, dest=option.name, action="store_const", const=True, help=text)
            parser.add_argument(negative, dest=option.name, action="store_const", const=False, help=argparse.SUPPRESS)
        elif option.parse is None and typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            parser.add_argument(*flags_of(option), dest=option.name, action="append", type=item, help=text)
        else:
            scalar = str if option.parse is not None or not isinstance(kind, type) else kind
            parser.add_argument(*flags_of(option), dest=option.name, type=scalar, help=text)


def flags_of(option: Option) -> list[str]:
    return [f"--{option.key}", *([option.short] if option.short else [])]


def settings_from(args: argparse.Namespace, command: CommandOptions):
    given = {o.name: getattr(args, o.name) for o in command.options if getattr(args, o.name) is not None}
    return resolve(command, given)


def bench(args: argparse.Namespace) -> None:
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark
    from kd_edge.runtime.bench.render import markdown_table, verdict_lines

    settings = settings_from(args, COMMANDS["bench"])
    job = BenchJob(models=tuple(args.models), settings=settings, dataset=args.dataset, data=args.data)
    report = run_benchmark(job)
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(markdown_table(report), end="")
    for line in verdict_lines(report):
        print(line)
    if args.json:
        from kd_edge.io import atomic_write_json

        atomic_write_json(args.json, report.to_dict())


def predict(args: argparse.Namespace) -> None:
    from kd_edge.runtime import OnnxModel
    from kd_edge.runtime.predict import json_file_among, predict_files, send_json

    given = [*args.inputs, *([Path(args.json)] if isinstance(args.json, str) else [])]  # --json's value: a .json, or
    args.json_file, args.inputs = json_file_among(given, args.json is not None)  # an input written after the flag
    settings = settings_from(args, COMMANDS["predict"])
    model = OnnxModel(args.model, threads=settings.threads)
    if model.card.task == "detect":
        predict_objects(model, args, settings.threshold)
        return
    rows = predict_files(model, args.inputs, top_k=min(settings.top_k, len(model.classes)))
    if args.json is not None and not send_json([row.to_dict() for row in rows], args.json_file):
        return
    for row in rows:
        top = ", ".join(f"{name} {p:.1%}" for name, p in row.top)
        print(f"{row.input}: {top}" + (f" ({row.note})" if row.note else ""))


def predict_objects(model, args: argparse.Namespace, threshold: float | None) -> None:
    """A detector's objects in each image, in the image's own pixels (``--draw`` marks them on a copy)."""
    from kd_edge.runtime.detections import detect_files, draw_frames, frame_lines
    from kd_edge.runtime.predict import send_json

    frames = detect_files(model, args.inputs, threshold)
    if args.draw is not None:
        draw_frames(frames, args.draw)
    if args.json is None or send_json([frame.to_dict() for frame in frames], args.json_file):
        print("\n".join(frame_lines(frames)))


def profiles(args: argparse.Namespace) -> None:
    from kd_edge.runtime.bench.profiles import PROFILES

    for profile in PROFILES.values():
        print(f"{profile.name:16} {profile.description}")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="kd-edge",
        description="kd-edge's runtime commands (typer is not installed: `pip install 'kd-edge[cli]'` for all).",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="{bench,predict,check,profiles}")
    bench_parser = commands.add_parser("bench", help="Latency, accuracy and memory of models or bundles.")
    bench_parser.add_argument("models", nargs="+", metavar="MODEL", help="ONNX models or bundles (folders or .tar.gz)")
    bench_parser.add_argument("--dataset", "-d", help="labelled data for accuracy: a dataset's test split")
    bench_parser.add_argument("--data", help="labelled data for accuracy: an .npz with images (and labels)")
    bench_parser.add_argument("--json", type=Path, help="write the report as JSON")
    add_options(bench_parser, COMMANDS["bench"])
    bench_parser.set_defaults(run=bench)
    predict_parser = commands.add_parser("predict", help="The model's top classes for each input.")
    predict_parser.add_argument("model", type=Path, help="an .onnx model, or a bundle folder or .tar.gz")
    predict_parser.add_argument("inputs", nargs="*", type=Path, help="image files, folders of them, or .npz files")
    predict_parser.add_argument(
        "--json", nargs="?", const=True, metavar="FILE.json", help="print JSON instead of lines, or write it to FILE"
    )
    predict_parser.add_argument(
        "--draw", type=Path, help="a detector: each image with its objects marked, to this file or into this folder"
    )
    add_options(predict_parser, COMMANDS["predict"])
    predict_parser.set_defaults(run=predict)
    check_parser = commands.add_parser("check", help="Every form's accuracy on a bundle's samples.", add_help=False)
    check_parser.add_argument("rest", nargs=argparse.REMAINDER)
    check_parser.set_defaults(run=None)
    commands.add_parser("profiles", help="The device profiles bench accepts.").set_defaults(run=profiles)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "check":
        from kd_edge.runtime.check import main as check

        return check(args.rest)
    try:
        args.run(args)
    except KdEdgeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Centroid detection on aerial-cars (issue 24): teacher, student alone, student distilled, paired per seed.

    .venv/bin/python benchmarks/detection.py --seeds 0 1 2 --markdown benchmarks/results/detection.md

The data is ../shared/datasets/aerial-cars (YOLO format), read at 512 px on the long side and split by
source (the file name without its frame number: no video has frames on two sides), seeded. Per seed:
the teacher (fomo-base) trains on labels alone; the student (fomo-small) trains alone and distilled from
that teacher (alpha 0.5, T 2), both from the same initial weights and the same tile draws. Each keeps
its best weights and decoding threshold on validation; F1 (per class and over all), precision,
recall and the counting error are then measured on the test split's whole images. A detection is
correct when its centre lies inside a box of its class (kd_edge.runtime.detections).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from markdown_out import show

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "datasets" / "aerial-cars"


# (row name, detector (None: --teacher's or --student's), distilled from the teacher): the networks per seed
ROWS = (("teacher", None, False), ("student alone", None, False), ("student distilled", None, True))


def run_seed(seed: int, args: argparse.Namespace, keep: dict | None = None) -> dict:
    """One seed's teacher, student alone and student distilled, on the seed's split of the data, under the command
    line's recipe ``args`` (see ``run_split``)."""
    from kd_edge.data.yolo import detection_splits
    from kd_edge.settings.detection import DetectSettings

    defaults = DetectSettings(dataset=f"yolo:{args.data}")
    splits = detection_splits(args.data, args.frame_size, defaults.split, {**defaults.split_rule(), "seed": seed})
    return run_split(splits, seed, args, ROWS, keep)


def run_split(splits: dict, seed: int, args: argparse.Namespace, rows, keep: dict | None = None) -> dict:
    """The teacher, then each of ``rows`` (name, detector or None for ``--teacher`` or ``--student``, distilled or
    not), trained on ``splits`` from seed ``seed``'s initial weights and tile draws, under the command line's recipe
    ``args``. With ``keep`` (a dict), each network's validation and test logits are put there too, by its name,
    with the split's scenes and classes (what benchmarks/detection_decoding.py decodes again)."""
    import numpy as np
    import torch

    from kd_edge.data.dataset import channel_stats
    from kd_edge.data.yolo import read_classes
    from kd_edge.runtime.detections import score_frames
    from kd_edge.settings.detection import DetectSettings
    from kd_edge.settings.training import RunSettings
    from kd_edge.training.batches import Normalizer
    from kd_edge.training.detection_fit import DetectorPlan, fit_detector, scene_logits
    from kd_edge.training.detectors import create_detector
    from kd_edge.training.models import count_macs, count_parameters

    data, steps, teacher_steps = args.data, args.steps, args.teacher_steps
    settings = DetectSettings(
        dataset=f"yolo:{data}",
        run=RunSettings(seed=seed, precision=args.precision),
        kd_cells=args.kd_cells,
        feature_weight=args.feature_weight,
        object_weight=args.object_weight,
        ema_decay=args.ema_decay,
        scales=tuple(args.scales),
        frame_size=args.frame_size,
    )  # kd-edge detect's defaults otherwise
    classes, side = read_classes(data), 512  # MACs of a 512x512 frame, whatever --frame-size reads
    pixels = np.concatenate([s.image.reshape(-1, 3) for s in splits["train"]])
    mean, std = channel_stats(pixels.T[None, :, :, None])
    out = {"split": {name: sorted({s.group for s in scenes}) for name, scenes in splits.items()},
           "sizes": {name: len(scenes) for name, scenes in splits.items()}}  # fmt: skip

    def train(name: str, model_steps: int, teacher=None) -> tuple[torch.nn.Module, dict]:
        torch.manual_seed(seed)
        model = create_detector(name, len(classes))
        plan = DetectorPlan(model=model, train=splits["train"], val=splits["val"], classes=tuple(classes),
                            steps=model_steps, settings=settings, mean=mean, std=std)  # fmt: skip
        result = fit_detector(plan, teacher)
        logits = scene_logits(model, splits["test"], Normalizer(mean, std, "cpu"))
        summary = score_frames(logits, splits["test"], classes, result.threshold, model.stride)
        if keep is not None:
            val_logits = scene_logits(model, splits["val"], Normalizer(mean, std, "cpu"))
            keep[name + (" distilled" if teacher is not None else "")] = (val_logits, logits)
            keep.update(splits=splits, classes=classes)
        return model, {
            "test": summary.to_dict(), "val_f1": result.best_val_f1,
            "threshold": result.threshold, "best_step": result.best_step, "seconds": result.seconds,
            "precision": result.precision,
            "parameters": count_parameters(model), "macs_512": count_macs(model, (3, side, side)),
        }  # fmt: skip

    teacher = None
    for row, detector, distilled in rows:
        if row == "teacher":
            teacher, out[row] = train(detector or args.teacher, teacher_steps)
        else:
            _, out[row] = train(detector or args.student, steps, teacher if distilled else None)
    return out


def arguments() -> argparse.ArgumentParser:
    """The recipe's options (kd-edge detect's defaults), which benchmarks/detection_decoding.py shares."""
    from kd_edge.settings.detection import DetectSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="as kd-edge detect's")
    parser.add_argument("--kd-cells", default="objects", choices=("equal", "objects"))
    parser.add_argument("--feature-weight", type=float, default=0.0, help="the feature term's weight (0: none)")
    parser.add_argument(
        "--object-weight", type=float, default=DetectSettings.object_weight, help="an object cell's weight in the loss"
    )
    parser.add_argument(
        "--ema-decay", type=float, default=DetectSettings.ema_decay, help="the weights' moving average (0: none)"
    )
    parser.add_argument("--frame-size", type=int, default=DetectSettings.frame_size, help="frames' longer side (px)")
    parser.add_argument("--scales", type=float, nargs=2, default=[0.75, 1.33], help="the crops' scale range")
    # fomo-small, not kd-edge detect's default student: the student of detection.md's tables made by this script
    parser.add_argument("--student", default="fomo-small", help="the student detector (`kd-edge models`)")
    parser.add_argument("--teacher", default="fomo-base", help="the teacher detector, of the student's cells")
    parser.add_argument("--work", type=Path, default=Path("runs/detection"))
    parser.add_argument("--markdown", type=Path)
    return parser


def parsed_arguments() -> argparse.Namespace:
    """The command line's options, with the work folder made and torch's threads set."""
    args = arguments().parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    args = parsed_arguments()
    runs = {}
    for seed in args.seeds:
        variant = "" if args.kd_cells == "equal" else f"-kd-{args.kd_cells}"  # files of the first round: equal
        variant += f"-features-{args.feature_weight:g}" if args.feature_weight else ""
        variant += "" if args.scales == [0.75, 1.33] else f"-scales-{args.scales[0]:g}-{args.scales[1]:g}"
        variant += "" if args.student == "fomo-small" else f"-{args.student}"
        variant += "" if args.frame_size == 512 else f"-frame-{args.frame_size}"  # 512: files of the first rounds
        path = args.work / f"seed{seed}-{args.teacher_steps}-{args.steps}{variant}.json"
        if not path.is_file():  # a finished seed is kept
            started = time.perf_counter()
            result = run_seed(seed, args)
            path.write_text(json.dumps({**result, "wall_seconds": time.perf_counter() - started}, indent=1))
        runs[seed] = json.loads(path.read_text())
    header = "| model | car F1 (test) per seed | mean +- std | overall F1 | counting error / image | parameters | "
    lines = [f"## Centroid detection on aerial-cars, seeds {', '.join(map(str, args.seeds))}", "",
             header + "MACs at 512x512 | train s |", "| --- " * 8 + "|"]  # fmt: skip
    for name in ("teacher", "student alone", "student distilled"):
        car = [runs[s][name]["test"]["per_class"].get("car", {}).get("f1", 0.0) for s in args.seeds]
        overall = [runs[s][name]["test"]["overall"]["f1"] for s in args.seeds]
        counting = [runs[s][name]["test"]["counting_error"] for s in args.seeds]
        first = runs[args.seeds[0]][name]
        spread = statistics.stdev(car) if len(car) > 1 else 0.0
        lines.append(
            f"| {name} | {', '.join(f'{v:.3f}' for v in car)} | {statistics.mean(car):.3f} +- {spread:.3f} | "
            f"{statistics.mean(overall):.3f} | {statistics.mean(counting):.1f} | {first['parameters']:,} | "
            f"{first['macs_512'] / 1e6:.0f} M | {statistics.mean(runs[s][name]['seconds'] for s in args.seeds):.0f} |"
        )
    for seed in args.seeds:
        lines.append(f"\nseed {seed}: split {runs[seed]['split']} ({runs[seed]['sizes']})")
    lines += ["", f"`.venv/bin/python benchmarks/detection.py --seeds {' '.join(map(str, args.seeds))}`", ""]
    show(lines, args.markdown)


if __name__ == "__main__":
    main()

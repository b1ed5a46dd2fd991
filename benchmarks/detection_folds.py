"""Detector recipes judged on every source of aerial-cars: one fold per source (issue 24).

    .venv/bin/python benchmarks/detection_folds.py --threads 1 --folds 0 2 4 6   # and 1 3 5 alongside
    .venv/bin/python benchmarks/detection_folds.py --markdown benchmarks/results/detection.md

A seed's split of aerial-cars puts one or two sources in validation and one in test: a recipe chosen there is
chosen on one source, and the 3 seeds test only 2 different ones. Here fold k tests source k, validates on
source k + 1 (sources sorted by name, the last validated on the first) and trains on the other five, so every
source is tested once and validated on once. Per fold: the ``--teacher`` (fomo-base), then each ``--students``
detector alone (unless ``--no-alone``) and distilled from it (kd-edge detect's recipe, the benchmark's options;
every network of a fold starts from seed ``--seed``'s weights and tile draws). Each network keeps its best
weights on its fold's validation; its validation and test logits are kept in ``--work`` (``fold-K.npz``: a
finished fold is not trained again; give each recipe a ``--work`` folder of its own).

Scores pool the folds: per fold and decoding rule (a local maximum over 8 or 4 neighbours), the threshold is the
one its validation source scores best (overall F1); then true and false positives and misses are summed over
the 7 validation sources and over the 7 test sources. Validation decides between recipes; test reports.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
from detection import arguments, run_split
from detection_decoding import save_logits, validated
from markdown_out import show

RULES = (8, 4)
SPLITS = ("train", "val", "test")
COUNTS = ("true_positives", "false_positives", "false_negatives")


def source_folds(scenes: list) -> list[dict]:
    """One split per source: test the source, validate on the next one by name, train on the rest."""
    sources = sorted({scene.group for scene in scenes})
    folds = []
    for k, source in enumerate(sources):
        held = {"test": source, "val": sources[(k + 1) % len(sources)]}
        part = {scene.group: name for name, group in held.items() for scene in scenes if scene.group == group}
        folds.append({name: [s for s in scenes if part.get(s.group, "train") == name] for name in SPLITS})
    return folds


def fold_logits(k: int, fold: dict, args) -> dict:
    """Fold ``k``'s networks' validation and test logits with the split's truths, from ``--work`` or trained."""
    path = args.work / f"fold-{k}.npz"
    if not path.is_file():
        keep = {}
        rows = [("teacher", args.teacher, False)]
        for name in args.students:
            rows += [(f"{name} alone", name, False)] if args.alone else []
            rows += [(f"{name} distilled", name, True)]
        result = run_split(fold, args.seed, args, rows, keep)
        (args.work / f"fold-{k}.json").write_text(json.dumps(result, indent=1))
        save_logits(path, keep)
    return dict(np.load(path))


def pooled_f1(summaries: list, cls: str | None) -> float:
    """F1 of the true positives, false positives and misses summed over folds (``cls`` None: every class)."""
    counts = [s.overall if cls is None else s.per_class.get(cls, {}) for s in summaries]
    tp, fp, fn = (sum(c.get(key, 0) for c in counts) for key in COUNTS)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def table(results: dict, networks: list[str], sources: list[str]) -> list[str]:
    lines = ["| network | neighbours | validation F1, pooled (all classes) | car F1 (test), pooled | car F1 (test) per "
             "source | mean +- std over sources | counting error / image |", "| --- " * 7 + "|"]  # fmt: skip
    for network in networks:
        for rule in RULES:
            folds = [results[k][(network, rule)] for k in sorted(results)]
            car = [f["test"].per_class.get("car", {}).get("f1", 0.0) for f in folds]
            tests = [f["test"] for f in folds]
            counting = sum(t.counting_error * t.images for t in tests) / sum(t.images for t in tests)
            lines.append(
                f"| {network} | {rule} | {pooled_f1([f['val'] for f in folds], None):.3f} | "
                f"**{pooled_f1(tests, 'car'):.3f}** | {', '.join(f'{v:.2f}' for v in car)} | "
                f"{statistics.mean(car):.3f} +- {statistics.stdev(car):.3f} | {counting:.1f} |"
            )
    order = f"Sources, per-source order (each tested once, validated in the next fold's place): {', '.join(sources)}."
    return [*lines, "", order]


def main() -> None:
    parser = arguments()
    parser.add_argument("--folds", type=int, nargs="+", help="which folds to train (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and tile draws of every fold")
    parser.add_argument("--students", nargs="+", default=["fomo-small", "fomo-lite"])
    parser.add_argument("--alone", action=argparse.BooleanOptionalAction, default=True, help="students alone too")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from kd_edge.data.yolo import read_yolo

    scenes = read_yolo(args.data, args.frame_size)
    folds = source_folds(scenes)
    chosen = args.folds if args.folds is not None else range(len(folds))
    arrays = {k: fold_logits(k, folds[k], args) for k in chosen}
    if len(arrays) < len(folds):
        return  # the table pools every fold: run the rest, then once without --folds
    hows = ("", " distilled") if args.alone else (" distilled",)
    networks = [args.teacher] + [name + how for name in args.students for how in hows]
    results = {k: {(n, rule): validated(a, n, rule) for n in networks for rule in RULES} for k, a in arrays.items()}
    sources = [folds[k]["test"][0].group for k in sorted(arrays)]
    command = "`.venv/bin/python benchmarks/detection_folds.py --threads 1` (folds side by side: `--folds ...`)"
    title = f"## Every source tested once: {len(folds)} folds, seed {args.seed}"
    lines = [title, "", *table(results, networks, sources), "", command, ""]
    show(lines, args.markdown)


if __name__ == "__main__":
    main()

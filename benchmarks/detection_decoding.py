"""Which cells a centroid detector's decoder keeps: a local maximum over all 8 neighbours (kd-edge's rule) or
over the 4 edge neighbours only (diagonal neighbours, as in a dense parking row, are then both kept).

    .venv/bin/python benchmarks/detection_decoding.py --seeds 0 --threads 1

Per seed, the networks of benchmarks/detection.py (teacher, student alone, student distilled: the same recipe,
options and draws) are trained once; their weights are the ones validation chose under the 8-neighbour rule.
Each rule then picks its own threshold on validation (overall F1, as training does) and is scored on test.
Each seed's logits are kept in ``--work`` (``decoding-seedS.npz``), so a finished seed is not trained again.
"""

from __future__ import annotations

import json
import statistics

import numpy as np
from detection import parsed_arguments, run_seed
from markdown_out import show

RULES = (8, 4)
NETWORKS = ("fomo-base", "fomo-small", "fomo-small distilled")


def seed_logits(seed: int, args) -> dict:
    """The seed's networks' logits on validation and test, with the split's truths, from ``--work`` or trained."""
    path = args.work / f"decoding-seed{seed}.npz"
    if not path.is_file():
        keep = {}
        run_seed(seed, args, keep)
        save_logits(path, keep)
    return dict(np.load(path))


def save_logits(path, keep: dict) -> None:
    """``keep`` (filled by ``run_split``: each network's validation and test logits, the splits, the classes) as
    one .npz of arrays by ``network|part|frame``, with each frame's truths and image size."""
    splits, classes, arrays = keep.pop("splits"), keep.pop("classes"), {}
    for name, (val, test) in keep.items():
        arrays |= {f"{name}|val|{i}": a for i, a in enumerate(val)}
        arrays |= {f"{name}|test|{i}": a for i, a in enumerate(test)}
    for part in ("val", "test"):
        arrays |= {f"truths|{part}|{i}": s.truths() for i, s in enumerate(splits[part])}
        arrays |= {f"sizes|{part}|{i}": np.array(s.image.shape[1::-1]) for i, s in enumerate(splits[part])}
    arrays["classes"] = np.array(classes)
    np.savez_compressed(path, **arrays)


def frames(arrays: dict, key: str, part: str) -> list:
    count = sum(name.startswith(f"{key}|{part}|") for name in arrays)
    return [arrays[f"{key}|{part}|{i}"] for i in range(count)]


def validated(arrays: dict, network: str, rule: int) -> dict:
    """``network``'s threshold under ``rule`` chosen on validation (overall F1, as training does), and its
    validation and test summaries there."""
    from kd_edge.runtime.detections import score_truths
    from kd_edge.training.detection_fit import THRESHOLDS

    classes = list(arrays["classes"])
    parts = {part: [frames(arrays, key, part) for key in (network, "truths", "sizes")] for part in ("val", "test")}
    logits, _, sizes = parts["val"]
    stride = round(sizes[0][1] / logits[0].shape[1])  # input pixels per cell: the frame's height over its rows

    def score(part: str, threshold: float):
        return score_truths(*parts[part], classes, threshold, stride, rule)

    threshold = max(THRESHOLDS, key=lambda t: score("val", t).overall["f1"])
    return {"threshold": threshold, "val": score("val", threshold), "test": score("test", threshold)}


def scored(arrays: dict, network: str, rule: int) -> dict:
    """The rule's threshold chosen on validation, and its validation and test scores."""
    chosen = validated(arrays, network, rule)
    val, test = chosen["val"], chosen["test"]
    car = test.per_class.get("car", {}).get("f1", 0.0)
    return {"threshold": chosen["threshold"], "val_f1": val.overall["f1"], "test_car_f1": car,
            "test_f1": test.overall["f1"], "counting_error": test.counting_error}  # fmt: skip


def main() -> None:
    args = parsed_arguments()
    results = {}
    for seed in args.seeds:
        arrays = seed_logits(seed, args)
        results[seed] = {(network, rule): scored(arrays, network, rule) for network in NETWORKS for rule in RULES}
    lines = [f"## Decoding: 8 or 4 neighbours, seeds {', '.join(map(str, args.seeds))}", "",
             "| network | neighbours | validation F1 per seed (mean) | car F1 (test) per seed | mean +- std | "
             "overall F1 (test) | counting error / image | thresholds |", "| --- " * 8 + "|"]  # fmt: skip
    for network in NETWORKS:
        for rule in RULES:
            rows = [results[seed][(network, rule)] for seed in args.seeds]
            val, car = [r["val_f1"] for r in rows], [r["test_car_f1"] for r in rows]
            spread = statistics.stdev(car) if len(car) > 1 else 0.0
            lines.append(
                f"| {network} | {rule} | {', '.join(f'{v:.3f}' for v in val)} ({statistics.mean(val):.3f}) | "
                f"{', '.join(f'{v:.3f}' for v in car)} | {statistics.mean(car):.3f} +- {spread:.3f} | "
                f"{statistics.mean(r['test_f1'] for r in rows):.3f} | "
                f"{statistics.mean(r['counting_error'] for r in rows):.1f} | "
                f"{', '.join(str(r['threshold']) for r in rows)} |"
            )
    lines += ["", f"`.venv/bin/python benchmarks/detection_decoding.py --seeds {' '.join(map(str, args.seeds))}"
              f"{f' --threads {args.threads}' if args.threads else ''}`", ""]  # fmt: skip
    show(lines, args.markdown)
    (args.work / "decoding.json").write_text(json.dumps({s: {f"{n}|{r}": v for (n, r), v in d.items()}
                                                         for s, d in results.items()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

"""Which weights to keep on a small validation split (RSSCN7, issue 21): the best epoch on validation, the
last epoch, or an exponential moving average (EMA) of the weights.

    .venv/bin/python benchmarks/checkpoint_choice.py --seeds 0 1 2 --markdown benchmarks/results/aerial.md

One training run per seed (the default student, pooled-base, alone: kd-edge's recipe of AdamW, one-cycle,
batch 256, 1,200 steps = 200 epochs at 64 px, aerial augmentation, one thread) evaluates, after every epoch,
the trained weights and two EMAs of them (decay 0.99 and 0.995, BatchNorm buffers averaged too) on
validation and test: the three choices are compared within the same run, on the same weights. A choice is
made on validation only; test is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from markdown_out import show

DATA = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "rsscn7"
)  # ../shared beside the repository
DECAYS = (0.99, 0.995)


def train(seed: int, data: Path, model_name: str, steps: int) -> list[dict]:
    """Per epoch: {"epoch", "trained": (val, test), "ema 0.99": (val, test), ...}."""
    import torch
    import torch.nn.functional as F
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from kd_edge.settings.data import DataSettings
    from kd_edge.settings.training import OptimSettings, RunSettings
    from kd_edge.training.augment import augment
    from kd_edge.training.batches import Normalizer, normalization
    from kd_edge.training.device import build_seeded
    from kd_edge.training.evaluate import accuracy
    from kd_edge.training.optimizers import make_optimizer, make_scheduler
    from kd_edge.training.splits import load_splits

    torch.set_num_threads(1)
    splits, _ = load_splits(RunSettings(), DataSettings(dataset=f"folder:{data}"))
    normalize = Normalizer(*normalization(splits.dataset, "dataset"), splits.device)
    model = build_seeded(splits.spec(model_name), seed)
    optim = OptimSettings()
    steps_per_epoch = len(splits.train) // optim.batch_size
    epochs = min(-(-steps // steps_per_epoch), 200)
    optimizer = make_optimizer(model, optim)
    scheduler = make_scheduler(optimizer, optim, epochs * steps_per_epoch)
    emas = {d: AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True) for d in DECAYS}
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for epoch in range(1, epochs + 1):
        model.train()
        for _, images, labels in splits.train.batches(optim.batch_size, splits.train.shuffled_order(generator)):
            loss = F.cross_entropy(model(normalize(augment(images, "aerial", generator))), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            for ema in emas.values():
                ema.update_parameters(model)
        networks = {"trained": model, **{f"ema {d}": ema.module for d, ema in emas.items()}}
        row = {"epoch": epoch}
        for name, network in networks.items():
            row[name] = (accuracy(network, splits.val, normalize), accuracy(network, splits.test, normalize))
        rows.append(row)
        print(f"seed {seed} epoch {epoch}/{epochs}: {row}", flush=True)
    return rows


def choices(rows: list[dict]) -> dict[str, float]:
    """Test accuracy of each way of choosing the weights (validation decides; the first best epoch wins)."""
    out = {}
    for name in [key for key in rows[0] if key != "epoch"]:
        best = max(rows, key=lambda row: row[name][0])
        out[f"{name}, best epoch on validation"] = best[name][1]
        out[f"{name}, last epoch"] = rows[-1][name][1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default="pooled-base")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--work", type=Path, default=Path("runs/checkpoint-choice"))
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results, seconds = {}, {}
    for seed in args.seeds:
        path = args.work / f"{args.model}-seed{seed}-{args.steps}.json"
        if not path.is_file():  # a finished seed is kept
            started = time.perf_counter()
            rows = train(seed, args.data, args.model, args.steps)
            path.write_text(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
        saved = json.loads(path.read_text())
        results[seed], seconds[seed] = choices(saved["rows"]), saved["seconds"]
    lines = [
        f"## Which weights to keep: {args.model} alone, {args.steps} steps, seeds {', '.join(map(str, args.seeds))}",
        "",
        "| weights kept | test accuracy per seed | mean +- std |",
        "| --- | --- | --- |",
    ]
    for choice in results[args.seeds[0]]:
        values = [100 * results[seed][choice] for seed in args.seeds]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(
            f"| {choice} | {', '.join(f'{v:.2f}' for v in values)} | {statistics.mean(values):.2f} +- {spread:.2f} % |"
        )
    lines += ["", f"`.venv/bin/python benchmarks/checkpoint_choice.py --seeds {' '.join(map(str, args.seeds))}`; "
              f"one thread, {statistics.mean(seconds.values()):.0f} s a seed.", ""]  # fmt: skip
    show(lines, args.markdown)


if __name__ == "__main__":
    main()

"""Aerial crops cut from the photos' own size or from the model's copy (RSSCN7, issue 21).

    .venv/bin/python benchmarks/sharp_crops.py --seeds 0 1 2 --markdown benchmarks/results/aerial.md  # ~11 min a run
    .venv/bin/python benchmarks/sharp_crops.py --cost      # what a batch's augmentation costs, against a training step

The aerial augmentation crops 70-100 % of an image's side and resizes the crop to the model's input. Cut from the
64 px copy training keeps, a crop is enlarged back to 64 px and comes out blurrier than any photo the model meets
later (those are the 128 px photos brought down to 64). Cut from the 128 px photos (``sources``), it is brought
down, as sharp as the rest. Both variants train the default student, pooled-base, alone (cross-entropy; kd-edge's
AdamW, one-cycle, batch 256, 200 epochs at 64 px, bf16 autocast, one thread), from the same initial weights, in the
same data order and under the same augmentation draws per seed; validation and test accuracy after every epoch.
Reported: test accuracy at the best epoch on validation (what kd-edge keeps), validation there, and the mean of
the last 20 epochs' validation (less noisy than one epoch on 224 images).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from markdown_out import show

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "rsscn7"
VARIANTS = ("from the 64 px copy", "from the 128 px photos")
EPOCHS = 200


def train(seed: int, data: Path, sharp: bool) -> list[tuple[int, float, float]]:
    """(epoch, validation accuracy, test accuracy) after every epoch."""
    import torch
    import torch.nn.functional as F

    from kd_edge.settings.data import DataSettings
    from kd_edge.settings.training import OptimSettings, RunSettings
    from kd_edge.training.augment import augment
    from kd_edge.training.batches import Normalizer, normalization
    from kd_edge.training.device import autocast, build_seeded
    from kd_edge.training.evaluate import accuracy
    from kd_edge.training.optimizers import make_optimizer, make_scheduler
    from kd_edge.training.splits import load_splits

    torch.set_num_threads(1)
    splits, _ = load_splits(RunSettings(), DataSettings(dataset=f"folder:{data}", image_size=64))
    assert splits.train.sources is not None and splits.train.sources.shape[-1] == 128
    normalize = Normalizer(*normalization(splits.dataset, "dataset"), splits.device)
    model = build_seeded(splits.spec("pooled-base"), seed)
    optim = OptimSettings()
    optimizer = make_optimizer(model, optim)
    scheduler = make_scheduler(optimizer, optim, EPOCHS * (len(splits.train) // optim.batch_size))
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for epoch in range(1, EPOCHS + 1):
        model.train()
        for index, images, labels in splits.train.batches(optim.batch_size, splits.train.shuffled_order(generator)):
            augmented = augment(images, "aerial", generator, splits.train.sources_of(index) if sharp else None)
            with autocast(images.device, "bf16"):  # the step's passes, as kd-edge's fit (augmentation outside)
                loss = F.cross_entropy(model(normalize(augmented)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        rows.append((epoch, accuracy(model, splits.val, normalize), accuracy(model, splits.test, normalize)))
        if epoch % 20 == 0:
            print(f"seed {seed}, {VARIANTS[sharp]}: epoch {epoch} val {rows[-1][1]:.2%} test {rows[-1][2]:.2%}")
    return rows


def cost(rounds: int = 3) -> list[str]:
    """Milliseconds to augment a batch of 256 cut from the 64 px copy and from 128 px sources, and one training
    step of the default student (bf16, 2 threads), ``rounds`` readings each, alternating."""
    import torch
    import torch.nn.functional as F

    from kd_edge.training.augment import augment
    from kd_edge.training.device import autocast
    from kd_edge.training.models import ModelSpec

    torch.set_num_threads(2)
    images = torch.randint(0, 256, (256, 3, 64, 64), dtype=torch.uint8)
    sources = torch.randint(0, 256, (256, 3, 128, 128), dtype=torch.uint8)
    labels = torch.randint(0, 7, (256,))
    generator = torch.Generator().manual_seed(0)
    model = ModelSpec("pooled-base", 7, 3, 64).build().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())

    def step() -> None:
        with autocast(images.device, "bf16"):
            batch = (images.float() / 255).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(batch), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def timed(work, repeats: int = 8) -> float:
        work()
        started = time.perf_counter()
        for _ in range(repeats):
            work()
        return 1000 * (time.perf_counter() - started) / repeats

    lines = [
        "| round | augment from the 64 px copy, ms | from 128 px sources, ms | training step, ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for number in range(1, rounds + 1):
        copy = timed(lambda: augment(images, "aerial", generator))
        sharp = timed(lambda: augment(images, "aerial", generator, sources))
        lines.append(f"| {number} | {copy:.1f} | {sharp:.1f} | {timed(step):.1f} |")
    return lines


def summary(rows: list) -> tuple[float, float, float]:
    """(test at the best validation epoch, validation there, mean validation of the last 20 epochs)."""
    best = max(rows, key=lambda row: row[1])  # the first best epoch, as kd-edge keeps it
    return best[2], best[1], statistics.mean(row[1] for row in rows[-20:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=Path("runs/sharp-crops"))
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--cost", action="store_true", help="time a batch's augmentation both ways, and a step")
    args = parser.parse_args()
    if args.cost:
        show(cost(), args.markdown)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = {}
    for sharp, variant in enumerate(VARIANTS):
        for seed in args.seeds:
            path = args.work / f"{'sharp' if sharp else 'copy'}-seed{seed}.json"
            if not path.is_file():  # a finished run is kept
                started = time.perf_counter()
                rows = train(seed, args.data, bool(sharp))
                path.write_text(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
            results[variant, seed] = summary(json.loads(path.read_text())["rows"])
    lines = [
        "| aerial crops cut | test at the best validation epoch, per seed | mean +- std | validation there | "
        "validation, last 20 epochs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for variant in VARIANTS:
        tests, vals, lasts = ([100 * results[variant, seed][i] for seed in args.seeds] for i in range(3))
        lines.append(
            f"| {variant} | {', '.join(f'{v:.2f}' for v in tests)} | {statistics.mean(tests):.2f} +- "
            f"{statistics.stdev(tests):.2f} % | {statistics.mean(vals):.2f} % | {statistics.mean(lasts):.2f} % |"
        )
    seeds = " ".join(map(str, args.seeds))
    lines += ["", f"`.venv/bin/python benchmarks/sharp_crops.py --seeds {seeds}` (pooled-base alone, one thread)."]
    show(lines, args.markdown)


if __name__ == "__main__":
    main()

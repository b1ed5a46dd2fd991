"""Training and inference images/s of registry networks: kd-edge's training path against a plain PyTorch loop.

    .venv/bin/python benchmarks/training_speed.py [--models cnn-small,cnn-base,...] [--sizes 28,64,128]
        [--rounds 3] [--seconds 4] [--out benchmarks/results/training-speed.md]

For each (model, input size) it times, in alternating rounds within one process:

* ``plain``: the loop a user writes the obvious way: eager, NCHW float32 input already normalised in
  memory, ``torch.optim.AdamW``, default threads, ``model.train()``, batch 256;
* ``kd-edge``: ``kd_edge.training.fit.fit`` itself (uint8 data normalised on the fly, the layout,
  precision and optimiser kd-edge picks on this host), one epoch over synthetic images;

and the same for inference (``plain``: ``model.eval()`` under ``torch.no_grad`` over float batches;
``kd-edge``: ``predict_logits``, what evaluation and soft labels use). Images are random (speed does
not depend on their content); 1 channel at 28 px, 3 channels above, 10 classes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kd_edge.data.dataset import Split
from kd_edge.settings.training import OptimSettings
from kd_edge.training.batches import DeviceSplit, Normalizer
from kd_edge.training.device import build_seeded, resolve_precision, to_channels_last
from kd_edge.training.evaluate import predict_logits
from kd_edge.training.fit import FitPlan, cross_entropy_step, fit
from kd_edge.training.models import ModelSpec

BATCH = 256
CLASSES = 10


def synthetic_split(images: int, channels: int, size: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (images, channels, size, size), dtype=np.uint8)
    return Split(pixels, rng.integers(0, CLASSES, images).astype(np.int64))


def images_for(seconds: float, rate_guess: float) -> int:
    """Enough whole batches to run about ``seconds`` at ``rate_guess`` images/s (at least 2 batches)."""
    return max(2, round(seconds * rate_guess / BATCH)) * BATCH


def plain_train(spec: ModelSpec, split: Split) -> float:
    model = build_seeded(spec, 0)
    model.train()
    images = (torch.from_numpy(split.images).float() / 255 - 0.5) / 0.5
    labels = torch.from_numpy(split.labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = F.cross_entropy(model(images[:BATCH]), labels[:BATCH])  # warm-up step, not timed
    loss.backward()
    started = time.perf_counter()
    for start in range(0, len(labels), BATCH):
        loss = F.cross_entropy(model(images[start : start + BATCH]), labels[start : start + BATCH])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return len(labels) / (time.perf_counter() - started)


def kd_edge_train(spec: ModelSpec, split: Split, val: Split) -> float:
    device = torch.device("cpu")
    model = to_channels_last(build_seeded(spec, 0))
    normalize = Normalizer((0.5,) * spec.in_channels, (0.5,) * spec.in_channels, device)
    plan = FitPlan(
        model=model,
        train=DeviceSplit(split, device),
        val=DeviceSplit(val, device),
        normalize=normalize,
        epochs=1,
        optim=OptimSettings(batch_size=BATCH),
        step_fn=cross_entropy_step(normalize),
        stage="speed",
        seed=0,
        precision=resolve_precision("auto", device, (model,)),
    )
    return fit(plan).history[0].images_per_second


def plain_infer(spec: ModelSpec, split: Split) -> float:
    model = build_seeded(spec, 0).eval()
    images = (torch.from_numpy(split.images).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        model(images[:BATCH])
        started = time.perf_counter()
        for start in range(0, len(images), BATCH):
            model(images[start : start + BATCH])
    return len(images) / (time.perf_counter() - started)


def kd_edge_infer(spec: ModelSpec, split: Split) -> float:
    device = torch.device("cpu")
    model = to_channels_last(build_seeded(spec, 0))
    normalize = Normalizer((0.5,) * spec.in_channels, (0.5,) * spec.in_channels, device)
    data = DeviceSplit(split, device)
    precision = resolve_precision("auto", device)  # soft labels: the run's precision
    predict_logits(model, DeviceSplit(split.subset(np.arange(BATCH)), device), normalize, precision)
    started = time.perf_counter()
    predict_logits(model, data, normalize, precision)
    return len(data) / (time.perf_counter() - started)


def measure(spec: ModelSpec, rounds: int, seconds: float) -> dict:
    """Median images/s of each way over ``rounds`` alternating rounds, sized from a first short probe."""
    probe = synthetic_split(2 * BATCH, spec.in_channels, spec.image_size, 1)
    train_guess, infer_guess = plain_train(spec, probe), plain_infer(spec, probe)
    train_split = synthetic_split(images_for(seconds, train_guess), spec.in_channels, spec.image_size, 2)
    infer_split = synthetic_split(images_for(seconds, infer_guess), spec.in_channels, spec.image_size, 3)
    val = synthetic_split(BATCH, spec.in_channels, spec.image_size, 4)
    rates = {"train plain": [], "train kd-edge": [], "infer plain": [], "infer kd-edge": []}
    for _ in range(rounds):
        rates["train plain"].append(plain_train(spec, train_split))
        rates["train kd-edge"].append(kd_edge_train(spec, train_split, val))
        rates["infer plain"].append(plain_infer(spec, infer_split))
        rates["infer kd-edge"].append(kd_edge_infer(spec, infer_split))
    return {name: statistics.median(values) for name, values in rates.items()} | {"rounds": rates}


def render(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| model | input | train plain img/s | train kd-edge img/s | ratio | infer plain img/s | infer kd-edge img/s "
        "| ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        r = row["rates"]
        lines.append(
            f"| {row['model']} | {row['input']} | {r['train plain']:.0f} | {r['train kd-edge']:.0f} | "
            f"{r['train kd-edge'] / r['train plain']:.2f}x | {r['infer plain']:.0f} | {r['infer kd-edge']:.0f} | "
            f"{r['infer kd-edge'] / r['infer plain']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # ResNet-18 is left out by default: at 64 px one timed pass of two batches takes minutes on 2 cores.
    parser.add_argument("--models", default="cnn-small,cnn-base,mobilenet-v3-small")
    parser.add_argument("--sizes", default="28,64,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="about how long each timed pass runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training-speed.md"))
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for name in args.models.split(","):
            spec = ModelSpec(name, CLASSES, 1 if size == 28 else 3, size)
            rates = measure(spec, args.rounds, args.seconds)
            rows.append({"model": name, "input": f"{spec.in_channels}x{size}x{size}", "rates": rates})
            print(render(rows[-1:], "").splitlines()[-1], flush=True)
    header = (
        f"Median images/s of {args.rounds} alternating rounds, batch {BATCH}, on {platform.processor() or 'cpu'} "
        f"with {torch.get_num_threads()} threads, torch {torch.__version__}, kd-edge's precision "
        f"{resolve_precision('auto', torch.device('cpu'))} (float32 for networks with depthwise convolutions). "
        "`.venv/bin/python benchmarks/training_speed.py`"
    )
    args.out.write_text(render(rows, header))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

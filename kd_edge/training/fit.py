"""The training engine shared by every stage: data on the device, one fit loop, evaluation.

Data stays in memory as uint8 tensors; each batch is gathered by index and
normalised on the fly, so there are no per-sample PIL transforms and no workers.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kd_edge import interrupt
from kd_edge.training import distributed
from kd_edge.config import TrainConfig
from kd_edge.data.dataset import ImageDataset, Split
from kd_edge.errors import ConfigError, TrainingDivergedError, TrainingInterrupted
from kd_edge.training.progress import EpochLog, SilentProgress
from kd_edge.runtime.host import has_native_bf16

EVAL_BATCH_SIZE = 256  # fits in cache: 2-3x the throughput of batch 1000 on CPU
MAX_SHIFT = 2  # pixels, for --augment


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def keep_freed_memory() -> None:
    """Process-wide: stop glibc from returning each step's activations to the OS only to fault them in again.

    By default glibc serves blocks over its (adaptive) mmap threshold with fresh
    mmaps and trims the heap top on free; a training step allocates and frees
    tens of MB of activations, so every step paid for page faults. Raising both
    thresholds made a Fashion-MNIST teacher epoch about 20 % faster here
    (benchmarks/RESULTS.md). No effect and no harm where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's maximum on 64-bit
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` trains in bfloat16 where the hardware supports it natively, else in float32.

    Only the forward and backward passes run in bfloat16 (``torch.autocast``): weights,
    optimiser state and checkpoints stay float32, and accuracy is measured in float32.
    """
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if has_native_bf16() else "fp32"


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` intra-op threads (None: leave torch's choice), then restore."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None):
    """Run the block with torch's global RNG seeded to ``seed``, then put the caller's RNG state back.

    Library calls stay free of process-wide side effects, and every random draw of a
    stage (initial weights, dropout) depends on its own seed alone.
    """
    cuda = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def build_seeded(spec, seed: int) -> nn.Module:
    """Build ``spec``'s model with weights drawn from ``seed`` alone.

    Runs that differ only in their loss (distilled or alone, another temperature)
    therefore start from identical weights at the same seed: comparisons are paired.
    """
    with seeded(seed):
        return spec.build()


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def normalization(dataset: ImageDataset, kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a model sees its input through: the dataset's own, or 0.5/0.5."""
    if kind == "half":
        channels = dataset.input_shape[0]
        return (0.5,) * channels, (0.5,) * channels
    return dataset.mean, dataset.std


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store conv weights as NHWC. On CPU, oneDNN's max-pool and conv kernels run several
    times faster in this layout than in NCHW (see benchmarks/profile_training.py)."""
    return model.to(memory_format=torch.channels_last)


class Normalizer:
    """``(pixel / 255 - mean) / std`` on a uint8 batch, as the exported model's metadata describes it.

    The result is channels-last, the layout the models are kept in (``to_channels_last``).
    """

    def __init__(self, mean, std, device):
        mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() * self.scale - self.shift).contiguous(memory_format=torch.channels_last)


class DeviceSplit:
    """A split held on the device as uint8, served as shuffled batches of indices."""

    def __init__(self, split: Split, device: torch.device):
        self.images = torch.from_numpy(split.images).to(device)
        self.labels = torch.from_numpy(split.labels).to(device)

    def __len__(self) -> int:
        return len(self.labels)

    def shuffled_order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self), generator=generator).to(self.images.device)

    def batches(self, batch_size: int, order: torch.Tensor | None = None):
        """Yield (indices, uint8 images, labels).

        With an ``order`` (training: ``shuffled_order``) the last, smaller batch is
        dropped: every step then has the same shape, so oneDNN does not build kernels
        for an odd shape each epoch. Without one, every sample is served in turn.
        """
        training = order is not None
        order = order if training else torch.arange(len(self), device=self.images.device)
        n = len(order)
        end = max(n - n % batch_size, batch_size) if training else n
        for start in range(0, end, batch_size):
            index = order[start : start + batch_size]
            yield index, self.images[index], self.labels[index]


def random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels, filling with zeros."""
    n, c, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (n,), generator=generator).to(images.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


@torch.no_grad()
def predict_logits(
    model: nn.Module, split: DeviceSplit, normalize: Normalizer, precision: str = "fp32"
) -> torch.Tensor:
    """The model's float32 logits for every image of ``split``, in order. Under torchrun each rank computes
    its share of the images and all ranks receive the whole."""
    was_training = model.training
    model.eval()

    def compute(indices: torch.Tensor) -> torch.Tensor:
        with autocast(split.images.device, precision):
            if not len(indices):  # a rank with nothing to do still gives the right shape
                return model(normalize(split.images[:1])).float()[:0]
            return torch.cat([model(normalize(split.images[i])).float() for i in indices.split(EVAL_BATCH_SIZE)])

    logits = distributed.gather_rows(compute, len(split), split.images.device)
    model.train(was_training)
    return logits


def accuracy(model: nn.Module, split: DeviceSplit, normalize: Normalizer) -> float:
    return (predict_logits(model, split, normalize).argmax(1) == split.labels).float().mean().item()


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params, lr = model.parameters(), distributed.scaled_lr(config.lr, config.lr_scaling)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: TrainConfig, total_steps: int):
    """A per-step learning-rate schedule, or None for a constant rate."""
    if config.schedule == "onecycle":
        lr = distributed.scaled_lr(config.lr, config.lr_scaling)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


# A step function maps (model, indices, uint8 images, labels) to named loss terms;
# "loss" is what is minimised, "logits" the model's output, the rest is logged.
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], dict]


@dataclass
class FitResult:
    best_val_accuracy: float
    best_epoch: int
    history: list[EpochLog]
    seconds: float
    images_per_rank: list[int]  # training images each process saw (one entry without torchrun)


def check_finite(terms: dict, stage: str, epoch: int, step: int, last_saved: str | None) -> None:
    bad = [name for name, value in terms.items() if name != "logits" and not math.isfinite(value.item())]
    if not bad:
        return
    values = ", ".join(f"{name}={terms[name].item():.4g}" for name in terms if name != "logits")
    kept = (
        f"The last good checkpoint is kept at {last_saved}."
        if last_saved
        else "No checkpoint had been saved yet, so nothing was overwritten."
    )
    raise TrainingDivergedError(
        f"{stage} training diverged at epoch {epoch}, step {step}: the {' and '.join(bad)} term became "
        f"non-finite ({values}). {kept} Lower --lr, use --optimizer adamw, or lower --temperature, then run again."
    )


# Mid-epoch, the full training state is saved at most this often (and at every epoch's end),
# so that a killed run loses at most this much work.
STATE_INTERVAL_S = 60.0


def fit(
    model: nn.Module,
    train: DeviceSplit,
    val: DeviceSplit,
    normalize: Normalizer,
    config: TrainConfig,
    step_fn: StepFn,
    *,
    stage: str,
    seed: int,
    augment: bool = False,
    precision: str = "fp32",
    save_best: Callable[[nn.Module, dict], str] | None = None,
    progress=None,
    networks: list[nn.Module] | None = None,
    before_epoch: Callable[[int, int, list[float]], dict] | None = None,
    state_file=None,
    resume_from: dict | None = None,
    deterministic: bool = False,
) -> FitResult:
    """Train ``model`` for ``config.epochs`` and leave it holding its best-on-validation weights.

    After every epoch that improves validation accuracy, ``save_best(model, info)``
    writes a checkpoint, so a crash or divergence keeps the last good one. Data order,
    augmentation and dropout draw from ``seed`` alone.

    ``networks`` (default: ``[model]``) each get an optimiser and learning-rate schedule of
    their own, as the two networks of online distillation do. ``before_epoch(epoch, epochs,
    validation accuracies so far)`` sets what changes per epoch (a temperature schedule) and
    returns the values in force, which the epoch's log and progress line show.

    With ``state_file`` (a ``TrainingStateFile``) the full state (weights, optimisers,
    schedules, RNGs, position in the epoch, best so far) is saved at every epoch's end, every
    ``STATE_INTERVAL_S`` and when a signal asks training to stop; ``resume_from`` (a state
    it saved) continues from there exactly. ``deterministic`` makes torch refuse
    nondeterministic kernels.
    """
    progress = progress or SilentProgress()
    with seeded(seed, train.images.device), deterministic_algorithms(deterministic):
        loop = TrainingLoop(model, networks or [model], config, stage, seed, state_file, len(train))
        if resume_from is not None:
            loop.restore(resume_from)
        trained = distributed.wrap(model)  # under torchrun, DistributedDataParallel averages the gradients
        progress.start(stage, config.epochs, loop.steps_per_epoch)
        for epoch in range(loop.epoch, config.epochs + 1):
            loop.epoch = epoch
            values = before_epoch(epoch, config.epochs, loop.val_history()) if before_epoch else {}
            step = OptimizerStep(
                trained, loop.optimizers, loop.schedulers, step_fn, precision, stage, epoch, loop.last_saved
            )
            means, train_accuracy, seen, seconds = train_epoch(step, train, config.batch_size, augment, progress, loop)
            val_accuracy = accuracy(model, val, normalize)
            log = EpochLog(
                stage, epoch, config.epochs, means.pop("loss"), train_accuracy, val_accuracy, seen / seconds, seconds,
                means, values,
            )  # fmt: skip
            loop.history.append(log)
            if val_accuracy > loop.best_val_accuracy:
                loop.best_val_accuracy, loop.best_epoch = val_accuracy, epoch
                loop.best_state = copy.deepcopy(model.state_dict())
                if save_best is not None:
                    loop.last_saved = save_best(model, {"epoch": epoch, "val_accuracy": val_accuracy})
            loop.epoch_finished()
            progress.epoch_done(log)
    model.load_state_dict(loop.best_state)
    images = distributed.per_rank(sum(round(log.images_per_second * log.seconds) for log in loop.history))
    return FitResult(loop.best_val_accuracy, loop.best_epoch, loop.history, loop.elapsed(), images)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool):
    """Within the block, torch refuses kernels whose results can differ between runs (when enabled)."""
    before = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


class TrainingLoop:
    """The state of one ``fit``: optimisers, schedules, RNGs, position, the best so far; saved and restored whole.

    Where an epoch stands is (its data order, drawn from the generator's state at the epoch's
    start; the steps done; the generator's state now, which augmentation draws from), so a
    resumed epoch sees the same batches and the same shifts as an uninterrupted one.
    """

    def __init__(self, model, networks, config: TrainConfig, stage: str, seed: int, state_file, train_size: int):
        self.model, self.config, self.stage, self.state_file = model, config, stage, state_file
        self.generator = torch.Generator().manual_seed(seed)
        self.world_size = distributed.world()[1]
        self.steps_per_epoch = max(train_size // (config.batch_size * self.world_size), 1)
        self.optimizers = [make_optimizer(network, config) for network in networks]
        self.schedulers = [make_scheduler(o, config, config.epochs * self.steps_per_epoch) for o in self.optimizers]
        self.epoch, self.steps_done, self.totals = 1, 0, None
        self.epoch_generator_state = self.generator.get_state()
        self.best_val_accuracy, self.best_epoch, self.best_state, self.last_saved = -1.0, 0, None, None
        self.history: list[EpochLog] = []
        self.seconds_before, self.started = 0.0, time.perf_counter()
        self.last_state_save = time.perf_counter()

    def val_history(self) -> list[float]:
        return [log.val_accuracy for log in self.history]

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def state(self) -> dict:
        return {
            "stage": self.stage,
            "world_size": self.world_size,
            "epoch": self.epoch,
            "steps_done": self.steps_done,
            "totals": self.totals,
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() if s is not None else None for s in self.schedulers],
            "epoch_generator_state": self.epoch_generator_state,
            "generator_state": self.generator.get_state(),
            "torch_rng_state": torch.get_rng_state(),
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "last_saved": self.last_saved,
            "history": [dataclasses.asdict(log) for log in self.history],
            "seconds": self.elapsed(),
        }

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        self.epoch, self.steps_done, self.totals = state["epoch"], state["steps_done"], state["totals"]
        saved_world = state.get("world_size", 1)
        if saved_world == self.world_size:
            for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
                if scheduler is not None:
                    scheduler.load_state_dict(saved)
        else:  # another number of processes: the same images done, counted in this run's steps
            self.steps_done = self.steps_done * saved_world // self.world_size
            for scheduler in self.schedulers:
                for _ in range((self.epoch - 1) * self.steps_per_epoch + self.steps_done) if scheduler else ():
                    scheduler.step()
        self.epoch_generator_state = state["epoch_generator_state"]
        self.resume_generator_state = state["generator_state"]
        torch.set_rng_state(state["torch_rng_state"])
        self.best_val_accuracy, self.best_epoch = state["best_val_accuracy"], state["best_epoch"]
        self.best_state, self.last_saved = state["best_state"], state["last_saved"]
        self.history = [EpochLog(**log) for log in state["history"]]
        self.seconds_before = state["seconds"]

    def save(self) -> None:
        if self.state_file is not None and distributed.is_main():
            self.state_file.save(self.state())
            self.last_state_save = time.perf_counter()

    def after_step(self, steps_done: int, totals: dict) -> None:
        """Save the state when a signal asks to stop (then stop) or when the last save is old."""
        self.steps_done, self.totals = steps_done, totals
        signum = distributed.any_rank(interrupt.requested())  # every rank stops at the same step
        if signum is None and time.perf_counter() - self.last_state_save < STATE_INTERVAL_S:
            return
        self.save()
        if signum is not None:
            where = (
                f"the state is saved in {self.state_file.path}" if self.state_file else "no state file was asked for"
            )
            raise TrainingInterrupted(
                f"{self.stage} training stopped by {signal_name(signum)} at epoch {self.epoch}, step {steps_done}; "
                f"{where}. Run the same command with --resume to continue from there.",
                signum,
            )

    def epoch_finished(self) -> None:
        self.epoch += 1
        self.steps_done, self.totals = 0, None
        self.epoch_generator_state = self.generator.get_state()
        self.save()


def signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


@dataclass
class OptimizerStep:
    """One optimiser step of one epoch: forward through ``step_fn``, check, backward, update."""

    model: nn.Module
    optimizers: list[torch.optim.Optimizer]
    schedulers: list
    step_fn: StepFn
    precision: str
    stage: str
    epoch: int
    last_saved: str | None

    def __call__(self, number: int, index, images, labels) -> dict:
        with autocast(images.device, self.precision):
            terms = self.step_fn(self.model, index, images, labels)
        check_finite(terms, self.stage, self.epoch, number, self.last_saved)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        for optimizer, scheduler in zip(self.optimizers, self.schedulers, strict=True):
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        return terms


def train_epoch(
    step: OptimizerStep, train: DeviceSplit, batch_size: int, augment: bool, progress, loop: TrainingLoop
) -> tuple[dict, float, int, float]:
    """One pass over the shuffled train split, from where ``loop`` stands in it.

    Returns (mean of each loss term, train accuracy, images seen, seconds), counting the part
    of the epoch done before a resume.
    """
    step.model.train()
    started = time.perf_counter()
    generator = loop.generator
    generator.set_state(loop.epoch_generator_state)
    order = distributed.shard(train.shuffled_order(generator), batch_size)  # this rank's images of the epoch
    if loop.steps_done:  # resuming mid-epoch: the same order, and augmentation draws continue where they stopped
        generator.set_state(loop.resume_generator_state)
    totals = loop.totals or {"sums": {}, "correct": 0, "seen": 0, "seconds": 0.0}
    sums = totals["sums"]
    for number, (index, images, labels) in enumerate(train.batches(batch_size, order), start=1):
        if number <= loop.steps_done:
            continue
        if augment:
            images = random_shift(images, generator)
        terms = step(number, index, images, labels)
        totals["seen"] += len(labels)
        totals["correct"] += (terms["logits"].argmax(1) == labels).sum().item()
        for name, value in terms.items():
            if name != "logits":
                sums[name] = sums.get(name, 0.0) + value.item() * len(labels)
        progress.step(terms["loss"].item(), totals["seen"] / (time.perf_counter() - started + totals["seconds"]))
        loop.after_step(number, {**totals, "seconds": totals["seconds"] + time.perf_counter() - started})
    seen, seconds = totals["seen"], totals["seconds"] + time.perf_counter() - started
    return {name: total / seen for name, total in sums.items()}, totals["correct"] / seen, seen, seconds


def cross_entropy_step(normalize: Normalizer) -> StepFn:
    """The step function of plain supervised training."""

    def step(model, index, images, labels) -> dict:
        logits = model(normalize(images))
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    return step


def chance_threshold(labels: np.ndarray) -> tuple[float, float]:
    """(chance accuracy, the accuracy a guesser exceeds only 0.1 % of the time).

    Chance is always predicting the most frequent class; the threshold adds three
    binomial standard deviations for a split of this size.
    """
    chance = np.bincount(labels).max() / len(labels)
    return float(chance), float(chance + 3 * math.sqrt(chance * (1 - chance) / len(labels)))

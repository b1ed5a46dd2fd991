"""The dataset of a training run on its device, shared by teacher and student, and how each network sees it."""

from __future__ import annotations

import time

from kd_edge.data import DataRef, ImageDataset, load_data
from kd_edge.errors import ConfigError
from kd_edge.io import atomic_write_json
from kd_edge.log import step
from kd_edge.runtime.card import ModelCard
from kd_edge.settings.data import FOLDER_RESIZE, DataSettings
from kd_edge.settings.training import RunSettings
from kd_edge.training.batches import DeviceSplit, Normalizer
from kd_edge.training.device import resolve_device, resolve_precision
from kd_edge.training.distributed import is_main, world
from kd_edge.training.models import ModelSpec
from kd_edge.training.run_folder import RunFolder

SPLIT_FILE = "split.json"  # a folder dataset's files per split, in the run folder


class DeviceDataset:
    """The dataset's three splits on the training device, shared by teacher and student."""

    def __init__(self, dataset: ImageDataset, ref: DataRef, device, precision: str):
        self.dataset = dataset
        self.ref = ref
        self.device = device
        self.precision_setting = precision  # --precision as given
        self.train = DeviceSplit(dataset.train, device, dataset.train_sources)
        self.val, self.test = DeviceSplit(dataset.val, device), DeviceSplit(dataset.test, device)

    @property
    def precision(self) -> str:
        """The run's precision, before any network is known: what soft labels are computed in."""
        return self.precision_for(())

    def precision_for(self, models) -> str:
        """The precision ``models`` train in (``resolve_precision``: on a CPU, ``auto`` trains networks with
        depthwise convolutions in float32). Soft labels are computed in the run's ``precision``: there bf16
        was the faster for those networks too."""
        return resolve_precision(self.precision_setting, self.device, tuple(models))

    def images_per_process(self) -> int:
        """Training images each process takes an epoch (all of them, outside torchrun): what a step budget
        counts in, so that N processes plan as many optimiser steps as one."""
        return len(self.train) // world()[1]

    def spec(self, model_name: str) -> ModelSpec:
        channels, size, _ = self.dataset.input_shape
        return ModelSpec(model_name, self.dataset.num_classes, channels, size)


class InputView:
    """How one network sees the data: its normalisation, and the model card its checkpoint carries."""

    def __init__(self, splits: DeviceDataset, mean, std):
        self.normalize = Normalizer(mean, std, splits.device)
        dataset = splits.dataset
        self.card = ModelCard(
            classes=dataset.classes, input_shape=dataset.input_shape, mean=mean, std=std, data=splits.ref,
            resize=FOLDER_RESIZE,
        )  # fmt: skip


def load_splits(run: RunSettings, data: DataSettings) -> tuple[DeviceDataset, float]:
    """The dataset on the run's device (and how long loading took); bad data fails here, before any output."""
    started = time.perf_counter()
    ref = DataRef(dataset=data.dataset, data_dir=data.data_dir, image_size=data.image_size, **data.folder_options)
    dataset = load_data(ref, download=True, train_sources="aerial" in data.augment)  # what aerial crops cut from
    device = resolve_device(run.device)
    splits = DeviceDataset(dataset, ref, device, run.precision)
    return splits, time.perf_counter() - started


def record_data(run: RunFolder, splits: DeviceDataset, seconds: float) -> None:
    """metrics.json's data section, and for a folder the files of each split (split.json); a resume on other
    data (a folder with an image more or less: another split) is refused."""
    sizes = {name: len(getattr(splits, name)) for name in ("train", "val", "test")}
    info = {
        "dataset": splits.dataset.name,
        **sizes,
        "input_shape": list(splits.dataset.input_shape),
        "device": str(splits.device),
        "precision": splits.precision,
        "sha256": splits.dataset.sha256(),
    }
    before = run.metrics.get("data", {}).get("sha256")
    if run.resuming and before not in (None, info["sha256"]):
        folder = f"; a folder with an image added, removed or changed is split anew (then: {SPLIT_FILE})"
        raise ConfigError(
            f"cannot resume {str(run.dir)!r}: its data has changed since the run started (SHA-256 {before[:12]}... "
            f"then, {info['sha256'][:12]}... now{folder if splits.dataset.files is not None else ''}). Resume with "
            "the same data, or start anew with --force."
        )
    files = splits.dataset.files
    if files is not None and is_main():
        atomic_write_json(run.dir / SPLIT_FILE, {"dataset": splits.dataset.name, **files})
        info["files"] = SPLIT_FILE
        if files.get("skipped"):
            step(f"data: {len(files['skipped'])} unreadable image(s) left out (--bad-images skip), listed in "
                 f"{run.dir / SPLIT_FILE}")  # fmt: skip
    run.record("data", info, seconds)

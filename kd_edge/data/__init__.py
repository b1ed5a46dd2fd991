"""Datasets as in-memory uint8 arrays plus the metadata a deployed model needs.

Every dataset has three splits: ``train`` for fitting, ``val`` for model selection
(and, later, calibration) and ``test`` for reporting only. Where a source has no
validation split, a fixed, class-stratified one is carved from its training split.

This module needs only numpy, so the torch-free runtime can use it too.

    >>> ds = load_dataset("mnist-5k")
    >>> ds.train.images.shape, ds.input_shape
    ((4000, 1, 28, 28), (1, 28, 28))
"""

from __future__ import annotations

import os
from pathlib import Path

from kd_edge.data import folders, sources
from kd_edge.data.dataset import ImageDataset, Split, carve_validation, channel_stats, stratified_split
from kd_edge.data.ref import DataRef
from kd_edge.errors import DatasetError
from kd_edge.settings.data import DataSettings

__all__ = [
    "DataRef",
    "ImageDataset",
    "Split",
    "carve_validation",
    "channel_stats",
    "list_datasets",
    "load_data",
    "load_dataset",
    "stratified_split",
]

DATA_ENV_VAR = "KD_EDGE_DATA"


def data_roots(data_dir: str | Path | None) -> list[Path]:
    """Folders searched for dataset files: ``--data-dir``, then ``$KD_EDGE_DATA``."""
    roots = [data_dir, os.environ.get(DATA_ENV_VAR)]
    return [Path(root).expanduser() for root in roots if root]


# Registry of dataset names; `folder:PATH` and `npz:PATH` are parsed separately.
DATASETS = {
    "mnist-5k": "built in: 5,000 MNIST digits, 4,000 train / 500 val / 500 test",
    "mnist": "MNIST IDX files from --data-dir or $KD_EDGE_DATA (downloaded if missing and online)",
    "fashion-mnist": "Fashion-MNIST IDX files (also Debian's dataset-fashion-mnist)",
    "cifar10": "CIFAR-10, python or binary version, from --data-dir or $KD_EDGE_DATA",
    "folder:PATH": "a class-folder tree PATH/<class>/* (split here, --split), or PATH/train/<class>/* with val/, test/",
    "npz:PATH": "an .npz file with `images` (N,H,W) or (N,C,H,W) uint8 and `labels`; optional `classes`",
    "yolo:PATH": "frames with YOLO boxes, for `kd-edge detect` (and pipeline): PATH/images/, PATH/labels/ and "
    "classes.txt, or an Ultralytics or Roboflow export (data.yaml, train/, valid/, test/)",
}


def list_datasets() -> dict[str, str]:
    return dict(DATASETS)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    download: bool = True,
    split: tuple[float, float, float] | None = None,
    bad_images: str | None = None,
    channels: int | None = None,
    train_sources: bool = False,
) -> ImageDataset:
    """Load a dataset by name into memory.

    Args:
        name: one of ``list_datasets()``; ``folder:PATH`` and ``npz:PATH`` take a path.
        data_dir: where to look for (and download) files; defaults to ``$KD_EDGE_DATA``.
        image_size: side length to resize ``folder:`` images to (None: ``folders.surveyed`` chooses).
        download: let torchvision download a missing public dataset when the network allows.
        split: fractions train, val, test of a plain class-folder tree (None: ``DataSettings``'s default).
        bad_images: a ``folder:`` image that cannot be read: "refuse" or "skip" (None: ``DataSettings``'s).
        channels: read ``folder:`` images as 1 (grey) or 3 (RGB) channels (None: grey if every image is).
        train_sources: for training, a ``folder:``'s train split at a larger size too (``folders.with_sources``).
    """
    if name == "mnist-5k":
        return sources.load_builtin_mnist_5k()
    if name in ("mnist", "fashion-mnist"):
        return sources.load_idx_dataset(name, data_roots(data_dir), download)
    if name == "cifar10":
        return sources.load_cifar10(data_roots(data_dir), download)
    if name.startswith("folder:"):
        defaults = DataSettings()  # the owner of --split's and --bad-images' defaults
        root = Path(name.removeprefix("folder:")).expanduser()
        reading = folders.Reading(
            image_size, channels, split or defaults.split, bad_images or defaults.bad_images, train_sources
        )
        return folders.load_image_folder(root, reading)
    if name.startswith("npz:"):
        return sources.load_npz_dataset(Path(name.removeprefix("npz:")).expanduser())
    if name.startswith("yolo:"):
        raise DatasetError(
            f"{name!r} is detection data (boxes, not one class an image): train a detector on it with `kd-edge detect "
            f"--dataset {name}`; this command classifies (folder:, npz: and the built-in datasets)"
        )
    raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def load_data(
    ref: DataRef, data_dir: str | Path | None = None, download: bool = False, train_sources: bool = False
) -> ImageDataset:
    """The dataset a model was (or is to be) trained on, from its ``DataRef``; downloads only when asked.

    ``data_dir`` overrides the folder the training run read (the files may have moved).
    Later stages (export, quantize, QAT, bench) all resolve a model's data through here,
    so that a ``folder:`` dataset comes back at the size, channels and split it was trained on. Training asks
    for ``train_sources`` (the train split at a larger size, for crops); later stages need none.
    """
    return load_dataset(
        ref.dataset,
        data_dir or ref.data_dir,
        ref.image_size,
        download=download,
        split=ref.split,
        bad_images=ref.bad_images,
        channels=ref.channels,
        train_sources=train_sources,
    )

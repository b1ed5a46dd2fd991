"""Readers for each dataset source. Each returns an ImageDataset of uint8 arrays.

The IDX, CIFAR-binary and npz readers are a few lines of numpy each: that keeps
this module torch-free and reads `.gz` files without unpacking them to disk.
torchvision is used only to download, and to read CIFAR-10's pickled python
version (it checks the files' MD5 before unpickling them).
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from kd_edge.data.dataset import (
    ImageDataset,
    Split,
    carve_validation,
    channel_stats,
    checked_three_way_split,
)
from kd_edge.errors import DatasetError

BUILTIN_MNIST_5K = Path(__file__).with_name("mnist-5k.npz")
OFFLINE_ENV_VAR = "KD_EDGE_OFFLINE"
DEFAULT_DOWNLOAD_ROOT = Path("~/.cache/kd-edge").expanduser()

DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Sub-folders of a data root where each dataset's IDX files may sit:
# our own name, torchvision's layout, and Debian's package layout.
IDX_SUBFOLDERS = {
    "mnist": ["mnist", "MNIST/raw"],
    "fashion-mnist": ["fashion-mnist", "FashionMNIST/raw"],
}
SYSTEM_ROOTS = {"fashion-mnist": [Path("/usr/share/datasets")]}
TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def make_dataset(
    name, classes, train: Split, test: Split, val: Split | None = None, mean=None, std=None
) -> ImageDataset:
    """Assemble a dataset, carving validation from train when there is none."""
    if val is None:
        train, val = carve_validation(train)
    if mean is None:
        mean, std = channel_stats(train.images)
    return ImageDataset(name=name, classes=tuple(classes), train=train, val=val, test=test, mean=mean, std=std)


def split_pool(name, classes, images: np.ndarray, labels: np.ndarray) -> ImageDataset:
    """Split one labelled pool 80/10/10 into train/val/test, stratified by class."""
    pool = Split(images, labels)
    indices = checked_three_way_split(labels, (0.8, 0.1, 0.1), classes, name)
    parts = {split: pool.subset(chosen) for split, chosen in indices.items()}
    return make_dataset(name, classes, parts["train"], parts["test"], parts["val"])


def as_nchw(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DatasetError(
            f"expected uint8 images of shape (N, H, W) or (N, C, H, W), got {images.dtype} {images.shape}"
        )
    return np.ascontiguousarray(images)


# --- npz (the built-in dataset is one) -------------------------------------------------


def load_npz_dataset(path: Path, name: str | None = None, classes=None) -> ImageDataset:
    if not path.is_file():
        raise DatasetError(
            f"npz dataset {str(path)!r} does not exist; give the path of an .npz file with `images` and `labels`"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, AttributeError, TypeError) as exc:
        raise DatasetError(
            f"cannot read {str(path)!r} as an .npz archive ({exc}); is it a complete numpy .npz file?"
        ) from exc
    missing = {"images", "labels"} - arrays.keys()
    if missing:
        raise DatasetError(
            f"{str(path)!r} lacks the arrays {sorted(missing)}; it must hold `images` (uint8) and `labels` (integers)"
        )
    images, labels = as_nchw(arrays["images"]), arrays["labels"]
    if labels.ndim != 1 or labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{str(path)!r}: labels must be a 1-D array of integers, got {labels.dtype} {labels.shape}")
    if len(labels) != len(images) or not len(labels):
        raise DatasetError(f"{str(path)!r} holds {len(images)} images and {len(labels)} labels; it needs one per image")
    labels = labels.astype(np.int64)
    negative = np.flatnonzero(labels < 0)
    if len(negative):
        raise DatasetError(
            f"{str(path)!r}: {len(negative)} labels are negative (first at indices {negative[:5].tolist()}); labels "
            "are class indices 0, 1, ..."
        )
    if classes is None:
        names = arrays.get("classes")
        if names is not None and names.ndim != 1:
            raise DatasetError(f"{str(path)!r}: `classes` must be a 1-D array of names, got shape {names.shape}")
        classes = [str(c) for c in names] if names is not None else [str(c) for c in range(int(labels.max()) + 1)]
    return split_pool(name or f"npz:{path}", classes, images, labels)


def load_builtin_mnist_5k() -> ImageDataset:
    return load_npz_dataset(BUILTIN_MNIST_5K, name="mnist-5k", classes=DIGITS)


# --- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {str(path)!r} ({exc}); the file is damaged: download it again") from exc
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] == 0:
        raise DatasetError(f"{str(path)!r} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DatasetError(f"{str(path)!r} is truncated: its header promises {ndim} dimensions")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if 0 in dims:  # an empty array; numpy would still refuse the shape if its other sides overflow
        raise DatasetError(f"{str(path)!r} holds no data: its header says {dims}")
    if len(raw) - offset != math.prod(dims):  # Python integers: no overflow, whatever the header claims
        raise DatasetError(
            f"{str(path)!r} is truncated: header says {dims}, file has {len(raw) - offset} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims).copy()  # writable, as torch wants


def idx_search_folders(name: str, roots: list[Path]) -> list[Path]:
    """Every folder searched for `name`'s IDX files, in order."""
    return [
        folder
        for root in [*roots, *SYSTEM_ROOTS.get(name, []), DEFAULT_DOWNLOAD_ROOT]
        for folder in [root, *(root / sub for sub in IDX_SUBFOLDERS[name])]
    ]


def find_idx_folder(name: str, roots: list[Path]) -> Path | None:
    """The first folder that holds all four IDX files of `name`, plain or gzipped."""
    for folder in idx_search_folders(name, roots):
        if all(idx_file(folder, base) for base in IDX_FILES.values()):
            return folder
    return None


def idx_file(folder: Path, base: str) -> Path | None:
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_dataset(name: str, roots: list[Path], download: bool) -> ImageDataset:
    folder = find_idx_folder(name, roots)
    if folder is None and download and not os.environ.get(OFFLINE_ENV_VAR):
        folder = download_with_torchvision(name, roots[0] if roots else DEFAULT_DOWNLOAD_ROOT)
    if folder is None:
        raise missing_idx_error(name, roots)
    arrays = {key: read_idx(idx_file(folder, base)) for key, base in IDX_FILES.items()}
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGITS
    train = Split(as_nchw(arrays["train_images"]), arrays["train_labels"].astype(np.int64))
    test = Split(as_nchw(arrays["test_images"]), arrays["test_labels"].astype(np.int64))
    return make_dataset(name, classes, train, test)


def download_with_torchvision(name: str, root: Path) -> Path | None:
    """Let torchvision fetch the raw files into a temporary folder, moved under ``root`` only when
    complete; None (and nothing left behind) when offline or torchvision is missing."""
    import shutil
    import tempfile

    try:
        import torchvision.datasets as tvd
    except ImportError:
        return None
    dataset_class = getattr(tvd, TORCHVISION_CLASS[name])
    with tempfile.TemporaryDirectory(prefix="kd-edge-download-") as scratch:
        try:
            for train in (True, False):
                dataset_class(root=scratch, train=train, download=True)
        except Exception:  # no network: torchvision raises URLError, RuntimeError or OSError
            return None
        target = root / TORCHVISION_CLASS[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(scratch) / TORCHVISION_CLASS[name]), str(target))
    return find_idx_folder(name, [root])


def missing_idx_error(name: str, roots: list[Path]) -> DatasetError:
    searched = ", ".join(str(folder) for folder in idx_search_folders(name, roots))
    files = ", ".join(f"{base}[.gz]" for base in IDX_FILES.values())
    hint = ""
    if name == "fashion-mnist":
        hint = " On Debian or Ubuntu, `apt-get install dataset-fashion-mnist` puts them where kd-edge looks."
    download = (
        "downloading is off ($KD_EDGE_OFFLINE)" if os.environ.get(OFFLINE_ENV_VAR) else "they could not be downloaded"
    )
    return DatasetError(
        f"the {name} files were not found, and {download}. Put {files} into a folder and pass it with --data-dir "
        f"(or set $KD_EDGE_DATA); the files may also sit in its sub-folder {' or '.join(IDX_SUBFOLDERS[name])}. "
        f"Searched: {searched}.{hint}"
    )


# --- CIFAR-10 -----------------------------------------------------------------------------

CIFAR_BIN_RECORD = 1 + 3 * 32 * 32


def read_cifar_bin(paths: list[Path]) -> Split:
    records = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths])
    if len(records) % CIFAR_BIN_RECORD:
        raise DatasetError(f"CIFAR-10 binary files in {str(paths[0].parent)!r} are truncated; download them again")
    records = records.reshape(-1, CIFAR_BIN_RECORD)
    return Split(np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32)), records[:, 0].astype(np.int64))


def load_cifar10(roots: list[Path], download: bool) -> ImageDataset:
    for root in [*roots, DEFAULT_DOWNLOAD_ROOT]:
        binary = root / "cifar-10-batches-bin"
        if (binary / "test_batch.bin").is_file():
            train = read_cifar_bin([binary / f"data_batch_{i}.bin" for i in range(1, 6)])
            return make_dataset("cifar10", CIFAR10_CLASSES, train, read_cifar_bin([binary / "test_batch.bin"]))
        if (root / "cifar-10-batches-py").is_dir() or (download and not os.environ.get(OFFLINE_ENV_VAR)):
            dataset = load_cifar10_torchvision(root, download)
            if dataset is not None:
                return dataset
    searched = ", ".join(str(r) for r in roots) or "(none given)"
    raise DatasetError(
        "CIFAR-10 was not found and could not be downloaded. Unpack cifar-10-python.tar.gz "
        "(folder cifar-10-batches-py) or cifar-10-binary.tar.gz (folder cifar-10-batches-bin) "
        f"into a folder and pass it with --data-dir or $KD_EDGE_DATA. Searched: {searched}."
    )


def load_cifar10_torchvision(root: Path, download: bool) -> ImageDataset | None:
    try:
        from torchvision.datasets import CIFAR10

        splits = [CIFAR10(root=str(root), train=train, download=download) for train in (True, False)]
    except ImportError:
        return None
    except Exception:  # missing, corrupt (MD5 mismatch) or offline
        return None
    train, test = (
        Split(np.ascontiguousarray(s.data.transpose(0, 3, 1, 2)), np.asarray(s.targets, dtype=np.int64)) for s in splits
    )
    return make_dataset("cifar10", CIFAR10_CLASSES, train, test)

"""Image folders, as users have them, decoded once.

    root/<class>/*.jpg                      a plain class-folder tree (torchvision's ImageFolder, Keras'
                                            image_dataset_from_directory; sub-folders of a class are read
                                            too): split here, per class, seeded
    root/train/<class>/*, root/val/..., root/test/...
                                            splits as given (validation carved from train/ when absent)

The split of a plain tree depends only on the files' names and ``split`` (fractions train, val,
test): the same folder gives the same split on every machine and in every run, and the training
run writes the file lists to its run folder. Decoding (JPEG, PNG..., resizing) happens once per
folder content, size and colour mode: the arrays are cached under ``~/.cache/kd-edge/folders``,
keyed by every file's path and bytes, so a second command on the same folder loads in seconds.
An image that cannot be decoded is named with its reason: the load stops (``bad_images="refuse"``)
or leaves it out and lists it (``"skip"``). For training (``Reading.sources``), where the photos are
larger than the model's input, the train split is read a second time at up to twice the side: the
copy the aerial augmentation cuts its crops from.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kd_edge.data.dataset import ImageDataset, Split, carve_validation, channel_stats, checked_three_way_split
from kd_edge.data.pixels import model_pixels  # the very function `kd-edge predict` reads images with
from kd_edge.errors import DatasetError
from kd_edge.settings.data import FOLDER_RESIZE, default_side

GREY_MODES = ("1", "L", "LA", "I;16", "I")
SOURCES_SCALE = 2  # the train split's copy for crops: up to this times the model's side
SOURCES_MAX_BYTES = 1 << 30  # and only while it fits in this much memory
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name (none where it is not a folder)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def images_in(folder: Path) -> list[Path]:
    """``image_files``, where a folder of folders of images (a class-folder tree) is refused with what to give
    instead: predicting reads a folder's own images, not its subfolders'."""
    files = image_files(folder)
    subfolders = [] if files else sorted(p.name for p in folder.iterdir() if p.is_dir())
    if subfolders:
        shown = ", ".join(subfolders[:4]) + (", ..." if len(subfolders) > 4 else "")
        raise DatasetError(
            f"{str(folder)!r} holds folders ({shown}) rather than images: give those folders (for example "
            f"{folder / subfolders[0]}); a folder's own images are read, not its subfolders'"
        )
    return files


@dataclass(frozen=True)
class Reading:
    """How a folder's images are read: resized to ``image_size`` squares, as ``channels`` 1 or 3 (``surveyed``
    chooses both where they are None), a plain tree cut at ``split``, unreadable files refused or skipped
    (``bad_images``); with ``sources``, the train split at a larger size too (``with_sources``)."""

    image_size: int | None
    channels: int | None
    split: tuple
    bad_images: str
    sources: bool = False


def load_image_folder(root: Path, reading: Reading) -> ImageDataset:
    """The dataset of ``root``, a plain class-folder tree or train/ (and val/, test/) sub-folders."""
    if not root.is_dir():
        raise DatasetError(f"folder dataset {str(root)!r} is not a folder; give a folder with one folder per class")
    if (root / "train").is_dir():
        return load_split_layout(root, reading)
    return load_plain_tree(root, reading)


def load_plain_tree(root: Path, reading: Reading) -> ImageDataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"{str(root)!r} has no class sub-folders: put each class's images in {root}/<class>/ (or use "
            "train/<class>/, val/<class>/ and test/<class>/ sub-folders)"
        )
    if len(classes) < 2:
        raise DatasetError(
            f"{str(root)!r} has one class folder ({classes[0]!r}): a classifier needs two or more, each class's "
            "images in a folder of its own"
        )
    items = list_images(root, classes)
    require_every_class(items, classes, root)
    decoded = decode_cached(root, items, reading)
    parts = checked_three_way_split(decoded.split.labels, reading.split, classes, repr(str(root)))
    splits = {name: decoded.split.subset(indices) for name, indices in parts.items()}
    files = {name: [decoded.files[i] for i in indices] for name, indices in parts.items()}
    dataset = assemble(root, classes, splits, {**files, "skipped": decoded.skipped})
    return with_sources(root, reading, dataset, decoded.sides)


def load_split_layout(root: Path, reading: Reading) -> ImageDataset:
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"{str(root / 'train')!r} has no class sub-folders; put each class's images in train/<class>/"
        )
    names = [name for name in ("train", "val", "test") if (root / name).is_dir()]
    if names == ["train"]:
        raise DatasetError(
            f"folder dataset {str(root)!r} has train/ but no val/ or test/ next to it; add one, or move the class "
            "folders up into the folder itself to have it split for you"
        )
    listed = {name: list_images(root / name, classes, root) for name in names}
    require_every_class(listed["train"], classes, root / "train")
    every_file = [item for items in listed.values() for item in items]
    decoded = by_split(decode_cached(root, every_file, reading), listed)  # one size and colour for all splits
    splits = {name: d.split for name, d in decoded.items()}
    files = {name: d.files for name, d in decoded.items()}
    files["skipped"] = [bad for d in decoded.values() for bad in d.skipped]
    if "test" not in splits:  # val/ is then the reported split; selection gets its own, carved from train/
        splits["test"], files["test"] = splits.pop("val"), files.pop("val")
    if "val" not in splits:
        splits["train"], splits["val"] = carve_validation(splits["train"])
        files.pop("train")  # the carve is by index: the file lists of train and val are not recorded
    dataset = assemble(root, classes, splits, files)
    return with_sources(root, reading, dataset, np.concatenate([d.sides for d in decoded.values()]))


def assemble(root: Path, classes: list[str], splits: dict, files: dict) -> ImageDataset:
    mean, std = channel_stats(splits["train"].images)
    return ImageDataset(
        name=f"folder:{root}",
        classes=tuple(classes),
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        mean=mean,
        std=std,
        files=files,
    )


def with_sources(root: Path, reading: Reading, dataset: ImageDataset, sides: np.ndarray) -> ImageDataset:
    """``dataset`` with its train split read again at up to ``SOURCES_SCALE`` times the side, where ``reading``
    asks for it and the photos are larger than the model's input (their median shorter side, ``sides``), and the
    copy fits in ``SOURCES_MAX_BYTES``. The same files in the same order: the same reading at another size."""
    channels, side, _ = dataset.input_shape
    larger = min(SOURCES_SCALE * side, int(np.median(sides))) if len(sides) else side
    if not reading.sources or larger <= side or len(dataset.train) * channels * larger**2 > SOURCES_MAX_BYTES:
        return dataset
    again = load_image_folder(root, replace(reading, image_size=larger, channels=channels, sources=False))
    if not np.array_equal(again.train.labels, dataset.train.labels):  # cannot happen unless the folder changed
        raise DatasetError(f"{str(root)!r} changed while it was read; run the command again")
    return replace(dataset, train_sources=again.train)


def list_images(folder: Path, classes: list[str], relative_to: Path | None = None) -> list[tuple[str, int]]:
    """(path relative to the dataset's root, class index) of every image, in a fixed order."""
    base = relative_to or folder
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub.name not in classes:
            raise DatasetError(f"{str(sub)!r} is a class that train/ does not have; train/ has {classes}")
        label = classes.index(sub.name)
        images = sorted(f for f in sub.rglob("*") if is_image_file(f, sub))  # nested folders too, as ImageFolder
        items += [(f.relative_to(base).as_posix(), label) for f in images]
    if not items:
        raise DatasetError(f"{str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items


def surveyed(root: Path, items: list[tuple[str, int]], reading: Reading) -> Reading:
    """``reading`` with the size and channels it leaves open chosen for the whole folder, from the images' headers
    (no decoding): colour if any image is, and ``default_side`` of the median shorter side. Not from one image: a
    single grey photo or odd size among many would decide for all of them."""
    if reading.image_size is not None and reading.channels is not None:
        return reading
    from PIL import Image

    modes, shorter_sides = set(), []
    for file, _ in items:
        try:
            with Image.open(root / file) as image:
                modes.add(image.mode)
                shorter_sides.append(min(image.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # decode reads it again, and names it with its reason
    if not shorter_sides:
        return reading
    channels = reading.channels or (1 if modes <= set(GREY_MODES) else 3)
    image_size = reading.image_size or default_side(sorted(shorter_sides)[len(shorter_sides) // 2])
    return replace(reading, image_size=image_size, channels=channels)


def require_every_class(items: list[tuple[str, int]], classes: list[str], folder: Path) -> None:
    """A class folder without images (a typo, an unfinished copy) would give the model a class it never sees."""
    present = {label for _, label in items}
    empty = [name for index, name in enumerate(classes) if index not in present]
    if empty:
        raise DatasetError(
            f"class folder(s) {', '.join(repr(name) for name in empty)} in {str(folder)!r} hold no images: add "
            f"images to them, or remove them ({', '.join(sorted(IMAGE_SUFFIXES))} files, at any depth)"
        )


def is_image_file(path: Path, class_folder: Path) -> bool:
    """An image of the class, at any depth; hidden files and folders (.DS_Store, .ipynb_checkpoints) are not."""
    hidden = any(part.startswith(".") for part in path.relative_to(class_folder).parts)
    return not hidden and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


@dataclass(frozen=True)
class Decoded:
    """A folder's images decoded: the arrays, the files they came from and those left out (with the reason)."""

    split: Split
    files: list[str]
    skipped: list[dict]
    sides: np.ndarray  # each image's shorter side as stored (before any resizing)


def by_split(decoded: Decoded, listed: dict[str, list[tuple[str, int]]]) -> dict[str, Decoded]:
    """``decoded`` (every split's files together) cut back into ``listed``'s splits."""
    position = {file: index for index, file in enumerate(decoded.files)}
    out = {}
    for name, items in listed.items():
        files = [file for file, _ in items if file in position]
        names = {file for file, _ in items}
        skipped = [bad for bad in decoded.skipped if bad["file"] in names]
        chosen = np.array([position[f] for f in files], int)
        out[name] = Decoded(decoded.split.subset(chosen), files, skipped, decoded.sides[chosen])
    return out


def decode_cached(root: Path, items: list[tuple[str, int]], reading: Reading) -> Decoded:
    """``decode``, from the cache when the same files (by content) were read the same way before. The key holds
    ``reading`` as asked: what ``surveyed`` chooses for it follows from the files, so a hit skips the survey."""
    key = cache_key(root, items, reading)
    path = cache_dir() / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                skipped = [{"file": f, "reason": r} for f, r in zip(cached["skipped"], cached["reasons"], strict=True)]
                split = Split(cached["images"], cached["labels"])
                return Decoded(split, [str(f) for f in cached["files"]], skipped, cached["sides"])
        except (OSError, ValueError, KeyError, DatasetError):
            path.unlink(missing_ok=True)  # a damaged cache entry costs one decode
    decoded = decode(root, items, surveyed(root, items, reading))
    store(path, decoded)
    return decoded


def decode(root: Path, items: list[tuple[str, int]], reading: Reading) -> Decoded:
    """Every image as uint8, read as ``reading`` says."""
    from PIL import Image, UnidentifiedImageError

    arrays, labels, files, skipped, sides = [], [], [], [], []
    shape = (3 if reading.channels is None else reading.channels, reading.image_size, reading.image_size)
    for file, label in items:
        try:
            with Image.open(root / file) as image:
                side = min(image.size)
                arrays.append(model_pixels(image, shape, FOLDER_RESIZE))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            skipped.append({"file": file, "reason": str(exc) or type(exc).__name__})
            continue
        labels.append(label)
        files.append(file)
        sides.append(side)
    if skipped and reading.bad_images != "skip":
        listed = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        raise DatasetError(
            f"{len(skipped)} image(s) in {str(root)!r} cannot be read ({listed}{more}). Remove or replace them, or "
            "pass --bad-images skip to leave them out (the run folder's split.json then lists them)."
        )
    if not arrays:
        raise DatasetError(f"no image in {str(root)!r} could be read")
    images = np.stack(arrays).transpose(0, 3, 1, 2)  # (N, H, W, C) to (N, C, H, W)
    split = Split(np.ascontiguousarray(images), np.array(labels, dtype=np.int64))
    return Decoded(split, files, skipped, np.array(sides, dtype=np.int64))


def cache_key(root: Path, items: list[tuple[str, int]], reading: Reading) -> str:
    """A digest of every file's relative path, label and bytes, and of how they are read (the split aside)."""
    digest = hashlib.sha256(f"v8 {reading.image_size} {reading.channels} {reading.bad_images}\n".encode())
    for file, label in items:
        digest.update(f"{file}\0{label}\0".encode())
        digest.update(hashlib.sha256((root / file).read_bytes()).digest())
    return digest.hexdigest()[:32]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "kd-edge" / "folders"


def store(path: Path, decoded: Decoded) -> None:
    """Write the cache entry atomically; a cache that cannot be written only costs the next decode."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial.npz")
        np.savez(
            partial,
            images=decoded.split.images,
            labels=decoded.split.labels,
            sides=decoded.sides,
            files=np.array(decoded.files, dtype=str),
            skipped=np.array([s["file"] for s in decoded.skipped], dtype=str),
            reasons=np.array([s["reason"] for s in decoded.skipped], dtype=str),
        )
        os.replace(partial, path)
    except OSError:
        pass

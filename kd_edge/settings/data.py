"""Which data a training run reads, and how it is prepared."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kd_edge.settings.fields import check_choices, knob, require
from kd_edge.settings.parse import number_list

NORMALIZATIONS = ("dataset", "half")
AUGMENTATIONS = ("none", "shift", "aerial")


def augment_policy(value) -> str:
    """A policy name; ``true``/``false`` (configs of kd-edge 0.1, when --augment was a switch) mean shift/none."""
    if isinstance(value, bool) or str(value).lower() in ("true", "false"):
        return "shift" if str(value).lower() == "true" else "none"
    return str(value)


BAD_IMAGES = ("refuse", "skip")
CAMERA_SIZED = 64  # pixels a side from which an A|B default (models, augmentation) takes B
# A folder's images are resized to at most this side by default: on a 2-core CPU a 64 px teacher trains in
# minutes where a 128 px one takes 4x as long, for no better accuracy at the default budget on RSSCN7
# (benchmarks/results/aerial.md); --image-size asks for more.
DEFAULT_LARGEST_SIDE = 64
# ...and rounded down to a multiple of this: the default classifiers under 64 px (cnn-base, cnn-small) halve
# the image twice and flatten it (a folder of 30x40 photos would otherwise give 30 px squares, which they refuse).
DEFAULT_SIDE_MULTIPLE = 4


def default_side(shorter_side: int) -> int:
    """The side a folder's images are resized to when --image-size is not given, from their median shorter side."""
    side = min(shorter_side, DEFAULT_LARGEST_SIDE)
    return max(DEFAULT_SIDE_MULTIPLE, side - side % DEFAULT_SIDE_MULTIPLE)


# How training brings an image to the model's size, which the model card records (``kd_edge.resize``) and the
# board repeats: a classifier's folder photos bicubic (Pillow's default, which trained every folder model so far),
# a detector's frames bilinear.
FOLDER_RESIZE = "bicubic"
FRAME_RESIZE = "bilinear"

DEFAULT_SPLIT = (0.8, 0.1, 0.1)  # train, val, test: for a class-folder tree (per class) and for detection (per source)


def check_split(split: tuple[float, ...]) -> None:
    """A ConfigError unless ``split`` is three positive fractions train,val,test that sum to 1."""
    require(
        len(split) == 3 and min(split) > 0 and abs(sum(split) - 1) < 1e-6,
        f"--split takes three positive fractions train,val,test that sum to 1, e.g. 0.8,0.1,0.1; got {split}",
    )


def by_size_parts(value, option: str, valid, expected: str) -> list[str]:
    """The one or two parts of an ``A|B`` setting (A under ``CAMERA_SIZED`` px, B from there), each checked by
    ``valid``; a ConfigError that says what ``option`` takes otherwise."""
    parts = [part.strip() for part in str(value).split("|")]
    require(
        len(parts) <= 2 and all(valid(part) for part in parts),
        f"{option} takes {expected}, or A|B (A under {CAMERA_SIZED} px, B from there), not {value!r}",
    )
    return parts


def by_image_size(value, side: int) -> str:
    """``value`` for images of ``side`` pixels: of ``A|B``, A under ``CAMERA_SIZED`` and B from there; a single
    value as it is."""
    small, _, camera = str(value).partition("|")
    return (camera or small) if side >= CAMERA_SIZED else small


def chosen_by_size(settings, side: int, **fields):
    """``settings`` with each named ``A|B`` field made for images of ``side`` pixels, as the type ``fields`` gives
    it (``batch_size=int``)."""
    chosen = {name: kind(by_image_size(getattr(settings, name), side)) for name, kind in fields.items()}
    return replace(settings, **chosen)


def number_by_size(kind, option: str, valid, expected: str):
    """The parser of a number that may differ by image size: one number, or ``A|B`` kept as text until the run's
    images choose (``chosen_by_size``); a clear error for anything else."""

    def fits(part: str) -> bool:
        try:
            return valid(kind(part))
        except ValueError:
            return False

    def parse(value):
        parts = by_size_parts(value, option, fits, expected)
        return kind(parts[0]) if len(parts) == 1 else "|".join(parts)

    return parse


def numbers_by_size(value, kind) -> list:
    """Both numbers of an ``A|B`` setting (one for a single number): what a check before the images are known reads."""
    return [kind(part) for part in str(value).split("|")]


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    dataset: str = knob(
        "mnist-5k",
        "mnist-5k (built in), mnist, fashion-mnist, cifar10, folder:PATH or npz:PATH (`kd-edge datasets`).",
        short="-d",
    )
    data_dir: str | None = knob(None, "Folder holding dataset files.", none="$KD_EDGE_DATA")
    image_size: int | None = knob(
        None,
        "Resize folder: images to this side length (square).",
        none=f"the images' median shorter side, at most {DEFAULT_LARGEST_SIDE}, rounded down to a multiple of "
        f"{DEFAULT_SIDE_MULTIPLE}",
    )
    channels: int | None = knob(
        None, "Read folder: images as 1 (grey) or 3 (RGB) channels.", none="grey if every image is grey"
    )
    split: tuple[float, ...] = knob(
        DEFAULT_SPLIT,
        "Fractions train,val,test a plain class-folder tree (folder:PATH without train/) is split into: per class, "
        "seeded, the same on every run; the file lists go to the run folder's split.json.",
        parse=number_list("--split"),
    )
    bad_images: str = knob(
        "refuse",
        "A folder: image that cannot be read: refuse (stop, naming each file and why) or skip (leave it out, "
        "listed in split.json).",
        choices=BAD_IMAGES,
    )
    normalization: str = knob(
        "dataset",
        "dataset: the train split's mean and std; half: 0.5 and 0.5 per channel, as the reference script.",
        choices=NORMALIZATIONS,
    )
    augment: str = knob(
        "none|aerial",
        "Training-time augmentation: none; shift (up to 2 px, for digits and small objects); aerial (for imagery "
        "from above: the 8 flips and quarter turns, random 70-100 % crops, cut from a folder's photos at up to twice "
        "the input's side where they are larger, brightness and contrast jitter); A|B: A "
        f"under {CAMERA_SIZED} px, B from there. Frozen teachers then run on every augmented batch.",
        parse=augment_policy,
    )

    def __post_init__(self):
        object.__setattr__(self, "augment", augment_policy(self.augment))  # a library caller's True or False
        check_choices(self)
        by_size_parts(self.augment, "--augment", AUGMENTATIONS.__contains__, f"one of {', '.join(AUGMENTATIONS)}")
        require(
            self.image_size is None or self.image_size >= 8, f"--image-size must be at least 8, got {self.image_size}"
        )
        require(
            self.image_size is None or self.dataset.startswith("folder:"),
            f"--image-size resizes the images of a folder: dataset; {self.dataset!r} keeps its own size, so drop it",
        )
        require(self.channels in (None, 1, 3), f"--channels takes 1 (grey) or 3 (RGB), got {self.channels}")
        require(
            self.channels is None or self.dataset.startswith("folder:"),
            f"--channels converts the images of a folder: dataset; {self.dataset!r} keeps its own, so drop it",
        )
        check_split(self.split)

    @property
    def folder_options(self) -> dict:
        """What a folder: dataset is loaded with (split, bad_images, channels), as a DataRef records it; None for
        the other datasets, which take none of them."""
        folder = self.dataset.startswith("folder:")
        return {
            "split": tuple(self.split) if folder else None,
            "bad_images": self.bad_images if folder else None,
            "channels": self.channels if folder else None,
        }

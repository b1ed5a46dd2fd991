"""Which data a training run reads, and how it is prepared."""

from __future__ import annotations

from dataclasses import dataclass

from kd_edge.settings.fields import check_choices, knob, require

NORMALIZATIONS = ("dataset", "half")


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    dataset: str = knob(
        "mnist-5k",
        "mnist-5k (built in), mnist, fashion-mnist, cifar10, folder:PATH or npz:PATH (`kd-edge datasets`).",
        short="-d",
    )
    data_dir: str | None = knob(None, "Folder holding dataset files.", none="$KD_EDGE_DATA")
    image_size: int | None = knob(None, "Resize folder: images to this side length.", none="the first image's size")
    normalization: str = knob(
        "dataset",
        "dataset: the train split's mean and std; half: 0.5 and 0.5 per channel, as the reference script.",
        choices=NORMALIZATIONS,
    )
    augment: bool = knob(False, "Shift training images by up to 2 px (frozen teachers then run on every batch).")

    def __post_init__(self):
        check_choices(self)
        require(
            self.image_size is None or self.image_size >= 8, f"--image-size must be at least 8, got {self.image_size}"
        )
        require(
            self.image_size is None or self.dataset.startswith("folder:"),
            f"--image-size resizes the images of a folder: dataset; {self.dataset!r} keeps its own size, so drop it",
        )

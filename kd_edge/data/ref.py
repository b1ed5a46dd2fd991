"""Where a model's data comes from: enough to load the same splits again. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class DataRef:
    """``dataset`` is a name ``kd_edge.data.load_dataset`` accepts; ``data_dir`` the folder it was read from
    (None for the built-in data); for a ``folder:`` dataset, ``image_size`` the side its images were resized to,
    ``split`` the fractions a plain class-folder tree was split into, ``bad_images`` what was done with
    unreadable files and ``channels`` how many its images were read with (None: the defaults), so that
    every later stage loads the same splits."""

    dataset: str
    data_dir: str | None = None
    image_size: int | None = None
    split: tuple[float, float, float] | None = None
    bad_images: str | None = None
    channels: int | None = None

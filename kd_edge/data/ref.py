"""Where a model's data comes from: enough to load the same splits again. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class DataRef:
    """``dataset`` is a name ``kd_edge.data.load_dataset`` accepts; ``data_dir`` the folder it was read from
    (None for the built-in data); ``image_size`` the side ``folder:`` images were resized to."""

    dataset: str
    data_dir: str | None = None
    image_size: int | None = None

"""The data on the training device: uint8 splits served as batches, normalised on the fly (augmented by
``kd_edge.training.augment``).

Data stays in memory as uint8 tensors; each batch is gathered by index and normalised on
the fly, so there are no per-sample PIL transforms and no workers.
"""

from __future__ import annotations

import torch

from kd_edge.data.dataset import ImageDataset, Split


def normalization(dataset: ImageDataset, kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a model sees its input through: the dataset's own, or 0.5/0.5."""
    if kind == "half":
        channels = dataset.input_shape[0]
        return (0.5,) * channels, (0.5,) * channels
    return dataset.mean, dataset.std


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
    """A split held on the device as uint8, served as shuffled batches of indices; ``sources``, where given, the
    same images at a larger size (what the aerial augmentation crops from)."""

    def __init__(self, split: Split, device: torch.device, sources: Split | None = None):
        self.images = torch.from_numpy(split.images).to(device)
        self.labels = torch.from_numpy(split.labels).to(device)
        self.sources = None if sources is None else torch.from_numpy(sources.images).to(device)

    def sources_of(self, index: torch.Tensor) -> torch.Tensor | None:
        """The larger copies of the images at ``index``, or None where the split has none."""
        return None if self.sources is None else self.sources[index]

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

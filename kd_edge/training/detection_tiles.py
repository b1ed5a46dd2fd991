"""Training tiles for a centroid detector: random crops of the scenes, their per-cell class maps, augmented alike.

    images, targets = draw_tiles(scenes, count=32, tile=128, stride=8, generator=g, augment="aerial",
                                 scales=(0.75, 1.33))

A detector of stride ``s`` answers, for each ``s x s`` cell of its input, "which class has an object centred
here, or none" (``centre_map``: 0 is background, class ``c`` is ``c + 1``). The images are large and
the objects small, so the network trains on tiles: a random crop (under ``aerial``, of a random scale,
resized to the tile), whose objects are those centred inside it.

The 8 flips and 90-degree rotations are applied to the tile *and to its class map* with the same torch
call: a square tile whose side is a multiple of the stride maps whole cells onto whole cells, so the
labels follow the pixels by construction, not by a second formula for the coordinates.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kd_edge.data.yolo import Scene
from kd_edge.training.augment import dihedral, jitter


def centre_map(centres: np.ndarray, labels: np.ndarray, side: int, stride: int) -> torch.Tensor:
    """(side // stride, side // stride) int64: each object's class + 1 in the cell holding its centre (pixel
    coordinates in a ``side`` x ``side`` tile), 0 elsewhere. Centres outside the tile are left out."""
    cells = side // stride
    target = torch.zeros(cells, cells, dtype=torch.int64)
    for (x, y), label in zip(centres, labels, strict=True):
        if 0 <= x < side and 0 <= y < side:
            target[int(y // stride), int(x // stride)] = int(label) + 1
    return target


def crop(scene: Scene, x0: int, y0: int, side: int, tile: int) -> tuple[torch.Tensor, np.ndarray]:
    """The ``side`` x ``side`` crop at (x0, y0) (zero beyond the image), resized to ``tile``: the (3, tile, tile)
    uint8 image and the objects' centres in its pixels."""
    image = torch.from_numpy(scene.image).permute(2, 0, 1)
    out = torch.zeros(3, side, side, dtype=torch.uint8)
    part = image[:, y0 : y0 + side, x0 : x0 + side]
    out[:, : part.shape[1], : part.shape[2]] = part
    if side != tile:
        out = F.interpolate(out[None].float(), size=(tile, tile), mode="bilinear", antialias=True, align_corners=False)
        out = out[0].round().clamp(0, 255).to(torch.uint8)
    centres = (scene.truths()[:, 1:3] - np.array([x0, y0], dtype=np.float32)) * (tile / side)
    return out, centres


def draw_tiles(
    scenes: list[Scene],
    count: int,
    tile: int,
    stride: int,
    generator: torch.Generator,
    augment: str,
    scales: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` tiles from randomly chosen scenes: (count, 3, tile, tile) uint8 images and their
    (count, tile // stride, tile // stride) class maps. ``augment`` is ``none`` or ``aerial``; under ``aerial``
    a crop's side is the tile's times a factor drawn uniformly from ``scales`` (then resized to the tile)."""
    if tile % stride:
        raise ValueError(f"the tile ({tile} px) must be a multiple of the stride ({stride})")
    images, targets = [], []
    for _ in range(count):
        scene = scenes[int(torch.randint(len(scenes), (1,), generator=generator))]
        side = tile
        if augment == "aerial":
            scale = scales[0] + (scales[1] - scales[0]) * float(torch.rand(1, generator=generator))
            side = max(round(tile * scale), stride)
        height, width = scene.image.shape[:2]
        x0 = int(torch.randint(max(width - side, 0) + 1, (1,), generator=generator))
        y0 = int(torch.randint(max(height - side, 0) + 1, (1,), generator=generator))
        image, centres = crop(scene, x0, y0, side, tile)
        target = centre_map(centres, scene.labels, tile, stride)
        if augment == "aerial":
            code = int(torch.randint(8, (1,), generator=generator))
            image, target = dihedral(image[None], code)[0], dihedral(target[None, None], code)[0, 0]
        images.append(image)
        targets.append(target)
    images = torch.stack(images)
    if augment == "aerial":
        images = jitter(images, generator)
    return images, torch.stack(targets)

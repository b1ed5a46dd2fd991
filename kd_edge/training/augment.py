"""Training-time augmentation of uint8 batches on the training device: ``--augment none|shift|aerial``.

* shift: translate by up to 2 px, zeros filling in (small digits and objects);
* aerial: imagery from above has no "up", so each image takes one of the 8 flips and quarter
  turns of the square (the 4 flips of a rectangle), a random crop of 70-100 % of its side resized
  back (the scale moves with altitude), and brightness and contrast jitter of up to 20 % (light);
  where the photos are larger than the model's input, the crop is cut from a sharper copy of
  each photo (``sources``, up to twice the side) and brought down to the input's size, so a
  training crop is as sharp as a whole photo resized for the model;
* none.

``cutmix`` (``--cutmix P``: with probability P a batch is mixed) is the one step that changes labels: a box of each
image comes from another, and the label mixes the two classes by area. It comes after the policy, from a generator
of its own (``kd_edge.training.fit``), so a run with it sees the same images, in the same order and under the same
draws, as one without.

Every draw comes from the fit's generator, so a resumed epoch sees the same augmentations as an
uninterrupted one. The policies never touch labels: each transform keeps the image's class. Frozen
teachers run on the augmented batch itself (``kd_edge.training.soft_labels``), so the student
learns their view of exactly what it sees.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_SHIFT = 2  # pixels
CROP_SCALE = (0.7, 1.0)  # side of the crop, as a fraction of the image's
JITTER = 0.2  # brightness and contrast factors within 1 +- this


def augment(
    images: torch.Tensor, policy: str, generator: torch.Generator, sources: torch.Tensor | None = None
) -> torch.Tensor:
    """``images`` (N, C, H, W) uint8 under ``policy``; the same dtype and shape back. ``sources``, where given, are
    the same photos at a larger size, which the aerial policy crops from.

    Why the sharper copy: a crop of 70 % of a 64 px image, blown up back to 64 px, is blurrier than any photo the
    model meets after training (those are resized down from the full photo). On RSSCN7 (128 px photos, 64 px
    model) crops from the 128 px photos trained the default student alone to 86.16 % on test on each of 3 paired
    seeds, against 83.33 % on average from the 64 px copy; validation 1.0 point higher (benchmarks/sharp_crops.py)."""
    if policy == "shift":
        return random_shift(images, generator)
    if policy == "aerial":
        source = images if sources is None else sources
        cropped = random_resized_crop(random_dihedral(source, generator), generator, images.shape[-2:])
        return jitter(cropped, generator)
    return images


def random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels, filling with zeros."""
    n, c, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy, dx = (draw_ints(0, 2 * max_shift + 1, n, generator, images.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def dihedral(images: torch.Tensor, code: int) -> torch.Tensor:
    """Symmetry ``code`` of the square: ``code % 4`` quarter turns counter-clockwise, then a left-right flip when
    ``code >= 4``. 0 is the identity; the 8 codes are the 8 symmetries."""
    turned = torch.rot90(images, code % 4, dims=(2, 3))
    return turned.flip(3) if code >= 4 else turned


def random_dihedral(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image under one of the 8 symmetries of the square, drawn uniformly (of a rectangle: its 4 flips,
    the codes that keep the shape)."""
    square = images.shape[2] == images.shape[3]
    codes = draw_ints(0, 8, len(images), generator, images.device)
    if not square:
        codes = torch.tensor([0, 2, 4, 6], device=images.device)[codes % 4]  # identity, half turn, the two flips
    out = torch.empty_like(images)
    for code in codes.unique().tolist():
        chosen = codes == code
        out[chosen] = dihedral(images[chosen], code)
    return out


def random_resized_crop(images: torch.Tensor, generator: torch.Generator, size: tuple[int, int] | None = None):
    """A crop of each image, its side ``CROP_SCALE`` of the image's at a random place, resized to ``size`` (by
    default the images' own): bilinear, averaging over each output pixel's area where the crop is larger
    (``roi_align``'s adaptive sampling: one sample a pixel when enlarging, as before sources existed)."""
    from torchvision.ops import roi_align

    n, _, h, w = images.shape
    size = tuple(size or (h, w))
    scale = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * torch.rand(n, generator=generator)
    crop_h, crop_w = scale * h, scale * w
    top, left = torch.rand(n, generator=generator) * (h - crop_h), torch.rand(n, generator=generator) * (w - crop_w)
    boxes = torch.stack([torch.arange(n, dtype=torch.float32), left, top, left + crop_w, top + crop_h], dim=1)
    cropped = roi_align(images.float(), boxes.to(images.device), output_size=size, sampling_ratio=0, aligned=True)
    return cropped.round_().clamp_(0, 255).to(torch.uint8)


def jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Contrast (about each image's mean) and brightness, each scaled by a factor within 1 +- ``JITTER``."""
    n = len(images)
    contrast, brightness = (1 + JITTER * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1) for _ in range(2))
    contrast, brightness = contrast.to(images.device), brightness.to(images.device)
    pixels = images.float()
    mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
    return (((pixels - mean) * contrast + mean) * brightness).round_().clamp_(0, 255).to(torch.uint8)


def changes_batches(policy: str, cutmix_probability: float) -> bool:
    """Whether training sees other pixels than the split's: then frozen teachers run on every batch, and no soft
    labels can be cached by index."""
    return policy != "none" or cutmix_probability > 0


def cutmix(
    images: torch.Tensor, labels: torch.Tensor, classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al., 2019): one box of each image replaced by the same box of another image of the batch, and
    its label the two classes weighted by the areas they show. Returns the (N, C, H, W) uint8 images and (N,
    ``classes``) float targets, which cross-entropy takes as class probabilities.

    The box covers a fraction of the image drawn uniformly (Beta(1, 1), the paper's choice), with a random centre,
    clipped at the edges (the weights are the areas after clipping); one box and one pairing for the batch."""
    n, _, height, width = images.shape
    kept = float(torch.rand(1, generator=generator))
    partner = torch.randperm(n, generator=generator).to(images.device)
    side_h, side_w = int(height * (1 - kept) ** 0.5), int(width * (1 - kept) ** 0.5)
    cy, cx = (int(torch.randint(limit, (1,), generator=generator)) for limit in (height, width))
    top, bottom = max(cy - side_h // 2, 0), min(cy + side_h // 2, height)
    left, right = max(cx - side_w // 2, 0), min(cx + side_w // 2, width)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images[partner][..., top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (height * width)
    one_hot = F.one_hot(labels, classes).float()
    return mixed, kept * one_hot + (1 - kept) * one_hot[partner]


def draw_ints(low: int, high: int, n: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=generator).to(device)

"""Augmentation policies: each transform is what it says, keeps the image's class, and draws only from the fit's
generator."""

import numpy as np
import pytest
import torch

from kd_edge.settings import DataSettings
from kd_edge.training.augment import (
    augment,
    cutmix,
    dihedral,
    jitter,
    random_dihedral,
    random_resized_crop,
    random_shift,
)


def arrow(size: int = 16) -> torch.Tensor:
    """An arrow pointing up, off centre, with a notch on its left: no symmetry of the square maps it to itself,
    so each of the 8 symmetries gives a different image."""
    image = np.zeros((size, size), np.uint8)
    image[3:13, 7:9] = 200  # the shaft
    for row in range(3, 7):  # the head
        image[row, 8 - (row - 3) : 8 + (row - 3)] = 250
    image[10, 5:7] = 120  # a notch on the left
    return torch.from_numpy(image)[None, None]


def expected_symmetry(image: np.ndarray, code: int) -> np.ndarray:
    """numpy's own quarter turns (counter-clockwise) and left-right flip: the reference the transform must match."""
    turned = np.rot90(image, code % 4)
    return np.fliplr(turned) if code >= 4 else turned


def test_the_8_symmetries_are_the_squares_own_and_all_different():
    image = arrow()
    outputs = [dihedral(image, code) for code in range(8)]
    for code, output in enumerate(outputs):
        assert np.array_equal(output[0, 0].numpy(), expected_symmetry(image[0, 0].numpy(), code)), code
    assert len({output.numpy().tobytes() for output in outputs}) == 8
    # the arrow turned a quarter to the left points left: its head is now in the left columns
    assert dihedral(image, 1)[0, 0, :, :7].max() == 250 and dihedral(image, 1)[0, 0, :, 9:].max() < 250


def test_random_symmetries_draw_all_8_and_keep_the_batch_in_order():
    batch = arrow().repeat(400, 1, 1, 1)
    out = random_dihedral(batch, torch.Generator().manual_seed(0))
    seen = {out[i].numpy().tobytes() for i in range(len(out))}
    assert seen == {dihedral(arrow(), code)[0].numpy().tobytes() for code in range(8)}  # nothing else appears
    wide = torch.zeros(8, 1, 6, 10, dtype=torch.uint8)
    assert random_dihedral(wide, torch.Generator().manual_seed(0)).shape == wide.shape  # a rectangle: its flips


def test_a_crop_is_70_to_100_percent_of_the_side_resized_back(monkeypatch):
    from kd_edge.training import augment as module

    ramp = (8 * torch.arange(32)).to(torch.uint8).expand(16, 1, 32, 32).contiguous()  # 8 levels a pixel, left to right
    cropped = random_resized_crop(ramp, torch.Generator().manual_seed(1))
    assert cropped.shape == ramp.shape and cropped.dtype == torch.uint8
    steps = cropped[:, 0, :, 1:].float() - cropped[:, 0, :, :-1].float()
    slopes = steps.mean(dim=(1, 2))  # a crop of side s, resized back, stretches the ramp to 8 * s a pixel
    assert ((slopes > 8 * 0.7 - 0.5) & (slopes < 8 + 0.5)).all() and slopes.std() > 0.1  # scales differ per image
    assert (steps.std(dim=1) < 1.01).all()  # the same on every row: a crop and a resize, nothing else
    monkeypatch.setattr(module, "CROP_SCALE", (1.0, 1.0))
    assert torch.equal(random_resized_crop(ramp, torch.Generator().manual_seed(1)), ramp)  # the whole image: itself


def test_aerial_crops_cut_from_the_larger_copy_are_its_pixels_brought_down(monkeypatch):
    from kd_edge.training import augment as module

    images = arrow().repeat(24, 3, 1, 1)  # 16 px, three channels
    sources = images.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # the same arrow at 32 px, 2x2 blocks
    monkeypatch.setattr(module, "JITTER", 0.0)
    monkeypatch.setattr(module, "CROP_SCALE", (1.0, 1.0))
    out = augment(images, "aerial", torch.Generator().manual_seed(4), sources)
    # each output pixel averages its 2x2 block: the 16 px arrow under the same symmetry, exactly
    assert out.shape == images.shape and torch.equal(out, random_dihedral(images, torch.Generator().manual_seed(4)))
    monkeypatch.setattr(module, "CROP_SCALE", (0.7, 1.0))
    cropped = augment(images, "aerial", torch.Generator().manual_seed(4), sources)
    assert cropped.shape == images.shape and not torch.equal(cropped, out)
    # without sources nothing changes: crops the same size as their image sample once a pixel, as the code before
    # sources did (roi_align with sampling_ratio=1, the same draws)
    from torchvision.ops import roi_align

    noise = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    draws = torch.Generator().manual_seed(1)
    scale = 0.7 + 0.3 * torch.rand(16, generator=draws)
    top, left = torch.rand(16, generator=draws) * (32 - 32 * scale), torch.rand(16, generator=draws) * (32 - 32 * scale)
    boxes = torch.stack([torch.arange(16.0), left, top, left + 32 * scale, top + 32 * scale], dim=1)
    before = roi_align(noise.float(), boxes, (32, 32), sampling_ratio=1, aligned=True).round_().clamp_(0, 255)
    assert torch.equal(random_resized_crop(noise, torch.Generator().manual_seed(1)), before.to(torch.uint8))


def test_jitter_changes_light_not_geometry():
    image = arrow().repeat(32, 1, 1, 1)
    lit = jitter(image, torch.Generator().manual_seed(2))
    background, mark = image == 0, image == 200
    # each image's shaft stays brighter than its background (the same pixels), by a changed amount
    assert (
        lit.float()[mark.expand_as(lit)].view(32, -1).min(1).values > lit.float().view(32, -1).median(1).values
    ).all()
    assert len({int(lit[i][mark[i]].float().mean()) for i in range(32)}) > 4 and background.any()


@pytest.mark.parametrize("policy", ["none", "shift", "aerial"])
def test_each_policy_keeps_dtype_shape_and_draws_only_from_the_generator(policy):
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    first = augment(images, policy, torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global RNG plays no part
    again = augment(images, policy, torch.Generator().manual_seed(3))
    assert first.dtype == torch.uint8 and first.shape == images.shape and torch.equal(first, again)
    assert torch.equal(first, images) == (policy == "none")


def test_cutmix_puts_one_box_of_another_image_in_each_and_weights_the_labels_by_area():
    """Image i is flat grey level i: after CutMix each image shows its own level outside one box and one partner's
    inside it (the same box for the batch), and its target gives each class the share of pixels it shows."""
    n, classes = 8, 10
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 12, 16).clone()
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 9])
    generator = torch.Generator().manual_seed(4)
    checked = 0
    for _ in range(20):
        mixed, targets = cutmix(images, labels, classes, generator)
        assert mixed.dtype == torch.uint8 and mixed.shape == images.shape and targets.shape == (n, classes)
        assert torch.allclose(targets.sum(1), torch.ones(n))
        box = mixed[:, 0] != images[:, 0]  # where each image shows another's pixels
        common = box.any(0)  # the one box of the batch: a rectangle, the same in each image not paired with itself
        assert torch.equal(common, common.any(1)[:, None] & common.any(0)[None, :])
        assert all(torch.equal(each, common) or not each.any() for each in box)
        for i in range(n):
            levels = mixed[i, 0].unique().tolist()
            shown = {labels[level].item(): (mixed[i, 0] == level).float().mean().item() for level in levels}
            expected = {c: w for c, w in enumerate(targets[i].tolist()) if w > 0}
            assert shown.keys() == expected.keys() and all(abs(shown[c] - expected[c]) < 1e-6 for c in shown)
            checked += len(levels) == 2
    assert checked > 50  # most images do get a partner's box
    again = cutmix(images, labels, classes, torch.Generator().manual_seed(4))
    first = cutmix(images, labels, classes, torch.Generator().manual_seed(4))
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])  # the generator's draws alone


def test_configs_written_when_augment_was_a_switch_still_read():
    assert DataSettings(augment=True).augment == "shift" and DataSettings(augment=False).augment == "none"
    assert random_shift  # the shift policy of earlier releases, unchanged (tests/test_train.py)

"""Every registered model runs forward and backward at each input shape it supports."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from kd_edge.errors import ConfigError, ModelError
from kd_edge.settings import DataSettings, KDSettings, NetworkSettings, OptimSettings
from kd_edge.training.models import (
    ConvStages,
    InvertedResidual,
    ModelSpec,
    count_macs,
    count_parameters,
    create_model,
    list_models,
    peak_activation_bytes,
)

# (channels, image size): MNIST-like, CIFAR-like, and a small folder dataset.
SHAPES = [(1, 28), (3, 32), (3, 16)]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels,size", SHAPES)
def test_forward_and_backward(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=channels, image_size=size)
    images = torch.randn(2, channels, size, size)
    logits = model(images)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_seed_models_match_the_reference_script():
    # The reference script's CNNs: conv(1->32->64) fc(3136->128->10) and conv(1->16->32) fc(1568->64->10).
    assert count_parameters(create_model("seed-teacher")) == (32 * 9 + 32) + (64 * 32 * 9 + 64) + (3136 * 128 + 128) + (
        128 * 10 + 10
    )
    assert count_parameters(create_model("seed-student")) == (16 * 9 + 16) + (32 * 16 * 9 + 32) + (1568 * 64 + 64) + (
        64 * 10 + 10
    )


def test_macs_of_seed_student_by_hand():
    conv1 = 28 * 28 * 16 * 9
    conv2 = 14 * 14 * 32 * 16 * 9
    fc = 1568 * 64 + 64 * 10
    assert count_macs(create_model("seed-student"), (1, 28, 28)) == conv1 + conv2 + fc


@pytest.mark.parametrize("name", [*list_models(), "mobile@w0.5d2"])
def test_macs_agree_with_torchs_flop_counter(name):
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(name, in_channels=3, image_size=64).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    assert count_macs(model, (3, 64, 64)) == counter.get_total_flops() // 2


def test_cnn_is_configurable():
    deep = create_model("cnn", widths=(8, 16, 32), depth=2, hidden=16, image_size=32)
    assert create_model("cnn", widths=(8, 16, 32), depth=2, hidden=16, image_size=32)(
        torch.zeros(1, 1, 32, 32)
    ).shape == (1, 10)
    assert count_parameters(deep) < count_parameters(create_model("cnn-base"))


def test_unknown_model_lists_valid_names():
    with pytest.raises(ModelError, match=r"unknown model 'nope'.*seed-student"):
        create_model("nope")


def test_bad_arguments_are_a_model_error():
    with pytest.raises(ModelError, match="bad arguments"):
        create_model("cnn", colour="blue")
    with pytest.raises(ModelError, match="divisible by 4, got 30: use images of 28 or 32 px"):
        create_model("seed-student", image_size=30)


def test_spec_rebuilds_the_model_from_its_stored_form():
    spec = ModelSpec("cnn", num_classes=4, in_channels=3, image_size=32, kwargs={"widths": (8, 12), "hidden": 16})
    original = spec.build().eval()
    rebuilt = ModelSpec(**spec.to_dict()).build().eval()  # what a checkpoint stores and reads back
    rebuilt.load_state_dict(original.state_dict())  # strict: the same names and shapes
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt(x), original(x)) and rebuilt(x).shape == (2, 4)
    other = ModelSpec("cnn", num_classes=4, in_channels=3, image_size=32, kwargs={"widths": (8, 16)}).build()
    with pytest.raises(RuntimeError, match="size mismatch"):
        other.load_state_dict(original.state_dict())


def test_family_members_are_built_by_name_and_multipliers():
    assert count_parameters(create_model("cnn@w1d1")) == count_parameters(create_model("cnn-small"))
    assert count_parameters(create_model("seed@w1")) == count_parameters(create_model("seed-student"))
    assert count_parameters(create_model("cnn@w0.5d1")) < count_parameters(create_model("cnn@w1d1"))
    assert count_parameters(create_model("cnn@w1d3")) > count_parameters(create_model("cnn@w1d1"))
    deeper = create_model("mobile@w1d2")
    assert sum(isinstance(m, InvertedResidual) for m in deeper.modules()) == 6  # 3 stages x 2 blocks
    assert deeper(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert ModelSpec("cnn@w0.5d2", 10, 1, 28).build() is not None  # what checkpoints store rebuilds


@pytest.mark.parametrize(
    "name, message",
    [("cnn@", "cnn@wWIDTHdDEPTH"), ("cnn@w0d1", "> 0"), ("cnn@x2", "cnn@wWIDTHdDEPTH"), ("vit@w1", "families"),
     ("seed@w1d2", "one conv per stage")],
)  # fmt: skip
def test_bad_family_members_say_how_to_write_them(name, message):
    with pytest.raises(ModelError, match=message):
        create_model(name)


def test_peak_activations_by_hand():
    # seed-student on 1x28x28: the largest layer is conv1, in 1x28x28 + out 16x28x28 floats
    assert peak_activation_bytes(create_model("seed-student"), (1, 28, 28)) == 4 * (28 * 28 + 16 * 28 * 28)


def relu_input_sizes(model: torch.nn.Module, images: torch.Tensor) -> list[int]:
    """The number of values each ReLU of ``model`` saw in one forward pass."""
    sizes = []
    hooks = [
        m.register_forward_pre_hook(lambda module, inputs: sizes.append(inputs[0].numel()))
        for m in model.modules()
        if isinstance(m, torch.nn.ReLU)
    ]
    model(images)
    for hook in hooks:
        hook.remove()
    return sizes


@pytest.mark.parametrize("name,channels,size", [("cnn-base", 1, 28), ("cnn", 1, 28), ("pooled-small", 3, 64)])
def test_training_pools_before_the_relu_with_the_same_numbers_and_gradients(name, channels, size):
    """In training the max-pools run before their ReLUs (a quarter of the values); outputs and gradients are those
    of the written order to the bit, and evaluation (what export captures) keeps the written order."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=channels, image_size=size)
    assert isinstance(model.features, ConvStages)
    images, labels = torch.randn(4, channels, size, size), torch.randint(0, 7, (4,))
    initial = {key: value.clone() for key, value in model.state_dict().items()}

    def logits_and_gradients(forward):
        model.load_state_dict(initial)
        model.zero_grad()
        logits = forward(images)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        return logits, [p.grad.clone() for p in model.parameters()]

    def written_order(x):
        for layer in model.features:
            x = layer(x)
        return model.head(x)

    logits, gradients = logits_and_gradients(model)
    written_logits, written_gradients = logits_and_gradients(written_order)
    assert torch.equal(logits, written_logits)
    assert all(torch.equal(a, b) for a, b in zip(gradients, written_gradients, strict=True))

    training = relu_input_sizes(model, images)
    evaluating = relu_input_sizes(model.eval(), images)
    changed = [(a, b) for a, b in zip(training, evaluating, strict=True) if a != b]
    assert changed and all(b == 4 * a for a, b in changed)  # those ReLUs ran on pooled values, a quarter as many


def test_every_registry_model_keeps_batchnorm_statistics_that_follow_a_short_run():
    """A running average that moves 1 % a step (torchvision's MobileNetV3) still holds 60 % of its initial value
    after 50 steps: a run of a few hundred steps then evaluates with statistics of weights long gone, and on
    RSSCN7 a mobilenet-v3-small at 80 % train accuracy scored chance on validation. 10 % a step is torch's own."""
    for name in list_models():
        model = ModelSpec(name, 7, 3, 64).build()
        momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
        assert all(momentum is None or momentum >= 0.1 for momentum in momenta), (name, momenta)


@pytest.mark.parametrize("name", ["pooled-small", "pooled-base", "pooled-large", "mobile-small"])
def test_camera_sized_models_keep_their_size_and_their_cost_follows_the_pixels(name):
    """From 64 to 224 px: the same parameters (a pooled classifier, not one that grows with the image), MACs in
    proportion to the pixels (a stride-2 stem from 64 px), and the right output at every size."""
    sizes = (64, 128, 224)
    models = {size: create_model(name, num_classes=7, in_channels=3, image_size=size).eval() for size in sizes}
    assert len({count_parameters(model) for model in models.values()}) == 1
    macs = {size: count_macs(model, (3, size, size)) for size, model in models.items()}
    for size in sizes[1:]:
        assert macs[size] / macs[64] == pytest.approx((size / 64) ** 2, rel=0.1)
    with torch.no_grad():
        assert models[224](torch.zeros(2, 3, 224, 224)).shape == (2, 7)


def test_the_default_models_are_chosen_by_the_image_size():
    from kd_edge.settings import DistillSettings

    settings = DistillSettings()
    assert [settings.teacher.for_images(28).model, settings.student.for_images(28).model] == ["cnn-small", "cnn-small"]
    chosen = [settings.teacher.for_images(64).model, settings.student.for_images(128).model]
    assert chosen == ["pooled-large", "pooled-base"]
    assert replace(settings.student, model="resnet18").for_images(128).model == "resnet18"


@pytest.mark.parametrize(
    "build, option",
    [
        (lambda: NetworkSettings(model="a|b|c", steps=1), "--model"),
        (lambda: NetworkSettings(model="|pooled-base", steps=1), "--model"),
        (lambda: NetworkSettings(model="cnn-small", steps="450|0"), "--steps"),
        (lambda: NetworkSettings(model="cnn-small", steps="many"), "--steps"),
        (lambda: DataSettings(augment="none|upside-down"), "--augment"),
        (lambda: OptimSettings(batch_size="192|0"), "--batch-size"),
        (lambda: OptimSettings(batch_size="big"), "--batch-size"),
        (lambda: KDSettings(alpha="0.9|1.5"), "--alpha"),
        (lambda: KDSettings(alpha="0.9|0.5|0.1"), "--alpha"),
        (lambda: KDSettings(temperature="2|-4"), "--temperature"),
    ],
)
def test_a_malformed_size_choice_is_refused_naming_its_option(build, option):
    with pytest.raises(ConfigError, match=f"{option} takes .* or A\\|B"):
        build()


def test_the_batch_alpha_and_temperature_are_chosen_by_the_image_size():
    """Under 64 px the default recipe trains at batch 192 with alpha 0.9 and T 2, from 64 px at 256, 0.5 and 4
    (benchmarks/results/short-recipe.md); a run records the numbers it trained with, and one number is both."""
    from kd_edge.settings import DistillSettings
    from kd_edge.training.distill import for_images

    def chosen(settings, side):
        resolved = for_images(settings, SimpleNamespace(dataset=SimpleNamespace(input_shape=(1, side, side))))
        return resolved.optim.batch_size, resolved.kd.alpha, resolved.kd.temperature

    settings = DistillSettings()
    assert chosen(settings, 28) == (192, 0.9, 2.0) and chosen(settings, 64) == (256, 0.5, 4.0)
    given = replace(settings, optim=OptimSettings(batch_size=64), kd=KDSettings(alpha="0.8|0.3", temperature=3))
    assert chosen(given, 28) == (64, 0.8, 3.0) and chosen(given, 128) == (64, 0.3, 3.0)
    assert OptimSettings(batch_size="128").batch_size == 128  # a single number is a number, from a flag or a file


def test_a_student_alone_at_one_size_still_gets_a_teacher_for_the_other():
    from kd_edge.settings import DistillSettings

    assert not replace(DistillSettings(), kd=KDSettings(alpha=1)).needs_teacher
    assert not replace(DistillSettings(), kd=KDSettings(alpha="1|1")).needs_teacher
    assert replace(DistillSettings(), kd=KDSettings(alpha="1|0.5")).needs_teacher  # decided once the images are known
    with pytest.raises(ConfigError, match="--mode online needs --alpha below 1"):
        DistillSettings(mode="online", kd=KDSettings(alpha="0.5|1"))

"""Model registry: ``create_model(name, num_classes, in_channels, image_size, **kwargs)``.

Every model takes (N, C, H, W) float input normalised with the dataset's mean/std
and returns (N, num_classes) logits. A model is rebuilt from its name and
constructor arguments, which is what checkpoints store (see ``ModelSpec``).

    >>> list_models("cnn*")
    ['cnn', 'cnn-base', 'cnn-small', 'cnn-tiny']
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kd_edge.errors import ModelError
from kd_edge.settings.data import CAMERA_SIZED  # from this size up, stems halve the resolution at once

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str):
    """Decorator that registers a model factory under ``name``."""

    def decorator(factory):
        if name in _MODELS:
            raise ModelError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        _DESCRIPTIONS[name] = description
        return factory

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def describe_model(name: str) -> str:
    return _DESCRIPTIONS[name]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: its registry name and constructor arguments."""

    name: str
    num_classes: int
    in_channels: int = 1
    image_size: int = 28
    kwargs: dict = field(default_factory=dict)
    task: str = "classify"  # or "detect": a centroid detector (kd_edge.training.detectors), num_classes objects

    def build(self) -> nn.Module:
        if self.task != "classify":
            raise ModelError(
                f"{self.name!r} is a {self.task} model: build it from its checkpoint (Checkpoint.build_model)"
            )
        return create_model(self.name, self.num_classes, self.in_channels, self.image_size, **self.kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **kwargs) -> nn.Module:
    """A registered model by name, or a family member ``FAMILY@wWdD`` (width and depth multipliers)."""
    if "@" in name:
        family, multipliers = parse_family_name(name)
        kwargs = {**multipliers, **kwargs}
        factory = _FAMILIES[family]
    elif name in _MODELS:
        factory = _MODELS[name]
    else:
        raise ModelError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}, or a family member "
            f"{'|'.join(_FAMILIES)}@wWIDTHdDEPTH (e.g. cnn@w0.5d2)"
        )
    try:
        return factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    except TypeError as exc:
        raise ModelError(f"bad arguments for model {name!r}: {exc}") from exc


# --- families: one architecture at several widths and depths (what `kd-edge search` explores) -------------

_FAMILIES: dict[str, Callable[..., nn.Module]] = {}


def register_family(name: str):
    def decorator(factory):
        _FAMILIES[name] = factory
        return factory

    return decorator


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def family_doc(name: str) -> str:
    return " ".join((_FAMILIES[name].__doc__ or "").replace("``", "").split())


def parse_family_name(name: str) -> tuple[str, dict]:
    """``"cnn@w0.5d2"`` -> ("cnn", {"width": 0.5, "depth": 2}); a clear error for anything else."""
    family, _, text = name.partition("@")
    if family not in _FAMILIES:
        raise ModelError(f"unknown model family {family!r} in {name!r}; families: {', '.join(list_families())}")
    match = re.fullmatch(r"(?:w(?P<width>[0-9]*\.?[0-9]+))?(?:d(?P<depth>[0-9]+))?", text)
    if not match or not text:
        raise ModelError(f"bad family member {name!r}: write {family}@wWIDTHdDEPTH, e.g. {family}@w0.5d2")
    values = {}
    if match["width"]:
        values["width"] = float(match["width"])
    if match["depth"]:
        values["depth"] = int(match["depth"])
    if values.get("width", 1.0) <= 0 or values.get("depth", 1) < 1:
        raise ModelError(f"bad family member {name!r}: the width multiplier must be > 0 and the depth >= 1")
    return family, values


def scaled(channels: int, width: float, divisor: int = 4) -> int:
    """``channels * width``, rounded to a multiple of ``divisor`` (SIMD-friendly), at least ``divisor``."""
    return max(divisor, int(channels * width + divisor / 2) // divisor * divisor)


@register_family("cnn")
def cnn_family(num_classes, in_channels, image_size, width: float = 1.0, depth: int = 1):
    """cnn-small (16-32 channels, hidden 64) at ``width`` times its channels, ``depth`` convs per stage."""
    widths = (scaled(16, width), scaled(32, width))
    return SmallCNN(num_classes, in_channels, image_size, widths, depth, hidden=scaled(64, width))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3's block: 1x1 expand, 3x3 depthwise, 1x1 project; a skip when shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        self.skip = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        return x + self.block(x) if self.skip else self.block(x)


class MobileCNN(nn.Module):
    """A MobileNet-style network: a 3x3 stem (stride 2 from 64 px), stages of inverted residual blocks
    (the first of each stage halves the resolution), global average pooling, a linear classifier. Its
    parameters do not depend on the input size; its cost grows with the pixels."""

    def __init__(self, num_classes, in_channels, image_size, widths=(16, 24, 40), depth=1, expand=4, stem=16):
        super().__init__()
        stride = 2 if image_size >= CAMERA_SIZED else 1
        layers = [*conv_bn_relu(in_channels, stem, stride)]
        channels = stem
        for width in widths:
            for block in range(depth):
                layers.append(InvertedResidual(channels, width, stride=2 if block == 0 else 1, expand=expand))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


@register_family("mobile")
def mobile_family(num_classes, in_channels, image_size, width: float = 1.0, depth: int = 1):
    """MobileCNN (stem 16, stages 16-24-40, expansion 4) at ``width`` times its channels, ``depth`` blocks a stage."""
    widths = tuple(scaled(c, width) for c in (16, 24, 40))
    return MobileCNN(num_classes, in_channels, image_size, widths, depth, stem=scaled(16, width))


def forward_with_leaf_hook(model: nn.Module, input_shape: tuple[int, int, int], hook) -> None:
    """One batch-1 forward pass in eval mode with ``hook(module, inputs, output)`` on every leaf module."""
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def peak_activation_bytes(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """An estimate of the activation memory a batch-1 forward pass needs at its peak: the largest sum of a
    layer's input and output (float32), as a runtime that frees each tensor after its last use holds them."""
    peak = 0

    def record(module, inputs, output):
        nonlocal peak
        size = sum(t.numel() for t in inputs if isinstance(t, torch.Tensor)) + output.numel()
        peak = max(peak, 4 * size)

    forward_with_leaf_hook(model, input_shape, record)
    return peak


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass at batch 1: those of every convolution and linear layer
    (biases not counted), what torch's FlopCounterMode counts for these networks (tests/test_models.py).
    Counted with hooks because FlopCounterMode imports torch._dynamo (3 s here), which a command that trains
    nothing (`kd-edge models`) otherwise never imports."""
    macs = 0

    def record(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs += output.numel() * kernel
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features

    forward_with_leaf_hook(model, input_shape, record)
    return macs


def require_divisible(what: str, image_size: int, multiple: int) -> None:
    """Networks that flatten their last feature map need the image to halve exactly at each pooling."""
    if image_size % multiple:
        below = max(multiple, image_size - image_size % multiple)
        raise ModelError(
            f"{what} needs an image size divisible by {multiple}, got {image_size}: use images of {below} or "
            f"{below + multiple} px a side (--image-size resizes a folder: dataset's), or a pooled-* model, which "
            "takes any size"
        )


# --- the reference script's two CNNs ---------------------------------------------------------


class SeedCNN(nn.Module):
    """The reference workflow's CNN: two 3x3 conv + ReLU + 2x2 max-pool blocks, then two linear layers."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, widths: tuple[int, int], hidden: int):
        super().__init__()
        require_divisible("the seed CNNs", image_size, 4)
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(widths[0], widths[1], kernel_size=3, padding=1)
        self.fc1 = nn.Linear(widths[1] * (image_size // 4) ** 2, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


@register_model("seed-teacher", "reference script's teacher: conv 32-64, fc 128")
def seed_teacher(num_classes, in_channels, image_size):
    return SeedCNN(num_classes, in_channels, image_size, widths=(32, 64), hidden=128)


@register_model("seed-student", "reference script's student: conv 16-32, fc 64")
def seed_student(num_classes, in_channels, image_size):
    return SeedCNN(num_classes, in_channels, image_size, widths=(16, 32), hidden=64)


@register_family("seed")
def seed_family(num_classes, in_channels, image_size, width: float = 1.0, depth: int = 1):
    """seed-student at ``width`` times its channels; the reference's layout has one conv per stage."""
    if depth != 1:
        raise ModelError("the seed family has one conv per stage: write seed@wWIDTH (e.g. seed@w0.5)")
    return SeedCNN(num_classes, in_channels, image_size, (scaled(16, width), scaled(32, width)), scaled(64, width))


# --- a configurable small CNN family ---------------------------------------------------------


class ConvStages(nn.Sequential):
    """Conv-BN-ReLU layers and 2x2 max-pools, run in order, except that in training a max-pool that follows a
    ReLU runs before it.

    ReLU(max-pool(x)) is max-pool(ReLU(x)) to the bit, and so are the gradients (ReLU never reorders values, so a
    window's maximum is the same element either way; where it is not positive both give 0), but the ReLU and its
    gradient then touch a quarter of the values: training steps of the cnn and pooled families took 2-12 % less
    time (benchmarks/results/pool-before-relu.md). Evaluation and export keep the written order, so the ONNX
    graph, where ONNX Runtime fuses each ReLU into its convolution, is what it was.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in pools_before_relus(list(self)) if self.training else self:
            x = layer(x)
        return x


def pools_before_relus(layers: list[nn.Module]) -> list[nn.Module]:
    """``layers`` with each ReLU that a max-pool follows moved after that max-pool."""
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return layers


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    # No conv bias: BatchNorm's shift replaces it, and export folds BN into the conv.
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Stages of ``depth`` conv-BN-ReLU layers, each stage ending in a 2x2 max-pool, then an MLP head.

    ``widths`` sets the channels of each stage (and so the number of stages).
    """

    def __init__(self, num_classes, in_channels, image_size, widths=(16, 32), depth=1, hidden=64):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or depth < 1:
            raise ModelError("cnn needs at least one stage (widths) and depth >= 1")
        require_divisible(f"cnn with {len(widths)} stages", image_size, 2 ** len(widths))
        layers, channels = [], in_channels
        for width in widths:
            for _ in range(depth):
                layers += conv_bn_relu(channels, width)
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = ConvStages(*layers)
        side = image_size // 2 ** len(widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


@register_model("cnn", "small CNN, configurable: widths=(16, 32), depth=1, hidden=64")
def cnn(num_classes, in_channels, image_size, widths=(16, 32), depth=1, hidden=64):
    return SmallCNN(num_classes, in_channels, image_size, widths, depth, hidden)


@register_model("cnn-tiny", "cnn widths 8-16, hidden 32")
def cnn_tiny(num_classes, in_channels, image_size):
    return SmallCNN(num_classes, in_channels, image_size, widths=(8, 16), hidden=32)


@register_model("cnn-small", "cnn widths 16-32, hidden 64 (seed-student's size, with BatchNorm)")
def cnn_small(num_classes, in_channels, image_size):
    return SmallCNN(num_classes, in_channels, image_size, widths=(16, 32), hidden=64)


@register_model("cnn-base", "cnn widths 32-64, hidden 128 (seed-teacher's size, with BatchNorm)")
def cnn_base(num_classes, in_channels, image_size):
    return SmallCNN(num_classes, in_channels, image_size, widths=(32, 64), hidden=128)


# --- camera-sized input: 64 to 224 px, colour, parameters that do not grow with the image ---------------


class PooledCNN(nn.Module):
    """Plain conv-BN-ReLU stages for camera-sized images: a stem (stride 2 from 64 px), then per stage a 2x2
    max-pool and ``depth`` 3x3 convs, then global average pooling and a linear classifier. Plain 3x3
    convolutions are what CPUs (x86 oneDNN, ARM NEON in ONNX Runtime) run fastest per MAC, in training too."""

    def __init__(self, num_classes, in_channels, image_size, widths=(32, 64, 128), depth=1, stem=16):
        super().__init__()
        stride = 2 if image_size >= CAMERA_SIZED else 1
        layers, channels = [*conv_bn_relu(in_channels, stem, stride)], stem
        for width in widths:
            layers.append(nn.MaxPool2d(2))
            for _ in range(depth):
                layers += conv_bn_relu(channels, width)
                channels = width
        self.features = ConvStages(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


# name: (network, its arguments, what it is)
CAMERA_MODELS = {
    "pooled-small": (PooledCNN, {"widths": (32, 64, 128), "depth": 1, "stem": 16}, "student: conv stages 32-64-128"),
    "pooled-base": (
        PooledCNN, {"widths": (64, 128, 256), "depth": 2, "stem": 32},
        "student or teacher: conv stages 64-128-256, two convs each",
    ),
    "pooled-large": (
        PooledCNN, {"widths": (96, 192, 384), "depth": 2, "stem": 32},
        "teacher: conv stages 96-192-384, two convs each",
    ),
    "mobile-small": (
        MobileCNN, {"widths": (24, 48, 96), "depth": 2, "stem": 16},
        "student: inverted residual stages 24-48-96, two blocks each",
    ),
}  # fmt: skip
for name, (network, arguments, description) in CAMERA_MODELS.items():
    register_model(name, f"camera-sized {description}, global pooling")(functools.partial(network, **arguments))


# --- torchvision models adapted to small inputs ----------------------------------------------
# Built with weights=None: nothing is downloaded. Their ImageNet stems downsample 4x
# (mobilenet) or 4x (resnet) at once, which leaves a 28x28 digit as a 7x7 blur, so
# below 64 pixels the stem keeps full resolution instead.


@register_model("mobilenet-v3-small", "torchvision MobileNetV3-Small, stem adapted to small inputs")
def mobilenet_v3_small(num_classes, in_channels, image_size):
    from torchvision.models import mobilenet_v3_small as build

    model = build(weights=None, num_classes=num_classes)
    stem = model.features[0][0]
    stride = 1 if image_size < 64 else 2
    model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, stride=stride, padding=1, bias=False)
    # torchvision's BatchNorm momentum of 0.01 is tuned for ImageNet's 600 epochs: in a run of a few hundred
    # steps the running statistics stay near their initial values, and the model in eval mode predicted one
    # class (RSSCN7 at 64 px: 80 % train accuracy after 8 epochs, 14.3 % validation, chance). 0.1 is torch's.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model


@register_model("mobilenet-v2", "torchvision MobileNetV2, stem adapted to small inputs")
def mobilenet_v2(num_classes, in_channels, image_size):
    from torchvision.models import mobilenet_v2 as build

    model = build(weights=None, num_classes=num_classes)
    stem = model.features[0][0]
    stride = 1 if image_size < 64 else 2
    model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, stride=stride, padding=1, bias=False)
    return model


@register_model("resnet18", "torchvision ResNet-18, CIFAR-style stem for small inputs")
def resnet18(num_classes, in_channels, image_size):
    from torchvision.models import resnet18 as build

    model = build(weights=None, num_classes=num_classes)
    if image_size < 64:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model

"""Quantization-aware training: fine-tune a distilled student with fake quantization, export QDQ ONNX.

    result = quantization_aware_training(QATConfig(run_dir="runs/fmnist"))

1. Fold BatchNorm into the convolutions (eval mode), so the fake-quantised weights
   are the ones the INT8 model will hold.
2. Insert fake quantization with torch.ao's FX graph mode (``prepare_qat_fx``):
   int8 weights, symmetric and per output channel; int8 activations per tensor,
   the scheme ONNX Runtime's S8S8 QDQ models use.
3. Fine-tune with the same loss as distillation, the teacher's soft labels
   computed once, as in ``kd-edge distill``.
4. Export with torch.onnx (the fake-quant nodes become QuantizeLinear /
   DequantizeLinear pairs) and check the result against the PyTorch model.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from torch.ao.quantization import disable_observer

from kd_edge.checkpoint import load_checkpoint
from kd_edge.config import TrainConfig
from kd_edge.data import load_dataset
from kd_edge.errors import CheckpointError, OutputError
from kd_edge.export import check_parity, onnx_metadata, parity_images, set_metadata, write_onnx
from kd_edge.io import ensure_writable_dir
from kd_edge.losses import distillation_loss
from kd_edge.quantize import QDQ_PROPAGATION
from kd_edge.runtime.bench import interleaved_latency_ms
from kd_edge.runtime.session import DISABLED_OPTIMIZERS_KEY, OnnxModel
from kd_edge.train import DeviceSplit, Normalizer, accuracy, fit, predict_logits

# Fake quantization rounds exactly as QuantizeLinear does, but the two runtimes
# accumulate in different orders, so an activation on a rounding boundary can land
# one step apart. Demand the same top-1 on almost every validation image, not bitwise logits.
QAT_MIN_AGREEMENT = 0.99
QAT_ATOL = 0.5


@dataclass(frozen=True)
class QATConfig:
    run_dir: str
    out_dir: str = "exports"
    epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 256
    data_dir: str | None = None
    opset: int = 17
    seed: int = 0
    latency_threads: int = 2
    force: bool = False


@dataclass(frozen=True)
class QATResult:
    path: Path
    fp32_test_accuracy: float
    qat_test_accuracy: float  # of the fake-quantised PyTorch model
    onnx_test_accuracy: float  # of the exported INT8 QDQ model, in ONNX Runtime
    top1_agreement: float
    fp32_layers: list[str]
    disabled_optimizers: list[str]
    latency_ms: dict  # {"fp32": {"batch1": .., "batch64": ..}, "int8": {...}}
    seconds: float


def qat_qconfig_mapping():
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver, QConfig, QConfigMapping

    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfigMapping().set_global(QConfig(activation=activation, weight=weight))


# An INT8 convolution over 1-4 input channels has too little work per output to pay
# for quantizing its input: on this machine ONNX Runtime's INT8 first conv of the seed
# student took 1,168 us at batch 64 against 124 us in FP32 (benchmarks/RESULTS.md).
FP32_FIRST_CONV_MAX_CHANNELS = 4


def prepare_for_qat(model: torch.nn.Module, input_shape) -> tuple[torch.nn.Module, list[str]]:
    """Fold BatchNorm, then insert fake quantization; returns the model and the layers left in FP32."""
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    from torch.fx.experimental.optimization import fuse

    folded = fuse(copy.deepcopy(model).eval())  # conv + BatchNorm -> conv with folded weights
    mapping = qat_qconfig_mapping()
    first_conv = next(((name, m) for name, m in folded.named_modules() if isinstance(m, torch.nn.Conv2d)), None)
    kept = []
    if first_conv is not None and first_conv[1].in_channels <= FP32_FIRST_CONV_MAX_CHANNELS:
        mapping.set_module_name(first_conv[0], None)
        kept.append(first_conv[0])
    return prepare_qat_fx(folded, mapping, (torch.zeros(1, *input_shape),)), kept


def quantization_aware_training(config: QATConfig, progress=None) -> QATResult:
    run_dir = Path(config.run_dir)
    student = load_checkpoint(run_dir / "student.pt")
    teacher_path = run_dir / "teacher.pt"
    out_dir = ensure_writable_dir(config.out_dir)
    path = out_dir / "student.qat.onnx"
    if path.exists() and not config.force:
        raise OutputError(f"{str(path)!r} already exists; pass --force to replace it or choose another --out")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    data_config = student.config.get("data", {})
    dataset = load_dataset(student.data["dataset"], config.data_dir or data_config.get("data_dir"), data_config.get("image_size"), download=False)
    device = torch.device("cpu")
    train, val, test = (DeviceSplit(getattr(dataset, name), device) for name in ("train", "val", "test"))
    normalize = Normalizer(student.data["mean"], student.data["std"], device)
    kd = student.config.get("kd", {"temperature": 4.0, "alpha": 1.0, "kd_loss": "kl"})
    soft_labels = teacher_soft_labels(teacher_path, dataset, train) if kd["alpha"] < 1.0 else None
    if kd["alpha"] < 1.0 and soft_labels is None:
        raise CheckpointError(f"{str(run_dir)!r} has no teacher.pt; QAT keeps the teacher's soft labels in the loss. Pass a run folder of `kd-edge distill`.")

    fp32_model = student.build_model().eval()
    fp32_accuracy = accuracy(fp32_model, test, normalize)
    model, kept_fp32 = prepare_for_qat(fp32_model, dataset.input_shape)

    def step(net, index, images, labels):
        logits = net(normalize(images))
        teacher_logits = soft_labels[index] if soft_labels is not None else None
        return {**distillation_loss(logits, teacher_logits, labels, kd["temperature"], kd["alpha"], kd["kd_loss"]), "logits": logits}

    recipe = TrainConfig(student.spec.name, epochs=config.epochs, batch_size=config.batch_size, optimizer="adamw", lr=config.lr, weight_decay=0.0, schedule="cosine")
    fit(model, train, val, normalize, recipe, step, stage="qat", seed=config.seed + 2, progress=progress)
    model.eval()
    model.apply(disable_observer)  # freeze the learnt ranges: export needs constant scales
    qat_accuracy = accuracy(model, test, normalize)

    quantization = {"mode": "qat", "format": "qdq", "per_channel": True, "activation_type": "int8", "weight_type": "int8", "fp32_layers": kept_fp32}
    metadata = {**onnx_metadata(student, config.opset), "kd_edge.quantization": json.dumps(quantization), "kd_edge.fp32_test_accuracy": json.dumps(fp32_accuracy)}
    images = parity_images(student, config.data_dir)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".qat-") as scratch:
        draft = Path(scratch) / path.name
        write_onnx(model, dataset.input_shape, draft, config.opset, metadata)
        parity = check_parity(model, draft, images, atol=QAT_ATOL, min_agreement=QAT_MIN_AGREEMENT)
        fp32_path = Path(scratch) / "fp32.onnx"
        write_onnx(fp32_model, dataset.input_shape, fp32_path, config.opset, metadata)
        disabled, latency = fastest_runtime_settings(fp32_path, draft, dataset.val.images, config.latency_threads)
        onnx_accuracy = OnnxModel(draft, disabled_optimizers=disabled).accuracy(dataset.test.images, dataset.test.labels)
        set_metadata(draft, {**metadata, "kd_edge.test_accuracy": json.dumps(onnx_accuracy), DISABLED_OPTIMIZERS_KEY: json.dumps(disabled)})
        draft.replace(path)
    return QATResult(path, fp32_accuracy, qat_accuracy, onnx_accuracy, parity.top1_agreement, kept_fp32, disabled, latency, time.perf_counter() - started)


def fastest_runtime_settings(fp32_path: Path, int8_path: Path, images, threads: int) -> tuple[list[str], dict]:
    """Time the QDQ model with and without QDQ propagation against FP32; keep the faster setting."""
    timings = {}
    for disabled in ([], [QDQ_PROPAGATION]):
        models = {"fp32": OnnxModel(fp32_path, threads), "int8": OnnxModel(int8_path, threads, disabled)}
        timings[tuple(disabled)] = {f"batch{b}": interleaved_latency_ms(models, images[:b], runs) for b, runs in ((1, 1000), (64, 100))}
    score = {key: t["batch1"]["int8"] * t["batch64"]["int8"] for key, t in timings.items()}
    best = min(score, key=score.get)
    return list(best), {name: {batch: t[name] for batch, t in timings[best].items()} for name in ("fp32", "int8")}


def teacher_soft_labels(path: Path, dataset, train: DeviceSplit):
    if not path.is_file():
        return None
    teacher = load_checkpoint(path)
    model = teacher.build_model().eval()
    return predict_logits(model, train, Normalizer(teacher.data["mean"], teacher.data["std"], train.images.device))

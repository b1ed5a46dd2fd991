"""Quantization-aware training: fine-tune a distilled student with fake quantization, export QDQ ONNX.

    result = quantization_aware_training(QATConfig(run_dir="runs/fmnist"))

1. Fold BatchNorm into the convolutions (eval mode), so the fake-quantised weights
   are the ones the INT8 model will hold.
2. Insert fake quantization with torch.ao's FX graph mode (``prepare_qat_fx``):
   int8 weights, symmetric per output channel on the grid ONNX Runtime's quantizer uses
   ([-64, 64] with its reduced range, kd-edge's default; [-127, 127] otherwise);
   int8 activations per tensor. A first convolution over 1-4 channels stays FP32.
3. Fine-tune with the loss the student was distilled with (its teacher or teachers,
   at its last temperature and alpha), through the same KD step and cached soft labels
   as ``kd-edge distill`` (``kd_edge.soft_labels``).
4. Write the learnt weights (already on their INT8 grid) as an FP32 ONNX graph and
   give it to ``kd-edge quantize``, which lays out QuantizeLinear/DequantizeLinear
   the way ONNX Runtime fuses into integer kernels, keeps slow nodes in FP32 and
   calibrates the activations. (Exporting the fake-quant graph directly puts the
   activation QDQ after max-pool and flatten, which ONNX Runtime cannot fuse: that
   model ran 2x slower than FP32 here.) The result must give the fake-quantised
   PyTorch model's top-1 class on 99 % of validation images.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.ao.quantization import disable_observer

from kd_edge.checkpoint import Checkpoint, load_checkpoint
from kd_edge.config import KDConfig, TrainConfig
from kd_edge.distill import DeviceDataset
from kd_edge.errors import OutputError
from kd_edge.export import check_parity, checkpoint_dataset, export_card, export_name, parity_images, write_onnx
from kd_edge.io import ensure_writable_dir
from kd_edge.quantize import LatencyComparison, QuantizeConfig, quantize, weight_qmax
from kd_edge.runtime.card import write_card
from kd_edge.runtime.session import OnnxModel
from kd_edge.soft_labels import KDWeights, kd_step, teachers_of_run
from kd_edge.train import Normalizer, accuracy, fit

# The INT8 model's activation ranges come from calibration, not from the QAT observers,
# and integer kernels round differently from fake quantization: demand the same top-1
# class on almost every validation image rather than close logits.
QAT_MIN_AGREEMENT = 0.99


@dataclass(frozen=True, kw_only=True)
class QATConfig:
    run_dir: str
    out_dir: str = "exports"
    epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 256
    data_dir: str | None = None
    opset: int = 17
    seed: int = 0
    reduce_range: bool = True  # weights on the 7-bit grid (see QuantizeConfig)
    optimize_latency: bool = True
    compare_latency: bool = True
    latency_threads: int = 2
    force: bool = False


@dataclass(frozen=True, kw_only=True)
class QATResult:
    path: Path
    fp32_test_accuracy: float
    qat_test_accuracy: float  # of the fake-quantised PyTorch model
    onnx_test_accuracy: float  # of the exported INT8 QDQ model, in ONNX Runtime
    top1_agreement: float
    fp32_layers: list[str]  # ONNX nodes the quantizer kept in FP32
    latency: LatencyComparison | None
    seconds: float


def qat_qconfig_mapping(reduce_range: bool):
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )

    activation = FakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver,
        quant_min=-128,
        quant_max=127,
        dtype=torch.qint8,
        qscheme=torch.per_tensor_affine,
    )
    # [-q, q] with scale max|w| / q: the grid ONNX Runtime's symmetric INT8 weights use,
    # so the learnt weights survive its quantizer exactly.
    weight = FakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver,
        quant_min=-weight_qmax(reduce_range),
        quant_max=weight_qmax(reduce_range),
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )
    return QConfigMapping().set_global(QConfig(activation=activation, weight=weight))


# An INT8 convolution over 1-4 input channels has too little work per output to pay
# for quantizing its input: on this machine ONNX Runtime's INT8 first conv of the seed
# student took 1,168 us at batch 64 against 124 us in FP32 (benchmarks/RESULTS.md).
FP32_FIRST_CONV_MAX_CHANNELS = 4


def prepare_for_qat(
    model: torch.nn.Module, input_shape, reduce_range: bool = True
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Fold BatchNorm, then insert fake quantization; returns (the QAT model, the folded FP32 model)."""
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    from torch.fx.experimental.optimization import fuse

    folded = fuse(copy.deepcopy(model).eval())  # conv + BatchNorm -> conv with folded weights
    mapping = qat_qconfig_mapping(reduce_range)
    first_conv = next(((name, m) for name, m in folded.named_modules() if isinstance(m, torch.nn.Conv2d)), None)
    if first_conv is not None and first_conv[1].in_channels <= FP32_FIRST_CONV_MAX_CHANNELS:
        mapping.set_module_name(first_conv[0], None)
    prepared = prepare_qat_fx(copy.deepcopy(folded), mapping, (torch.zeros(1, *input_shape),))
    # Fake-quantised layers train, bias included (BatchNorm folding leaves the bias it creates
    # frozen); a layer left in FP32 keeps its distilled weights: trained here, it would drift
    # from what the INT8 model ships, since only fake-quantised layers are copied into it.
    for module in prepared.modules():
        trains = getattr(module, "weight_fake_quant", None) is not None
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(trains)
    return prepared, folded


def with_learnt_weights(qat_model: torch.nn.Module, folded: torch.nn.Module) -> torch.nn.Module:
    """The folded FP32 model holding the QAT weights, already rounded to their INT8 grid.

    Only fake-quantised layers train (``prepare_for_qat`` freezes the rest), and every trained
    parameter is copied: the shipped model is the one QAT scored.
    """
    deployable = copy.deepcopy(folded)
    copied = set()
    with torch.no_grad():
        for name, module in qat_model.named_modules():
            fake_quant = getattr(module, "weight_fake_quant", None)
            if fake_quant is None:
                continue
            target = deployable.get_submodule(name)
            target.weight.copy_(fake_quant(module.weight))
            copied.add(f"{name}.weight")
            if module.bias is not None:
                target.bias.copy_(module.bias)
                copied.add(f"{name}.bias")
    lost = [name for name, p in qat_model.named_parameters() if p.requires_grad and name not in copied]
    if lost:
        raise RuntimeError(f"QAT trained parameters that the exported model would not hold: {lost}")
    return deployable.eval()


def quantization_aware_training(config: QATConfig, progress=None) -> QATResult:
    run_dir = Path(config.run_dir)
    student = load_checkpoint(run_dir / "student.pt")
    out_dir = ensure_writable_dir(config.out_dir)
    path = out_dir / f"{export_name(run_dir / 'student.pt')}.qat.onnx"
    if path.exists() and not config.force:
        raise OutputError(f"{str(path)!r} already exists; pass --force to replace it or choose another --out")
    started = time.perf_counter()
    dataset = checkpoint_dataset(student, config.data_dir)
    data_dir = config.data_dir or student.card.data.data_dir
    splits = DeviceDataset(dataset, student.card.data, torch.device("cpu"), precision="fp32")
    train, val, test = splits.train, splits.val, splits.test
    normalize = Normalizer(student.card.mean, student.card.std, splits.device)
    # The loss the student learnt with, at its final temperature and alpha, from the same teacher(s).
    teachers = teachers_of_run(run_dir, student, splits.device)
    if teachers is not None:
        teachers.cache(train)
    weights = final_kd_weights(student)

    fp32_model = student.build_model().eval()
    fp32_accuracy = accuracy(fp32_model, test, normalize)
    model, folded = prepare_for_qat(fp32_model, dataset.input_shape, config.reduce_range)

    recipe = TrainConfig(
        model=student.spec.name,
        epochs=config.epochs,
        batch_size=config.batch_size,
        optimizer="adamw",
        lr=config.lr,
        weight_decay=0.0,
        schedule="cosine",
    )
    step = kd_step(normalize, teachers, weights)
    fit(model, train, val, normalize, recipe, step, stage="qat", seed=config.seed + 2, progress=progress)
    model.eval()
    model.apply(disable_observer)  # freeze the learnt ranges
    qat_accuracy = accuracy(model, test, normalize)

    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".qat-") as scratch:
        learnt = Path(scratch) / "student.qat-fp32.onnx"
        write_onnx(
            with_learnt_weights(model, folded), export_card(student, fp32_model, config.opset), learnt, config.opset
        )
        quantized = quantize(
            QuantizeConfig(
                model=str(learnt),
                out=str(Path(scratch) / path.name),
                data_dir=data_dir,
                reduce_range=config.reduce_range,
                optimize_latency=config.optimize_latency,
                compare_latency=config.compare_latency,
                latency_threads=config.latency_threads,
                force=True,
            )
        )
        parity = check_parity(
            model, quantized.path, parity_images(dataset), atol=float("inf"), min_agreement=QAT_MIN_AGREEMENT
        )
        card = OnnxModel(quantized.path).card
        write_card(
            quantized.path,
            replace(
                card,
                quantization={**card.quantization, "mode": "qat", "qat_epochs": config.epochs},
                fp32_test_accuracy=fp32_accuracy,
            ),
        )
        quantized.path.replace(path)
    return QATResult(
        path=path,
        fp32_test_accuracy=fp32_accuracy,
        qat_test_accuracy=qat_accuracy,
        onnx_test_accuracy=quantized.int8_test_accuracy,
        top1_agreement=parity.top1_agreement,
        fp32_layers=quantized.excluded_nodes,
        latency=quantized.latency,
        seconds=time.perf_counter() - started,
    )


def final_kd_weights(student: Checkpoint) -> KDWeights:
    """The temperature and alpha of the student's last epoch (its schedules' end), or the student-alone loss."""
    kd = {k: v for k, v in student.config.get("kd", {}).items() if k in KDConfig.__dataclass_fields__}
    weights = KDWeights(KDConfig(**kd) if kd else KDConfig(alpha=1.0))
    history = student.metrics.get("history") or []
    if history:
        weights.temperature = history[-1].get("temperature", weights.temperature)
        weights.alpha = history[-1].get("alpha", weights.alpha)
    return weights

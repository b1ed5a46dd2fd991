"""Quantization-aware training: fine-tune a distilled student with fake quantization, export QDQ ONNX.

    tuned = fine_tune("runs/fmnist", QATSettings(epochs=2))
    write_learnt(tuned, "student.qat-fp32.onnx")   # then `kd-edge quantize` (kd_edge.pipeline.chains.qat_to_int8)

1. Fold BatchNorm into the convolutions (eval mode), so the fake-quantised weights
   are the ones the INT8 model will hold.
2. Capture the folded model with torch.export and insert fake quantization with torchao's
   PT2E flow (``prepare_qat_pt2e``), annotated by ``OrtQuantizer`` the way ONNX Runtime's
   quantizer will quantize it: the weights of every convolution and linear layer int8,
   symmetric per output channel on its grid ([-64, 64] with its reduced range, kd-edge's
   default; [-127, 127] otherwise); their input activations int8 per tensor, asymmetric,
   as ONNX Runtime calibrates them. A first convolution over 1-4 channels stays FP32 (it
   is faster in FP32 in a plain ONNX Runtime session) and keeps training in FP32.
3. Fine-tune with the loss the student was distilled with (its teacher or teachers,
   at its last temperature and alpha), through the same KD step and cached soft labels
   as ``kd-edge distill`` (``kd_edge.training.soft_labels``).
4. Write the learnt weights (the quantised layers' already on their INT8 grid) as an
   FP32 ONNX graph (``write_learnt``) for ``kd-edge quantize``, which lays out
   QuantizeLinear/DequantizeLinear the way ONNX Runtime fuses into integer kernels, keeps
   the first convolution in FP32 as QAT did, and calibrates the activations. (Exporting
   the fake-quant graph directly puts the activation QDQ after max-pool and flatten, which
   ONNX Runtime cannot fuse: that model ran 2x slower than FP32 here.) The result must give
   the fake-quantised PyTorch model's top-1 class on 99 % of validation images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from kd_edge.data import ImageDataset
from kd_edge.deploy.from_checkpoint import checkpoint_dataset, export_card
from kd_edge.deploy.onnx_graph import write_onnx
from kd_edge.log import quiet_loggers
from kd_edge.settings.deploy import QATSettings, QuantizeSettings
from kd_edge.settings.training import KDSettings, OptimSettings
from kd_edge.training.batches import Normalizer
from kd_edge.training.checkpoint import Checkpoint, load_checkpoint
from kd_edge.training.evaluate import accuracy
from kd_edge.training.fit import FitHooks, FitPlan, fit
from kd_edge.training.soft_labels import KDWeights, kd_step, teachers_of_run
from kd_edge.training.splits import DeviceDataset


@dataclass(frozen=True, kw_only=True)
class FineTuned:
    """A student after quantization-aware fine-tuning (observers frozen), and what its INT8 model must match."""

    model: torch.nn.Module  # fake-quantised
    folded: torch.nn.Module  # the student with BatchNorm folded, whose weights the learnt ones replace
    fp32_layers: list[str]  # layers QAT kept in FP32 (a 1-4 channel first convolution)
    student: Checkpoint
    dataset: ImageDataset
    data_dir: str | None
    fp32_test_accuracy: float
    qat_test_accuracy: float  # of the fake-quantised PyTorch model


# An INT8 convolution over 1-4 input channels has too little work per output to pay
# for quantizing its input: on this machine ONNX Runtime's INT8 first conv of the seed
# student took 1,168 us at batch 64 against 124 us in FP32 (benchmarks/RESULTS.md).
FP32_FIRST_CONV_MAX_CHANNELS = 4
QUANTIZED_OPS = ("conv2d", "linear")


def ort_quantizer(reduce_range: bool, skip: set[str]):
    """A torchao PT2E quantizer that fake-quantises what ONNX Runtime's static INT8 quantizer will quantize.

    ``skip`` names the layers (their parameter's prefix, as in ``conv1``) that stay FP32.
    """
    from torchao.quantization.pt2e import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, QuantizationSpec, Quantizer

    qmax = QuantizeSettings(reduce_range=reduce_range).weight_qmax

    activation = QuantizationSpec(
        dtype=torch.int8,
        observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver),
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
    )
    # [-q, q] with scale max|w| / q: the grid ONNX Runtime's symmetric INT8 weights use,
    # so the learnt weights survive its quantizer exactly.
    weight = QuantizationSpec(
        dtype=torch.int8,
        observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver),
        quant_min=-qmax,
        quant_max=qmax,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )

    class OrtQuantizer(Quantizer):
        def annotate(self, model):
            for node in quantized_layers(model):
                if layer_name(node) not in skip:
                    inputs = {node.args[0]: activation, node.args[1]: weight}
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map=inputs, _annotated=True
                    )
            return model

        def validate(self, model) -> None:
            pass

    return OrtQuantizer()


def quantized_layers(graph_module) -> list:
    """The convolution and linear nodes of a captured graph, in execution order."""
    return [
        node
        for node in graph_module.graph.nodes
        if node.op == "call_function" and getattr(node.target, "__name__", "").split(".")[0] in QUANTIZED_OPS
    ]


def layer_name(node) -> str:
    """``conv1`` for a node whose weight is the parameter ``conv1.weight``."""
    return node.args[1].target.rsplit(".", 1)[0]


def prepare_for_qat(
    model: torch.nn.Module, input_shape, reduce_range: bool
) -> tuple[torch.nn.Module, torch.nn.Module, list[str]]:
    """Fold BatchNorm, capture, insert fake quantization.

    Returns the QAT model (a torch.export graph module that trains and evaluates like any
    module), the folded FP32 model, and the layers kept in FP32.
    """
    from torch.fx.experimental.optimization import fuse
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    folded = fuse(copy.deepcopy(model).eval())  # conv + BatchNorm -> conv with folded weights
    captured = torch.export.export(
        copy.deepcopy(folded), (torch.zeros(2, *input_shape),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    ).module()
    convs = [node for node in quantized_layers(captured) if "conv" in node.target.__name__]
    fp32_layers = []
    if convs and convs[0].args[1].meta["val"].shape[1] <= FP32_FIRST_CONV_MAX_CHANNELS:
        fp32_layers.append(layer_name(convs[0]))
    prepared = prepare_qat_pt2e(captured, ort_quantizer(reduce_range, set(fp32_layers)))
    allow_exported_model_train_eval(prepared)  # fit() and accuracy() switch train and eval
    return prepared, folded, fp32_layers


def with_learnt_weights(qat_model: torch.nn.Module, folded: torch.nn.Module) -> torch.nn.Module:
    """The folded FP32 model holding every QAT parameter; a fake-quantised weight as rounded to its INT8 grid.

    The shipped model is the one QAT scored.
    """
    deployable = copy.deepcopy(folded)
    parameters = dict(qat_model.named_parameters())
    on_grid = {}
    for node in qat_model.graph.nodes:
        # A weight reaches its layer through its fake-quantize module: call_module(fake_quant, get_attr(weight)).
        if node.op == "call_module" and node.args and getattr(node.args[0], "op", None) == "get_attr":
            name = node.args[0].target
            if name in parameters:
                on_grid[name] = qat_model.get_submodule(node.target)(parameters[name])
    with torch.no_grad():
        for name, target in deployable.named_parameters():
            if name not in parameters:
                raise RuntimeError(f"QAT has no parameter {name!r} to give the exported model")
            target.copy_(on_grid.get(name, parameters[name]))
    return deployable.eval()


def fine_tune(run_dir, settings: QATSettings | None = None, *, data_dir: str | None = None, progress=None) -> FineTuned:
    """Fine-tune the student of ``run_dir`` (a `kd-edge distill` run folder) with fake INT8 quantization."""
    with quiet_loggers("torch.utils._pytree"):  # torchao's import registers an Enum: torch logs a deprecation
        from torchao.quantization.pt2e import disable_observer

    settings = settings or QATSettings()
    run_dir = Path(run_dir)
    student = load_checkpoint(run_dir / "student.pt")
    dataset = checkpoint_dataset(student, data_dir)
    splits = DeviceDataset(dataset, student.card.data, torch.device("cpu"), precision="fp32")
    normalize = Normalizer(student.card.mean, student.card.std, splits.device)
    # The loss the student learnt with, at its final temperature and alpha, from the same teacher(s).
    teachers = teachers_of_run(run_dir, student, splits.device)
    if teachers is not None:
        teachers.cache(splits.train, "fp32")
    fp32_model = student.build_model().eval()
    fp32_accuracy = accuracy(fp32_model, splits.test, normalize)
    model, folded, fp32_layers = prepare_for_qat(fp32_model, dataset.input_shape, settings.quantize.reduce_range)
    optim = OptimSettings(
        batch_size=settings.batch_size, optimizer="adamw", lr=settings.lr, weight_decay=0.0, schedule="cosine"
    )
    plan = FitPlan(
        model=model,
        train=splits.train,
        val=splits.val,
        normalize=normalize,
        epochs=settings.epochs,
        optim=optim,
        step_fn=kd_step(normalize, teachers, final_kd_weights(student)),
        stage="qat",
        seed=settings.run.seed + 2,
    )
    fit(plan, FitHooks(progress=progress) if progress is not None else None)
    model.eval()
    model.apply(disable_observer)  # freeze the learnt ranges
    return FineTuned(
        model=model,
        folded=folded,
        fp32_layers=fp32_layers,
        student=student,
        dataset=dataset,
        data_dir=data_dir or student.card.data.data_dir,
        fp32_test_accuracy=fp32_accuracy,
        qat_test_accuracy=accuracy(model, splits.test, normalize),
    )


def write_learnt(tuned: FineTuned, path) -> Path:
    """The learnt weights (the quantised layers' on their INT8 grid) as an FP32 ONNX model with the student's card."""
    path = Path(path)
    card = export_card(tuned.student, tuned.student.build_model())  # parameters counted before folding
    write_onnx(with_learnt_weights(tuned.model, tuned.folded), card, path)
    return path


def first_conv_node(path: Path) -> str:
    """The ONNX name of a graph's first convolution (QAT keeps only that layer in FP32)."""
    import onnx

    return next(node.name for node in onnx.load(str(path)).graph.node if node.op_type == "Conv")


def final_kd_weights(student: Checkpoint) -> KDWeights:
    """The temperature and alpha of the student's last epoch (its schedules' end), or the student-alone loss."""
    kd = {k: v for k, v in student.config.get("kd", {}).items() if k in KDSettings.__dataclass_fields__}
    weights = KDWeights(KDSettings(**kd) if kd else KDSettings(alpha=1.0))
    history = student.metrics.get("history") or []
    if history:
        weights.temperature = history[-1].get("temperature", weights.temperature)
        weights.alpha = history[-1].get("alpha", weights.alpha)
    return weights

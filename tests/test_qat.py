"""Quantization-aware training: fine-tunes with fake quantization and exports a QDQ model that matches PyTorch."""

import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.errors import CheckpointError, OutputError
from kd_edge.pipeline.chains import qat_to_int8
from kd_edge.runtime import read_onnx_metadata
from kd_edge.settings import QATSettings, QuantizeSettings

pytestmark = pytest.mark.slow  # quantization-aware training and ONNX Runtime's quantizer

# One epoch at batch 32, no latency search and no timing: what these tests check is the model.
QUICK = QATSettings(epochs=1, batch_size=32, quantize=QuantizeSettings(optimize_latency=False, compare_latency=False))


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory, easy_npz):
    out = tmp_path_factory.mktemp("qat") / "run"
    result = CliRunner().invoke(
        app,
        [
            "distill",
            "--dataset",
            f"npz:{easy_npz}",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--student-model",
            "cnn-tiny",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_qat_exports_a_qdq_model_that_agrees_with_pytorch(tmp_path, distilled_run):
    from kd_edge.data import load_data
    from kd_edge.runtime import OnnxModel

    result = qat_to_int8(distilled_run, tmp_path / "exports", QUICK)
    graph = onnx.load(str(result.path)).graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert result.top1_agreement >= 0.99
    assert abs(result.onnx_test_accuracy - result.qat_test_accuracy) <= 0.05
    # The accuracy reported is the shipped file's, recomputed here by a plain reader.
    shipped = OnnxModel(result.path)
    test = load_data(shipped.card.data).test
    assert shipped.accuracy(test.images, test.labels) == result.onnx_test_accuracy
    # The 1-channel first convolution stays FP32 in the file, as QAT trained it (no QDQ in front of it).
    first_conv = next(node for node in graph.node if node.op_type == "Conv")
    initializers = {init.name: init for init in graph.initializer}
    assert first_conv.input[1] in initializers and initializers[first_conv.input[1]].data_type == onnx.TensorProto.FLOAT
    assert result.fp32_layers == [first_conv.name]
    meta = read_onnx_metadata(result.path)
    assert (
        json.loads(meta["kd_edge.quantization"])["mode"] == "qat"
        and json.loads(meta["kd_edge.quantization"])["qat_epochs"] == 1
    )
    assert json.loads(meta["kd_edge.input_shape"]) == [1, 16, 16] and "kd_edge.calibration" in meta
    with pytest.raises(OutputError, match="--force"):
        qat_to_int8(distilled_run, tmp_path / "exports", QUICK)


def trained_qat_model(distilled_run, steps=3):
    """A QAT model of the distilled student after a few optimiser steps on random data, in eval mode."""
    from torchao.quantization.pt2e import disable_observer

    from kd_edge.deploy.qat import prepare_for_qat
    from kd_edge.training.checkpoint import load_checkpoint

    model, folded, fp32_layers = prepare_for_qat(
        load_checkpoint(distilled_run / "student.pt").build_model(), (1, 16, 16), reduce_range=True
    )
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 16, 16)), torch.randint(0, 3, (8,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()  # torchao's train/eval of a captured model return None
    model.apply(disable_observer)  # as fine_tune freezes the learnt ranges
    return model, folded, fp32_layers


def test_learnt_weights_sit_on_the_int8_grid(distilled_run):
    from kd_edge.deploy.qat import with_learnt_weights

    model, folded, _ = trained_qat_model(distilled_run)
    deployable = with_learnt_weights(model, folded)
    conv = deployable.get_submodule("features.4")  # the second conv: quantized (the 1-channel first one stays FP32)
    weight = conv.weight.detach().flatten(1)
    # The grid is the one its fake quantizer holds: each channel's scale as last observed, which a channel's largest
    # weight need not reach once the optimiser has moved it.
    (quantizer,) = [
        model.get_submodule(node.target)
        for node in model.graph.nodes
        if node.op == "call_module" and node.args and getattr(node.args[0], "target", None) == "features.4.weight"
    ]
    steps = weight / quantizer.scale.flatten()[:, None]
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # every weight is an integer number of steps
    assert steps.round().abs().max() <= QuantizeSettings().weight_qmax  # within the grid (reduce_range's, the default)


def test_the_fp32_first_convolution_trains_and_ships_as_trained(distilled_run):
    """The first conv (1 channel) has no fake quantization: it trains in FP32, and the model handed to the
    quantizer holds its trained weights, with every other layer's, so what ships is what QAT scored."""
    from kd_edge.deploy.qat import with_learnt_weights

    model, folded, fp32_layers = trained_qat_model(distilled_run)
    assert fp32_layers == ["features.0"]
    trained = dict(model.named_parameters())["features.0.weight"].detach()
    assert not torch.allclose(trained, folded.get_submodule("features.0").weight)  # it did train
    deployable = with_learnt_weights(model, folded)
    assert torch.equal(deployable.get_submodule("features.0").weight, trained)
    # With its activations' fake quantizers off, the QAT model computes what the deployable one does: the weights,
    # on their INT8 grid, are the same. (With them on, outputs also differ by the activations' rounding and their
    # clipping to the ranges the observers last saw, which lag behind weights that moved: no tolerance holds.)
    for node in model.graph.nodes:
        if node.op == "call_module" and node.args and getattr(node.args[0], "op", None) != "get_attr":
            module = model.get_submodule(node.target)
            if hasattr(module, "disable_fake_quant"):  # the graph's other modules (guards) are not quantizers
                module.disable_fake_quant()
    images = torch.randn(16, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(deployable(images), model(images), atol=1e-5)


def test_cli_qat_without_a_run(tmp_path):
    result = CliRunner().invoke(app, ["qat", str(tmp_path)])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_cli_qat_finds_a_teacher_given_with_dash_dash_teacher(tmp_path, easy_npz, distilled_run):
    out = tmp_path / "second"
    result = CliRunner().invoke(
        app,
        [
            "distill",
            "--dataset",
            f"npz:{easy_npz}",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--student-model",
            "cnn-tiny",
            "--teacher",
            str(distilled_run / "teacher.pt"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert not (out / "teacher.pt").exists()
    args = ["qat", str(out), "--epochs", "1", "--out", str(tmp_path / "q"), "--no-optimize-latency",
            "--no-compare-latency"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "after QAT" in result.output and (tmp_path / "q" / "second.qat.onnx").is_file()


def test_qat_of_a_student_trained_alone_needs_no_teacher(tmp_path, easy_npz):
    out = tmp_path / "alone"
    result = CliRunner().invoke(
        app,
        [
            "distill",
            "--dataset",
            f"npz:{easy_npz}",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--student-model",
            "cnn-tiny",
            "--alpha",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert not (out / "teacher.pt").exists()
    qat = qat_to_int8(out, tmp_path / "q", QUICK)
    assert qat.path.is_file() and qat.top1_agreement >= 0.99


def test_qat_refuses_a_run_whose_teacher_is_gone(tmp_path, distilled_run):
    import shutil

    run = shutil.copytree(distilled_run, tmp_path / "run")
    (run / "teacher.pt").unlink()
    with pytest.raises(CheckpointError, match="is missing; fine-tuning keeps the teacher's soft labels"):
        qat_to_int8(run, tmp_path / "q", QUICK)
    assert not (tmp_path / "q" / "run.qat.onnx").exists()


def test_qat_refuses_a_teacher_replaced_since_distillation(tmp_path, distilled_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(distilled_run, run)
    teacher = torch.load(run / "teacher.pt", weights_only=True)
    teacher["metrics"]["note"] = "retrained later"
    torch.save(teacher, run / "teacher.pt")
    with pytest.raises(CheckpointError, match="not the ones its student learnt from"):
        qat_to_int8(run, tmp_path / "q", QATSettings(epochs=1))

"""Quantization-aware training: fine-tunes with fake quantization and exports a QDQ model that matches PyTorch."""

import json

import onnx
import pytest
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.errors import OutputError
from kd_edge.qat import QATConfig, quantization_aware_training
from kd_edge.runtime import read_onnx_metadata


@pytest.fixture
def distilled_run(tmp_path, easy_npz):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["distill", "--dataset", f"npz:{easy_npz}", "--epochs", "3", "--batch-size", "32", "--student-model", "cnn-tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_qat_exports_a_qdq_model_that_agrees_with_pytorch(tmp_path, distilled_run):
    result = quantization_aware_training(QATConfig(str(distilled_run), str(tmp_path / "exports"), epochs=1, batch_size=32))
    ops = [node.op_type for node in onnx.load(str(result.path)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert result.top1_agreement >= 0.99
    assert abs(result.onnx_test_accuracy - result.qat_test_accuracy) <= 0.05
    assert result.fp32_layers == ["features.0"]  # the 1-channel first conv stays FP32
    meta = read_onnx_metadata(result.path)
    assert json.loads(meta["kd_edge.quantization"])["mode"] == "qat"
    assert json.loads(meta["kd_edge.input_shape"]) == [1, 16, 16]
    assert json.loads(meta["kd_edge.ort_disabled_optimizers"]) == result.disabled_optimizers
    with pytest.raises(OutputError, match="--force"):
        quantization_aware_training(QATConfig(str(distilled_run), str(tmp_path / "exports"), epochs=1, batch_size=32))


def test_cli_qat(tmp_path, distilled_run):
    result = CliRunner().invoke(app, ["qat", str(distilled_run), "--epochs", "1", "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert "after QAT" in result.output and (tmp_path / "q" / "student.qat.onnx").is_file()


def test_cli_qat_without_a_run(tmp_path):
    result = CliRunner().invoke(app, ["qat", str(tmp_path)])
    assert result.exit_code == 1 and "does not exist" in result.output

"""INT8 quantization with ONNX Runtime: accuracy budget, fallback, metadata, latency report, bad input."""

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.errors import DatasetError, ModelFileError, OutputError, QuantizationError
from kd_edge.quantize import QuantizeConfig, quantize
from kd_edge.runtime import OnnxModel, read_onnx_metadata


def quick(model, **changes):
    return QuantizeConfig(model=str(model), **{"calibration_size": 60, "optimize_latency": False, "compare_latency": False, **changes})


def test_static_int8_within_budget(fp32_model):
    result = quantize(quick(fp32_model))
    assert result.path == fp32_model.with_name("student.int8.onnx")
    assert result.accuracy_drop_points <= 0.5
    model = OnnxModel(result.path)  # loads, and still describes its input
    assert model.input_shape == (1, 16, 16)
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert result.int8_bytes < result.fp32_bytes == fp32_model.stat().st_size
    assert result.latency is None  # compare_latency=False starts no timing process


def test_latency_search_is_measured_and_recorded(fp32_model):
    result = quantize(quick(fp32_model, optimize_latency=True))
    tried = result.latency_search
    assert tried and all(entry["batch1"] > 0 and entry["batch64"] > 0 for entry in tried)
    assert {tuple(entry["disabled_optimizers"]) for entry in tried} == {(), ("QDQPropagationTransformer",)}
    same_nodes = [e for e in tried if e["fp32_nodes"] == result.excluded_nodes]
    last_pair = same_nodes[-2:]  # the latest measurement of the chosen nodes, in both modes
    assert min(last_pair, key=lambda e: e["score"])["disabled_optimizers"] == result.disabled_optimizers
    assert json.loads(read_onnx_metadata(result.path)["kd_edge.ort_disabled_optimizers"]) == result.disabled_optimizers
    assert OnnxModel(result.path).disabled_optimizers == result.disabled_optimizers


def test_calibration_is_recorded_in_the_model(fp32_model):
    result = quantize(quick(fp32_model, method="entropy"))
    meta = read_onnx_metadata(result.path)
    calibration = json.loads(meta["kd_edge.calibration"])
    assert calibration["split"] == "val" and calibration["method"] == "entropy"
    assert calibration["size"] == 18  # the whole validation split: 6 images of each of 3 classes
    assert len(calibration["indices_sha256"]) == 64
    assert json.loads(meta["kd_edge.quantization"])["format"] == "qdq"
    assert json.loads(meta["kd_edge.test_accuracy"]) == pytest.approx(result.int8_accuracy)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_with_uneven_sample_count(fp32_model, tmp_path, method):
    from tests.conftest import easy_images

    images, labels = easy_images(250)  # a validation split of 75: not a multiple of the batch
    np.savez(tmp_path / "more.npz", images=images, labels=labels)
    result = quantize(quick(fp32_model, method=method, calibration=f"npz:{tmp_path / 'more.npz'}", calibration_size=75, out=str(tmp_path / f"{method}.onnx")))
    assert result.calibration["size"] == 75 and result.int8_accuracy > 0.9


def test_qoperator_and_dynamic_formats(fp32_model, tmp_path):
    qop = quantize(quick(fp32_model, format="qoperator", out=str(tmp_path / "qop.onnx")))
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(qop.path)).graph.node}
    dyn = quantize(quick(fp32_model, mode="dynamic", out=str(tmp_path / "dyn.onnx")))
    assert OnnxModel(dyn.path).input_shape == (1, 16, 16)


def test_zero_budget_forces_exclusions_or_a_clean_refusal(fp32_model):
    out = fp32_model.with_name("zero.onnx")
    try:
        result = quantize(quick(fp32_model, max_accuracy_drop=0.0, out=str(out)))
    except QuantizationError as exc:
        assert "FP32 model is kept" in str(exc) and not out.exists()
    else:
        assert result.accuracy_drop_points <= 0.0
        if result.excluded_nodes:
            assert set(json.loads(read_onnx_metadata(out)["kd_edge.quantization"])["excluded_nodes"]) == set(result.excluded_nodes)


def test_exclusion_keeps_named_nodes_in_fp32(fp32_model, tmp_path):
    conv = next(n.name for n in onnx.load(str(fp32_model)).graph.node if n.op_type == "Conv")
    result = quantize(quick(fp32_model, exclude=(conv,), out=str(tmp_path / "ex.onnx")))
    assert conv in result.excluded_nodes


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("hello")
    with pytest.raises(ModelFileError, match="cannot load"):
        quantize(quick(bad))


def test_model_without_metadata_is_refused(tmp_path, fp32_model):
    proto = onnx.load(str(fp32_model))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelFileError, match="lacks kd_edge.classes, kd_edge.input_shape, kd_edge.layout, kd_edge.mean, kd_edge.std"):
        quantize(quick(tmp_path / "bare.onnx"))


def test_calibration_data_of_the_wrong_shape(fp32_model):
    with pytest.raises(DatasetError, match=r"input \[1, 28, 28\]"):
        quantize(quick(fp32_model, calibration="mnist-5k"))


def test_calibration_set_too_small(fp32_model):
    with pytest.raises(QuantizationError, match="too small"):
        quantize(QuantizeConfig(model=str(fp32_model), calibration_size=4))


def test_existing_output_is_not_replaced(fp32_model):
    first = quantize(quick(fp32_model))
    before = first.path.read_bytes()
    with pytest.raises(OutputError, match="--force"):
        quantize(quick(fp32_model))
    assert first.path.read_bytes() == before


def test_cli_quantize_reports_both_models_with_their_latency(fp32_model):
    result = CliRunner().invoke(app, ["quantize", str(fp32_model), "--calibration-size", "60", "--method", "percentile", "--no-optimize-latency"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line.split() for line in result.output.splitlines() if line.startswith("│ fp32") or line.startswith("│ int8")}
    assert set(rows) == {"fp32", "int8"} and "accuracy drop" in result.output
    for cells in rows.values():
        batch1, batch64 = float(cells[-4]), float(cells[-2])  # "│ int8 │ size │ acc │ b1 │ b64 │"
        assert 0 < batch1 < batch64


def test_cli_export_int8(tmp_path, student_checkpoint):
    result = CliRunner().invoke(app, ["export", str(student_checkpoint), "--onnx", "--int8", "--no-optimize-latency", "--no-compare-latency", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e" / "student.onnx").is_file() and (tmp_path / "e" / "student.int8.onnx").is_file()


def test_runtime_never_imports_torch(tmp_path, fp32_model):
    import subprocess
    import sys

    code = f"import sys, numpy as np; from kd_edge.runtime import OnnxModel; m = OnnxModel({str(fp32_model)!r}); m.predict(np.zeros((2, 1, 16, 16), np.uint8)); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"

"""INT8 quantization with ONNX Runtime: accuracy budget, fallback, metadata, latency report, bad input."""

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.deploy.quantize import quantize
from kd_edge.errors import DatasetError, ModelFileError, OutputError, QuantizationError
from kd_edge.runtime import OnnxModel, read_onnx_metadata
from kd_edge.settings import QuantizeSettings

INPUTS = ("out", "calibration", "data_dir", "force")


def quick(model, **changes):
    """Quantize ``model`` quickly: 60 calibration images, no timing; ``changes`` are settings or inputs."""
    inputs = {name: changes.pop(name) for name in INPUTS if name in changes}
    settings = {"calibration_size": 60, "optimize_latency": False, "compare_latency": False, **changes}
    return quantize(model, QuantizeSettings(**settings), **inputs)


def test_static_int8_within_budget(fp32_model):
    result = quick(fp32_model)
    assert result.path == fp32_model.with_name("run.int8.onnx")
    assert result.val_drop_points <= 0.5  # the budget is kept on validation
    model = OnnxModel(result.path)  # loads, and still describes its input
    assert model.input_shape == (1, 16, 16)
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert result.int8_bytes < result.fp32_bytes == fp32_model.stat().st_size
    assert result.latency is None  # compare_latency=False starts no timing process
    assert model.card.calibration["method"] == "minmax"  # --method auto's choice for a classifier
    # The frame's cast, layout and normalisation stay FP32: the first QuantizeLinear is the first Conv's input.
    graph = onnx.load(str(result.path)).graph
    producers = {output: node for node in graph.node for output in node.output}
    first_quantize = next(node for node in graph.node if node.op_type == "QuantizeLinear")
    before = [first_quantize]
    while before[-1].input[0] in producers:
        before.append(producers[before[-1].input[0]])
    assert [node.op_type for node in before[1:]] == ["Sub", "Mul", "Transpose", "Cast"]
    assert before[-1].input[0] == graph.input[0].name


@pytest.mark.slow
def test_latency_search_is_measured_and_recorded(fp32_model):
    import time

    from kd_edge.log import steps_shown

    times, messages = [time.perf_counter()], []
    with steps_shown(lambda message: (times.append(time.perf_counter()), messages.append(message))):
        result = quick(fp32_model, optimize_latency=True)
    times.append(time.perf_counter())
    assert max(np.diff(times)) < 3.0, messages  # the search, however long, says what it is timing as it goes
    assert any("latency search" in message for message in messages)
    tried = result.latency_search
    assert tried[0]["fp32_nodes"] == []  # it starts from every node in INT8
    assert all(entry["batch1"] > 0 and entry["batch64"] > 0 and entry["score"] > 0 for entry in tried)
    assert {tuple(entry["fp32_nodes"]) for entry in tried} >= {tuple(result.excluded_nodes)}
    assert OnnxModel(result.path).card.quantization["excluded_nodes"] == result.excluded_nodes


def test_latency_search_times_default_sessions_one_at_a_time(fp32_model, monkeypatch):
    """The search's figures must hold in any program: ONNX Runtime's default options (thread spinning on), and
    no second session idling beside the timed one."""
    import weakref

    from kd_edge.deploy.quantize_latency import latency_ratios
    from kd_edge.runtime import session

    opened, alive, most_alive = [], weakref.WeakSet(), []
    real_options, real_open = session.session_options, session.open_session

    def recording_options(*args, **kwargs):
        options = real_options(*args, **kwargs)
        try:
            opened.append(options.get_session_config_entry("session.intra_op.allow_spinning"))
        except RuntimeError:  # not set: ONNX Runtime's default
            opened.append("default")
        return options

    def recording_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        alive.add(handle)
        most_alive.append(len(alive))
        return handle

    monkeypatch.setattr(session, "session_options", recording_options)
    monkeypatch.setattr(session, "open_session", recording_open)
    images = np.zeros((64, 1, 16, 16), dtype=np.uint8)
    ratios = latency_ratios(fp32_model, fp32_model, images, threads=1)
    assert ratios["batch1"] > 0 and ratios["batch64"] > 0
    assert opened and set(opened) == {"default"} and max(most_alive) == 1


def test_default_exclusions_do_not_depend_on_timing(fp32_model, tmp_path, monkeypatch):
    """By default the excluded nodes come from the accuracy budget alone: no timing can change them."""
    from kd_edge.deploy import quantize as quantize_module

    monkeypatch.setattr(quantize_module, "search_latency", lambda *a: pytest.fail("timed by default"))
    settings = QuantizeSettings(calibration_size=60, compare_latency=False)
    first = quantize(fp32_model, settings, out=tmp_path / "a.onnx")
    again = quantize(fp32_model, settings, out=tmp_path / "b.onnx")
    assert first.excluded_nodes == again.excluded_nodes and not settings.optimize_latency


def ops_after_plain_session_optimisation(path, tmp_path) -> list[tuple[str, str]]:
    """(op type, producer's op type of its first input) of every node, as a default ONNX Runtime session runs it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "as-run.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    return [(node.op_type, producers.get(node.input[0], "graph input")) for node in graph.node]


def test_int8_with_an_fp32_first_conv_keeps_its_max_pool_in_fp32_in_a_plain_session(fp32_model, tmp_path, monkeypatch):
    from kd_edge.deploy import quantize as module

    first_conv = next(n.name for n in onnx.load(str(fp32_model)).graph.node if n.op_type == "Conv")
    result = quick(fp32_model, exclude=(first_conv,), out=str(tmp_path / "arranged.onnx"))
    ops = ops_after_plain_session_optimisation(result.path, tmp_path)
    # ONNX Runtime's INT8 max-pool in NCHW (a MaxPool fed by a QuantizeLinear) is the slow one.
    assert ("MaxPool", "QuantizeLinear") not in ops and any(op == "QLinearConv" for op, _ in ops)
    # Without the rearrangement the default session builds exactly that slow node: the check can fail.
    monkeypatch.setattr(module, "pool_before_relu", lambda model, fp32_nodes: model)
    trap = quick(fp32_model, exclude=(first_conv,), out=str(tmp_path / "trap.onnx"))
    assert ("MaxPool", "QuantizeLinear") in ops_after_plain_session_optimisation(trap.path, tmp_path)


def test_pool_before_relu_computes_the_same_values():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from kd_edge.deploy.quantize import pool_before_relu

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 4, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    untouched = pool_before_relu(onnx.ModelProto.FromString(model.SerializeToString()), fp32_nodes=set())
    assert [n.op_type for n in untouched.graph.node] == ["Conv", "Relu", "MaxPool"]  # the conv is not FP32-only
    swapped = pool_before_relu(onnx.ModelProto.FromString(model.SerializeToString()), fp32_nodes={"conv"})
    assert [n.op_type for n in swapped.graph.node] == ["Conv", "MaxPool", "Relu"]
    onnx.checker.check_model(swapped, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)

    def run(graph):
        return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
            0
        ]

    assert np.array_equal(run(model), run(swapped))


def test_calibration_is_recorded_in_the_model(fp32_model):
    result = quick(fp32_model, method="entropy")
    meta = read_onnx_metadata(result.path)
    calibration = json.loads(meta["kd_edge.calibration"])
    assert calibration["split"] == "val" and calibration["method"] == "entropy"
    assert calibration["size"] == 15 and calibration["budget_images"] == 15  # half the 30 validation images each
    assert len(calibration["indices_sha256"]) == 64
    assert json.loads(meta["kd_edge.quantization"])["format"] == "qdq"
    assert json.loads(meta["kd_edge.test_accuracy"]) == pytest.approx(result.int8_test_accuracy)


def test_the_accuracy_budget_is_judged_on_validation_images_the_calibration_never_saw(easy_npz):
    from kd_edge.data import load_dataset
    from kd_edge.deploy.quantize import calibration_sample

    dataset = load_dataset(f"npz:{easy_npz}")
    calibration, info, judge = calibration_sample(dataset, 500, "minmax")  # asks for more than there is
    seen = {image.tobytes() for image in calibration}
    assert len(calibration) + len(judge.images) == len(dataset.val) and len(calibration) <= len(dataset.val) // 2
    assert not any(image.tobytes() in seen for image in judge.images)
    assert np.bincount(judge.labels).min() > 0 and info["budget_images"] == len(judge.images)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_with_uneven_sample_count(fp32_model, tmp_path, method):
    from tests.conftest import easy_images

    images, labels = easy_images(500)  # a validation split of 150: 75 calibrate (not a multiple of the batch)
    np.savez(tmp_path / "more.npz", images=images, labels=labels)
    result = quick(
        fp32_model,
        method=method,
        calibration=f"npz:{tmp_path / 'more.npz'}",
        calibration_size=75,
        out=str(tmp_path / f"{method}.onnx"),
    )
    assert result.calibration["size"] == 75 and result.calibration["budget_images"] == 75  # the split in two
    assert result.int8_test_accuracy > 0.9


def test_qoperator_and_dynamic_formats(fp32_model, tmp_path):
    qop = quick(fp32_model, format="qoperator", out=str(tmp_path / "qop.onnx"))
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(qop.path)).graph.node}
    dyn = quick(fp32_model, dynamic=True, out=str(tmp_path / "dyn.onnx"))
    assert OnnxModel(dyn.path).input_shape == (1, 16, 16)


class ScriptedModel:
    """Stands for an INT8 model whose accuracy depends only on which nodes are kept in FP32."""

    def __init__(self, excluded, accuracy_of):
        self.value = accuracy_of(frozenset(excluded))

    def accuracy(self, images, labels):
        return self.value


def scripted_budget(monkeypatch, accuracy_of, nodes=("a", "b", "c"), excluded=(), budget=0.5):
    from types import SimpleNamespace

    from kd_edge.deploy import quantize as module

    monkeypatch.setattr(module, "quantizable_nodes", lambda prepared: list(nodes))
    val = SimpleNamespace(images=None, labels=None)
    build = lambda excluded: ScriptedModel(excluded, accuracy_of)  # noqa: E731
    return module.fit_budget(build, None, val, 0.90, list(excluded), budget)


def test_budget_keeps_the_most_helpful_node_in_fp32_first(monkeypatch):
    # Keeping b in FP32 recovers most; with b and then a kept the drop fits 0.5 points.
    gains = {"a": 0.03, "b": 0.05, "c": 0.01}
    excluded, accuracy = scripted_budget(monkeypatch, lambda kept: 0.82 + sum(gains[n] for n in kept))
    assert excluded == ["b", "a"] and accuracy == pytest.approx(0.90)


def test_budget_that_cannot_be_met_is_a_clean_refusal(monkeypatch):
    with pytest.raises(QuantizationError, match=r"no INT8 model stays within --max-accuracy-drop 0\.5 points"):
        scripted_budget(monkeypatch, lambda kept: 0.5)


def test_budget_with_every_node_already_excluded_is_a_clean_refusal(monkeypatch):
    with pytest.raises(QuantizationError, match=r"3 quantizable node\(s\) kept in FP32 \(all of them\)"):
        scripted_budget(monkeypatch, lambda kept: 0.5, excluded=("a", "b", "c"))


def test_exclusion_keeps_named_nodes_in_fp32(fp32_model, tmp_path):
    conv = next(n.name for n in onnx.load(str(fp32_model)).graph.node if n.op_type == "Conv")
    result = quick(fp32_model, exclude=(conv,), out=str(tmp_path / "ex.onnx"))
    assert conv in result.excluded_nodes


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("hello")
    with pytest.raises(ModelFileError, match=r"cannot load|not a well-formed ONNX file"):
        quick(bad)


def test_model_without_metadata_is_refused(tmp_path, fp32_model):
    proto = onnx.load(str(fp32_model))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(
        ModelFileError,
        match=r"lacks kd_edge\.classes, kd_edge\.input_shape, kd_edge\.layout, kd_edge\.mean, kd_edge\.std",
    ):
        quick(tmp_path / "bare.onnx")


def test_calibration_data_of_the_wrong_shape(fp32_model):
    with pytest.raises(DatasetError, match=r"input \[1, 28, 28\]"):
        quick(fp32_model, calibration="mnist-5k")


def test_calibration_set_too_small(fp32_model):
    with pytest.raises(QuantizationError, match="too small"):
        quantize(fp32_model, QuantizeSettings(calibration_size=4))


def test_existing_output_is_not_replaced(fp32_model):
    first = quick(fp32_model)
    before = first.path.read_bytes()
    with pytest.raises(OutputError, match="--force"):
        quick(fp32_model)
    assert first.path.read_bytes() == before


@pytest.mark.slow
def test_cli_quantize_reports_both_models_with_their_latency(fp32_model):
    result = CliRunner().invoke(
        app,
        ["quantize", str(fp32_model), "--calibration-size", "60", "--method", "percentile", "--no-optimize-latency"],
    )
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[1]: line.split()
        for line in result.output.splitlines()
        if line.startswith("│ fp32") or line.startswith("│ int8")
    }
    assert set(rows) == {"fp32", "int8"} and "accuracy drop" in result.output
    for cells in rows.values():
        batch1, batch64 = float(cells[-4]), float(cells[-2])  # "│ int8 │ size │ acc │ b1 │ b64 │"
        assert 0 < batch1 < batch64


@pytest.mark.slow
def test_cli_export_int8(tmp_path, student_checkpoint):
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(student_checkpoint),
            "--onnx",
            "--int8",
            "--no-optimize-latency",
            "--no-compare-latency",
            "--out",
            str(tmp_path / "e"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e" / "run.onnx").is_file() and (tmp_path / "e" / "run.int8.onnx").is_file()


def test_runtime_never_imports_torch(tmp_path, fp32_model):
    import subprocess
    import sys

    code = (
        f"import sys, numpy as np; from kd_edge.runtime import OnnxModel; m = OnnxModel({str(fp32_model)!r})\n"
        "m.predict(np.zeros((2, 1, 16, 16), np.uint8)); print('torch' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_weights_sit_on_the_7_bit_grid_unless_full_range_is_asked(fp32_model, tmp_path):
    from onnx import numpy_helper

    def int8_weights(path):
        graph = onnx.load(str(path)).graph
        return [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]

    reduced = quick(fp32_model, out=str(tmp_path / "reduced.onnx"))
    assert max(int(abs(w).max()) for w in int8_weights(reduced.path)) == 64  # scale = max|w| / 64: no AVX2 saturation
    assert OnnxModel(reduced.path).card.quantization["weight_qmax"] == 64
    full = quick(fp32_model, reduce_range=False, out=str(tmp_path / "full.onnx"))
    assert max(int(abs(w).max()) for w in int8_weights(full.path)) == 127

"""Untrusted ONNX files: external data that points outside the model's folder is refused before any reader opens it."""

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.errors import ModelFileError
from kd_edge.runtime.safety import check_model_file


def model_with_external_data(folder: Path, location: str = "weights.bin") -> Path:
    """Y = X + W with W's 16 floats stored outside the model, at ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32), name="W")
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [16])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [16])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    if location != "weights.bin":
        proto = onnx.ModelProto.FromString(path.read_bytes())
        for entry in proto.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        path.write_bytes(proto.SerializeToString())
    return path


@pytest.fixture
def no_reader(monkeypatch):
    """Fail the test if ONNX Runtime or onnx is asked to open the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("a reader opened a model that should have been refused unread")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    monkeypatch.setattr(onnx, "load", refuse)


def test_external_data_inside_the_folder_is_accepted(tmp_path):
    path = model_with_external_data(tmp_path / "m")
    check_model_file(path)
    session = onnxruntime.InferenceSession(str(path))
    assert session.run(None, {"X": np.zeros(16, np.float32)})[0][3] == 3.0


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin", "/etc/passwd", "..\\secret.bin"])
def test_a_location_leading_out_of_the_folder_is_refused_unread(tmp_path, no_reader, location):
    (tmp_path / "secret.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    path = model_with_external_data(tmp_path / "m", location)
    with pytest.raises(ModelFileError, match="refused unread"):
        check_model_file(path)


def test_onnx_runtimes_in_memory_marker_is_refused_even_where_such_a_file_exists(tmp_path, no_reader):
    path = model_with_external_data(tmp_path / "m", "*/_ORT_MEM_ADDR_/*")
    decoy = tmp_path / "m" / "*" / "_ORT_MEM_ADDR_" / "*"  # an archive could carry a file of that name
    decoy.parent.mkdir(parents=True)
    decoy.write_bytes(np.arange(16, dtype=np.float32).tobytes())
    with pytest.raises(ModelFileError, match="memory address"):
        check_model_file(path)


def test_external_data_in_a_function_attribute_default_is_checked(tmp_path, no_reader):
    """A model-local function's attribute default can be a tensor, and so keep its bytes elsewhere."""
    (tmp_path / "secret.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    tensor = numpy_helper.from_array(np.zeros(16, dtype=np.float32), name="default")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    tensor.external_data.add(key="location", value="../secret.bin")
    attribute = helper.make_attribute("value", tensor)
    function = helper.make_function(
        "local", "AddDefault", ["X"], ["Y"], [helper.make_node("Identity", ["X"], ["Y"])],
        [helper.make_opsetid("", 17)], attributes=[],
    )  # fmt: skip
    function.attribute_proto.append(attribute)
    graph = helper.make_graph(
        [helper.make_node("AddDefault", ["X"], ["Y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [16])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [16])],
    )
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])  # fmt: skip
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError, match="refused unread"):
        check_model_file(path)


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path, no_reader):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(16, dtype=np.float32).tobytes())
    path = model_with_external_data(tmp_path / "m")
    (tmp_path / "m" / "weights.bin").unlink()
    (tmp_path / "m" / "weights.bin").symlink_to(secret)
    with pytest.raises(ModelFileError, match="symbolic link"):
        check_model_file(path)


def test_a_symlinked_folder_on_the_way_is_refused(tmp_path, no_reader):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    path = model_with_external_data(tmp_path / "m", "sub/weights.bin")
    (tmp_path / "m" / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelFileError, match="symbolic link"):
        check_model_file(path)


def test_a_hard_link_is_refused(tmp_path, no_reader):
    path = model_with_external_data(tmp_path / "m")
    os.link(tmp_path / "m" / "weights.bin", tmp_path / "elsewhere.bin")
    with pytest.raises(ModelFileError, match="hard links"):
        check_model_file(path)


def test_an_offset_beyond_the_data_file_is_refused(tmp_path, no_reader):
    path = model_with_external_data(tmp_path / "m")
    proto = onnx.ModelProto.FromString(path.read_bytes())
    proto.graph.initializer[0].external_data.add(key="offset", value="1000000")
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelFileError, match="beyond its 64 bytes"):
        check_model_file(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_file_is_a_clear_error(tmp_path, no_reader, damage):
    path = model_with_external_data(tmp_path / "m")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\xff" * 64, "empty": b""}[damage])
    with pytest.raises(ModelFileError):
        check_model_file(path)


def test_deeply_nested_graphs_are_bounded(tmp_path):
    """An If inside an If inside ... : the walk stops at a depth limit instead of recursing without end."""
    leaf = helper.make_graph([], "leaf", [], [helper.make_tensor_value_info("c", TensorProto.BOOL, [])])
    branch = leaf
    for depth in range(30):
        node = helper.make_node("If", ["c"], [f"o{depth}"], then_branch=branch, else_branch=leaf)
        branch = helper.make_graph([node], f"g{depth}", [], [helper.make_tensor_value_info(f"o{depth}", 1, [])])
    path = tmp_path / "deep.onnx"
    path.write_bytes(helper.make_model(branch).SerializeToString())
    with pytest.raises(ModelFileError, match="nested"):
        check_model_file(path)


def test_bench_and_predict_refuse_such_a_model_with_a_message(tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    path = model_with_external_data(tmp_path / "m", "../secret.bin")
    for command in (["bench", str(path)], ["predict", str(path), str(tmp_path / "secret.bin")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1 and "refused unread" in result.output, result.output
        assert "Traceback" not in result.output


def test_exported_models_pass(exported_student):
    check_model_file(exported_student)

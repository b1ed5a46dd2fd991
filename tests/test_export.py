"""ONNX export: checker, dynamic batch, metadata, parity against PyTorch, and refusals."""

import contextlib
import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.deploy.export import export_onnx
from kd_edge.errors import ExportError, ExportParityError, OutputError
from kd_edge.runtime import DataRef, ModelCard, OnnxModel, read_card, read_onnx_metadata
from kd_edge.settings import ExportSettings
from kd_edge.settings.deploy import EXPORTERS
from kd_edge.training import models as registry
from kd_edge.training.batches import Normalizer
from kd_edge.training.checkpoint import load_checkpoint, save_checkpoint
from kd_edge.training.models import ModelSpec, list_models
from tests.conftest import easy_images


def checkpoint_for(tmp_path, dataset_path, name, channels=1, size=16):
    torch.manual_seed(0)
    spec = ModelSpec(name, num_classes=3, in_channels=channels, image_size=size)
    model = spec.build().eval()
    card = ModelCard(
        classes=("a", "b", "c"),
        input_shape=(channels, size, size),
        mean=(0.2,) * channels,
        std=(0.3,) * channels,
        data=DataRef(dataset=f"npz:{dataset_path}"),
    )
    return save_checkpoint(tmp_path / f"{name}.pt", model, spec, card, {"test_accuracy": 0.9}, {})


@pytest.fixture
def rgb_npz(tmp_path):
    images, labels = easy_images(20, channels=3, size=32)
    path = tmp_path / "rgb.npz"
    np.savez(path, images=images, labels=labels)
    return path


@contextlib.contextmanager
def torchscript_deprecated():
    """The TorchScript exporter's DeprecationWarning reaches whoever chooses it (kd-edge hides nothing)."""
    with pytest.warns(DeprecationWarning) as record:  # torch's own internal ones come along
        yield
    assert any("legacy TorchScript-based ONNX export" in str(w.message) for w in record)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_with_parity(tmp_path, rgb_npz, name, exporter):
    path = checkpoint_for(tmp_path, rgb_npz, name, channels=3, size=32)
    config = (path, tmp_path / "out", ExportSettings(exporter=exporter))
    if exporter == "torchscript":
        with torchscript_deprecated():
            result = export_onnx(*config)
    else:
        result = export_onnx(*config)
    assert result.parity.top1_agreement == 1.0 and result.parity.max_abs_diff <= result.parity.atol
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    assert result.card.versions["exporter"] == EXPORTERS[exporter] and "exporter_fallback" not in result.card.versions
    assert proto.opset_import[0].version == {"dynamo": 18, "torchscript": 17}[exporter] and proto.ir_version <= 8
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.slow
def test_dynamic_batch_runs_at_1_3_and_8(tmp_path, student_checkpoint):
    result = export_onnx(student_checkpoint, tmp_path / "out")
    model = OnnxModel(result.path)
    checkpoint = load_checkpoint(student_checkpoint)
    torch_model = checkpoint.build_model().eval()
    normalise = Normalizer(checkpoint.card.mean, checkpoint.card.std, "cpu")
    images = np.random.default_rng(0).integers(0, 255, (8, 1, 16, 16), dtype=np.uint8)
    for batch in (1, 3, 8):
        expected = torch_model(normalise(torch.from_numpy(images[:batch]))).detach().numpy()
        got = model.logits(images[:batch].transpose(0, 2, 3, 1))  # the graph's own input: uint8 NHWC
        assert got.shape == (batch, 3) and np.abs(got - expected).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("layout, order", [("nhwc", "rgb"), ("nhwc", "bgr"), ("nchw", "rgb")])
def test_the_graph_takes_the_camera_frame_and_computes_the_float_pipeline(tmp_path, rgb_npz, layout, order):
    """A plain ONNX Runtime session fed the frame's uint8 pixels as a camera library lays them out (no
    arithmetic) gives the logits the network gives on the float tensor training normalised."""
    import onnxruntime as ort

    path = checkpoint_for(tmp_path, rgb_npz, "mobile@w0.5", channels=3, size=32)
    result = export_onnx(path, tmp_path / "out", ExportSettings(input_layout=layout, channel_order=order))
    card = read_card(result.path)
    assert (card.input_type, card.layout, card.channel_order) == ("uint8", layout.upper(), order.upper())
    rgb_hwc = np.load(rgb_npz)["images"][:5].transpose(0, 2, 3, 1)  # as Pillow decodes them
    frames = rgb_hwc[..., ::-1] if order == "bgr" else rgb_hwc  # as OpenCV decodes them
    frames = np.ascontiguousarray(frames if layout == "nhwc" else frames.transpose(0, 3, 1, 2))
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    got = session.run(None, {session.get_inputs()[0].name: frames})[0]
    checkpoint = load_checkpoint(path)
    normalised = Normalizer(card.mean, card.std, "cpu")(torch.from_numpy(rgb_hwc.transpose(0, 3, 1, 2).copy()))
    with torch.no_grad():
        expected = checkpoint.build_model().eval()(normalised).numpy()
    assert np.abs(got - expected).max() < 1e-4
    # kd-edge's runtime takes the dataset's NCHW RGB images and lays them out for the graph itself.
    assert (
        np.abs(
            OnnxModel(result.path).logits(OnnxModel(result.path).preprocess(np.load(rgb_npz)["images"][:5])) - expected
        ).max()
        < 1e-4
    )


@pytest.mark.slow
def test_metadata_round_trip(tmp_path, student_checkpoint):
    checkpoint = load_checkpoint(student_checkpoint)
    result = export_onnx(student_checkpoint.parent, tmp_path / "out")
    meta = read_onnx_metadata(result.path)
    # The contract other tools read (DESIGN.md), as plain JSON strings:
    assert json.loads(meta["kd_edge.classes"]) == list(checkpoint.card.classes) == ["a", "b", "c"]
    assert json.loads(meta["kd_edge.input_shape"]) == [1, 16, 16] and meta["kd_edge.layout"] == "NHWC"
    assert meta["kd_edge.input_type"] == "uint8" and meta["kd_edge.channel_order"] == "GRAY"
    assert json.loads(meta["kd_edge.mean"]) == list(checkpoint.card.mean) and json.loads(meta["kd_edge.std"]) == list(
        checkpoint.card.std
    )
    card = read_card(result.path)
    assert card == result.card
    assert (
        card.versions["opset"] == 18
        and "dynamo=True" in card.versions["exporter"]
        and card.versions["torch"]
        and card.versions["kd_edge"]
    )
    assert card.test_accuracy == checkpoint.metrics["test_accuracy"]
    assert card.parameters == sum(p.numel() for p in checkpoint.build_model().parameters())
    assert len(card.source_sha256) == 64 and card.data.dataset.startswith("npz:") and card.model == "cnn-tiny"
    proto = onnx.load(str(result.path))
    # IR 8: ONNX Runtime 1.14, which loads opset 18, loads it; the exporter's own IR 10 needs 1.17.
    assert proto.opset_import[0].version == 18 and proto.ir_version == 8
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


class DataDependentBranch(torch.nn.Module):
    """Branches on a tensor's value: torch.export cannot capture it, the TorchScript tracer records the branch
    taken (always this one, since a sum of absolute values is never negative)."""

    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.fc = torch.nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc(x) if x.abs().sum() >= 0 else -self.fc(x)


@pytest.mark.slow
def test_a_model_torch_export_cannot_capture_falls_back_to_torchscript(tmp_path, easy_npz, monkeypatch):
    monkeypatch.setitem(registry._MODELS, "branchy", DataDependentBranch)
    path = checkpoint_for(tmp_path, easy_npz, "branchy")
    with torchscript_deprecated(), pytest.warns(torch.jit.TracerWarning, match="trace might not generalize"):
        result = export_onnx(path, tmp_path / "out")
    versions = read_card(result.path).versions
    assert versions["exporter"] == EXPORTERS["torchscript"] and versions["opset"] == 17
    assert "torch.export could not capture DataDependentBranch" in versions["exporter_fallback"]
    assert result.parity.top1_agreement == 1.0
    # Asked for by name, the dynamo exporter does not fall back: the error says why and what to do.
    with pytest.raises(ExportError, match="could not capture DataDependentBranch"):
        export_onnx(path, tmp_path / "dynamo", ExportSettings(exporter="dynamo"))
    assert not any((tmp_path / "dynamo").iterdir())


def test_cli_exporter_switch(tmp_path, student_checkpoint):
    with torchscript_deprecated():
        result = CliRunner().invoke(
            app, ["export", str(student_checkpoint), "--out", str(tmp_path / "ts"), "--exporter", "torchscript"]
        )
    assert result.exit_code == 0, result.output
    assert "opset 17" in result.output and "dynamo=False" in result.output
    card = read_card(next((tmp_path / "ts").glob("*.onnx")))
    assert card.versions["exporter"] == EXPORTERS["torchscript"]
    refused = CliRunner().invoke(
        app, ["export", str(student_checkpoint), "--out", str(tmp_path / "x"), "--opset", "17"]
    )
    assert refused.exit_code != 0 and "--exporter torchscript" in refused.output
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    unknown = CliRunner().invoke(app, ["export", str(student_checkpoint), "--exporter", "jit"])
    assert unknown.exit_code != 0 and "dynamo, torchscript" in unknown.output


def test_deprecations_from_the_libraries_fail_the_suite():
    """pyproject.toml turns a DeprecationWarning attributed to torch, onnx (and their kin) or to kd-edge into an
    error: this proves the filter is in force, so that the rest of the suite passing means none was raised."""
    import warnings

    for module in ("torch.onnx.utils", "torchao.quantization", "onnxscript", "onnx.helper", "kd_edge.deploy.export"):
        with pytest.raises(DeprecationWarning):
            warnings.warn_explicit("old", DeprecationWarning, filename="x.py", lineno=1, module=module)


class TracedBatchTrap(torch.nn.Module):
    """Doubles its logits at batch 1 only: tracing from a batch-1 example bakes the doubling in."""

    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.fc = torch.nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return logits * 2 if x.shape[0] == 1 else logits


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_parity_failure_is_an_error_and_writes_nothing(tmp_path, easy_npz, monkeypatch, exporter):
    """Both exporters capture one branch of `if x.shape[0] == 1` (torch.export assumes a dynamic size is not 1)."""
    monkeypatch.setitem(registry._MODELS, "trap", TracedBatchTrap)
    path = checkpoint_for(tmp_path, easy_npz, "trap")
    config = (path, tmp_path / "out", ExportSettings(exporter=exporter))
    traced = exporter == "torchscript"
    with (
        pytest.raises(ExportParityError, match="does not compute what the PyTorch model computes"),
        torchscript_deprecated() if traced else contextlib.nullcontext(),
        pytest.warns(torch.jit.TracerWarning, match="might not generalize") if traced else contextlib.nullcontext(),
    ):
        export_onnx(*config)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_parity_at_batch_1_covers_every_image(exported_student, student_checkpoint, monkeypatch):
    from kd_edge.deploy.onnx_graph import check_parity

    model = load_checkpoint(student_checkpoint).build_model().eval()
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 16, 16), dtype=np.uint8)
    batches, logits = [], OnnxModel.logits

    def counted(self, inputs):
        batches.append(len(inputs))
        return logits(self, inputs)

    monkeypatch.setattr(OnnxModel, "logits", counted)
    report = check_parity(model, exported_student, images)
    assert sorted(batches) == [1] * 40 + [40] and report.samples == 40 and report.top1_agreement == 1.0


@pytest.mark.slow
def test_existing_output_needs_force(tmp_path, student_checkpoint):
    out = tmp_path / "out"
    first = export_onnx(student_checkpoint, out)
    before = first.path.read_bytes()
    with pytest.raises(OutputError, match="--force"):
        export_onnx(student_checkpoint, out)
    assert first.path.read_bytes() == before
    export_onnx(student_checkpoint, out, force=True)


@pytest.mark.slow
def test_cli_export_of_a_run_folder(tmp_path, student_checkpoint):
    result = CliRunner().invoke(
        app, ["export", str(student_checkpoint.parent), "--onnx", "--out", str(tmp_path / "exp")]
    )
    assert result.exit_code == 0, result.output
    assert "parity on" in result.output and (tmp_path / "exp" / "run.onnx").is_file()


def test_cli_export_of_a_folder_without_student(tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--onnx"])
    assert result.exit_code == 1 and "no student.pt" in result.output


@pytest.mark.slow
def test_exports_are_named_after_their_run_so_they_do_not_collide(tmp_path, student_checkpoint):
    out = tmp_path / "exports"
    for run in ("a", "b"):
        shutil.copytree(student_checkpoint.parent, tmp_path / run)
        assert export_onnx(tmp_path / run, out).path == out / f"{run}.onnx"
    shutil.copy(student_checkpoint, tmp_path / "a" / "teacher.pt")
    assert export_onnx(tmp_path / "a" / "teacher.pt", out).path == out / "a-teacher.onnx"
    named = export_onnx(tmp_path / "b", out, name="drone-v2").path
    assert named == out / "drone-v2.onnx" and sorted(p.name for p in out.glob("*.onnx")) == [
        "a-teacher.onnx",
        "a.onnx",
        "b.onnx",
        "drone-v2.onnx",
    ]

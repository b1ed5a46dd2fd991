"""Bundles: the folder and its archive, one card schema, checksums verified before loading, unsafe archives refused."""

import io
import json
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.deploy import bundle as bundle_stage
from kd_edge.deploy.bundle import choose_form, write_bundle
from kd_edge.errors import BundleError, OutputError
from kd_edge.runtime import OnnxModel
from kd_edge.runtime.bundle_files import open_bundle
from kd_edge.settings import BundleSettings


@pytest.fixture(scope="module")
def int8_student(tmp_path_factory, exported_student):
    from kd_edge.deploy.quantize import quantize
    from kd_edge.settings import QuantizeSettings

    out = tmp_path_factory.mktemp("int8") / "student.int8.onnx"
    settings = QuantizeSettings(calibration_size=60, optimize_latency=False, compare_latency=False)
    return quantize(exported_student, settings, out=out).path


@pytest.fixture
def fp32_bundle(tmp_path, exported_student):
    return write_bundle(tmp_path / "bundle", BundleSettings(samples=9), fp32=exported_student, int8=None)


def test_fp32_bundle_round_trip(fp32_bundle, exported_student):
    folder = fp32_bundle.folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "SHA256SUMS",
        "model.json",
        "model.onnx",
        "samples.npz",
    ]
    assert fp32_bundle.form == "fp32" and fp32_bundle.reason == "no INT8 model was given"
    card = json.loads((folder / "model.json").read_text())
    original = OnnxModel(exported_student)
    assert (
        card["classes"] == original.classes
        and card["input_shape"] == [1, 16, 16]
        and card["bundle"]["deployable"]["form"] == "fp32"
    )
    samples = np.load(folder / "samples.npz")
    assert np.bincount(samples["labels"]).tolist() == [3, 3, 3]  # 9 samples, stratified by class
    for source in (folder, fp32_bundle.archive):  # the folder and the archive load the same model
        model = OnnxModel(source)
        assert model.card == original.card and model.bundle is not None
        assert np.array_equal(model.predict(samples["images"]), original.predict(samples["images"]))
    if shutil.which("sha256sum"):
        assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder).returncode == 0


def test_bundle_with_both_forms_ships_int8_only_when_not_slower(tmp_path, exported_student, int8_student, monkeypatch):
    timings = {"fp32": {"t1_b1": 0.10, "t1_b64": 2.0}, "int8": {"t1_b1": 0.09, "t1_b64": 1.2}}
    monkeypatch.setattr(bundle_stage, "compare_plain_sessions", lambda *args: timings)
    result = write_bundle(tmp_path / "b", BundleSettings(samples=30), fp32=exported_student, int8=int8_student)
    assert result.form == "int8" and "not slower" in result.reason
    opened = open_bundle(result.folder)
    assert set(opened.forms()) == {"int8", "fp32"} and opened.forms()["fp32"].name == "model.fp32.onnx"
    assert opened.card.quantization is not None and opened.info["latency_check"]["p50_ms"] == timings
    assert "model.fp32.onnx" in (result.folder / "README.md").read_text()


@pytest.mark.parametrize(
    "int8, form",
    [
        ({"t1_b1": 0.09, "t1_b64": 1.2, "t2_b1": 0.104, "t2_b64": 0.9}, "int8"),  # 4 % slower in one setting: noise
        ({"t1_b1": 0.12, "t1_b64": 1.2, "t2_b1": 0.10, "t2_b64": 0.9}, "fp32"),  # 20 % slower at batch 1
        ({"t1_b1": 0.102, "t1_b64": 2.04, "t2_b1": 0.101, "t2_b64": 1.0}, "fp32"),  # slower everywhere, within noise
    ],
)
def test_choose_form(int8, form):
    fp32 = {"t1_b1": 0.10, "t1_b64": 2.0, "t2_b1": 0.10, "t2_b64": 1.0}
    chosen, reason = choose_form({"fp32": fp32, "int8": int8}, None)
    assert chosen == form and "t1 b1" in reason


def test_changed_file_is_refused_before_loading(fp32_bundle):
    model = fp32_bundle.folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx does not match"):
        OnnxModel(fp32_bundle.folder)
    result = CliRunner().invoke(app, ["bench", str(fp32_bundle.folder)])
    assert result.exit_code == 1 and "fails its checksums" in result.output


def test_missing_and_unlisted_files_are_refused(fp32_bundle):
    (fp32_bundle.folder / "samples.npz").rename(fp32_bundle.folder / "extra.npz")
    with pytest.raises(BundleError, match=r"samples\.npz is missing; extra\.npz is not listed"):
        open_bundle(fp32_bundle.folder)


def archive_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"") -> "Path":  # noqa: F821
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("bundle/model.json")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"{}"))
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def evil_members():
    absolute = tarfile.TarInfo("/tmp/kd-edge-evil")
    absolute.size = 4
    climbing = tarfile.TarInfo("bundle/../../kd-edge-evil")
    climbing.size = 4
    link = tarfile.TarInfo("bundle/model.onnx")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("bundle/samples.npz")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    device = tarfile.TarInfo("bundle/null")
    device.type = tarfile.CHRTYPE
    return [
        (absolute, "outside the folder"),
        (climbing, "outside the folder"),
        (link, "a link"),
        (hard, "a link"),
        (device, "a device"),
    ]


@pytest.mark.parametrize("member, message", evil_members(), ids=["absolute", "dotdot", "symlink", "hardlink", "device"])
def test_unsafe_archive_is_refused_before_anything_is_written(tmp_path, member, message):
    archive = archive_with(tmp_path, member, b"evil")
    target = tmp_path / "unpacked"
    with pytest.raises(BundleError, match=message):
        open_bundle(archive, unpack_to=target)
    assert not target.exists()  # not even the harmless member was written
    assert not (tmp_path.parent / "kd-edge-evil").exists()


def test_damaged_archive_is_a_clear_error(tmp_path, fp32_bundle):
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(fp32_bundle.archive.read_bytes()[:300])
    with pytest.raises(BundleError, match="cannot read"):
        OnnxModel(damaged)


def test_existing_bundle_needs_force(fp32_bundle, exported_student):
    settings = BundleSettings(samples=30)
    with pytest.raises(OutputError, match="--force"):
        write_bundle(fp32_bundle.folder, settings, fp32=exported_student, int8=None)
    write_bundle(fp32_bundle.folder, settings, fp32=exported_student, int8=None, force=True)


@pytest.mark.slow
def test_bench_of_a_bundle_scores_its_samples(tmp_path, fp32_bundle):
    out = tmp_path / "b.json"
    for source in (fp32_bundle.folder, fp32_bundle.archive):
        result = CliRunner().invoke(app, ["bench", str(source), "--runs", "10", "--rounds", "1", "--json", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        samples = np.load(fp32_bundle.folder / "samples.npz")
        expected = (OnnxModel(fp32_bundle.folder).predict(samples["images"]) == samples["labels"]).mean()
        assert report["results"][0]["accuracy"] == pytest.approx(expected) and "samples of bundle" in report["data"]
        assert report["results"][0]["model"] == str(source)


@pytest.mark.slow
def test_cli_bundle_of_a_run_folder(tmp_path, student_checkpoint):
    out = tmp_path / "deploy"
    result = CliRunner().invoke(
        app, ["bundle", str(student_checkpoint.parent), "--no-int8", "--samples", "30", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "model.onnx is FP32" in result.output and "--no-int8 was given" in result.output
    assert (tmp_path / "deploy.tar.gz").is_file() and OnnxModel(out).card.model == "cnn-tiny"

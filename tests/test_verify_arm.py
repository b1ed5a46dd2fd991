"""kd-edge verify-arm: aarch64 ONNX Runtime under QEMU agrees with the host; says what to install when it cannot run."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.deploy import arm_userland as module
from kd_edge.deploy.bundle import write_bundle
from kd_edge.deploy.verify_arm import compare
from kd_edge.errors import ArmSetupError, ConfigError
from kd_edge.settings import ArmSettings, BundleSettings, QuantizeSettings
from tests.conftest import OLDEST_ONNXRUNTIME as OLDEST

# Slow (QEMU, aarch64 ONNX Runtime); one xdist worker builds the aarch64 userland once for the module.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("arm")]


@pytest.fixture(scope="module")
def two_form_bundle(tmp_path_factory, exported_student):
    """A bundle holding the student in FP32 and INT8 (both forms are checked)."""
    from kd_edge.deploy.quantize import quantize

    folder = tmp_path_factory.mktemp("arm")
    settings = QuantizeSettings(calibration_size=60, compare_latency=False)
    int8 = quantize(exported_student, settings, out=folder / "s.int8.onnx")
    bundle = BundleSettings(samples=18, form="int8")
    return write_bundle(folder / "bundle", bundle, fp32=exported_student, int8=int8.path).folder


def test_bundle_agrees_on_neon_only_and_dot_product_cpus_and_the_oldest_runtime(tmp_path, two_form_bundle, arm_cache):
    import shutil

    import onnxruntime as ort

    from kd_edge.runtime import OnnxModel

    bundle = shutil.copytree(two_form_bundle, tmp_path / "bundle")  # the verdict is written into it
    out = tmp_path / "arm.json"
    args = [
        "verify-arm", str(bundle), "--cpu", "cortex-a53,neoverse-n1", "--onnxruntime", ort.__version__,
        "--onnxruntime", OLDEST, "--cache-dir", str(arm_cache), "--json", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    releases = (OLDEST, ort.__version__)
    runs = {f"{cpu}, ONNX Runtime {release}" for cpu in ("cortex-a53", "neoverse-n1") for release in releases}
    assert set(report["emulated"]) == runs and report["host"]["machine"] != "aarch64"
    for name, facts in report["emulated"].items():  # each run's own facts, not the last one's
        assert (
            facts["machine"] == "aarch64" and name.endswith(facts["onnxruntime"]) and name.startswith(facts["qemu_cpu"])
        )
    assert {(c["cpu"], c["onnxruntime"], c["form"]) for c in report["checks"]} == {
        (cpu, release, form)
        for cpu in ("cortex-a53", "neoverse-n1")
        for release in releases
        for form in ("fp32", "int8")
    }
    for check in report["checks"]:
        assert check["samples"] == 18 and check["passed"] and check["machine"] == "aarch64"
        if check["form"] == "fp32":
            assert check["top1_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-4
    assert "aarch64" in result.output and "not latencies" in result.output
    verified = json.loads((bundle / "model.json").read_text())["bundle"]["verified"]
    assert verified["oldest_onnxruntime"] == OLDEST and verified["cpus"] == ["cortex-a53", "neoverse-n1"]
    OnnxModel(bundle)  # its checksums hold again


def test_compare_lists_every_disagreement():
    host = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.9]])
    arm = np.array([[2.0, 1.0], [0.0, 3.0], [0.9, 1.0]])  # the last sample flips
    check = compare("cortex-a72", "1.16.3", "int8", "aarch64", host, arm, labels=np.array([0, 1, 0]))
    assert check.top1_agreement == pytest.approx(2 / 3) and not check.passed
    assert check.disagreements == [
        {"sample": 2, "host_class": 0, "aarch64_class": 1, "host_margin": pytest.approx(0.1)}
    ]
    assert check.host_accuracy == 1.0 and check.arm_accuracy == pytest.approx(2 / 3)


def test_fp32_must_agree_in_its_logits_and_the_check_must_have_run_on_aarch64():
    host = np.array([[2.0, 1.0], [0.0, 3.0]])
    assert compare("cortex-a72", "1.16.3", "fp32", "aarch64", host, host + 5e-5, None).passed
    assert not compare("cortex-a72", "1.16.3", "fp32", "aarch64", host, host + 1e-3, None).passed  # same classes
    assert compare("cortex-a72", "1.16.3", "int8", "aarch64", host, host + 1e-3, None).passed  # a rounding step
    assert not compare("cortex-a72", "1.16.3", "fp32", "x86_64", host, host, None).passed  # not emulated at all


def test_each_emulated_cpu_has_its_own_part_number(tmp_path):
    parts = set()
    for cpu in ("cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1"):
        module.write_fake_cpuinfo(tmp_path / cpu, cpu)
        lines = {line for line in (tmp_path / cpu).read_text().splitlines() if line.startswith("CPU part")}
        assert len(lines) == 1
        parts |= lines
    assert len(parts) == 4


def test_unknown_cpu_is_refused():
    with pytest.raises(ConfigError, match="cortex-a53, cortex-a72, cortex-a76, neoverse-n1"):
        ArmSettings(cpus=("cortex-m4",))


def test_without_an_emulator_it_says_what_to_install(tmp_path, two_form_bundle, monkeypatch):
    def unreachable(command, **kwargs):
        raise ArmSetupError(f"{command[0]} failed (exit 100). {module.INSTALL_HINT}")

    monkeypatch.setattr(module, "run", unreachable)
    result = CliRunner().invoke(app, ["verify-arm", str(two_form_bundle), "--cache-dir", str(tmp_path / "empty")])
    assert (
        result.exit_code == 1
        and "apt-get install qemu-user-static" in result.output
        and "Traceback" not in result.output
    )
    assert not list((tmp_path / "empty").rglob("ready"))  # no half-built userland is taken for a finished one

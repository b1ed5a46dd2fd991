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

# Slow (QEMU, aarch64 ONNX Runtime); one xdist worker builds the aarch64 userland once for the module.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("arm")]


@pytest.fixture(scope="module")
def two_form_bundle(tmp_path_factory, exported_student):
    """A bundle holding the student in FP32 and INT8 (both forms are checked)."""
    from kd_edge.deploy.quantize import quantize

    folder = tmp_path_factory.mktemp("arm")
    settings = QuantizeSettings(calibration_size=60, compare_latency=False)
    int8 = quantize(exported_student, settings, out=folder / "s.int8.onnx")
    bundle = BundleSettings(samples=18, threads=(1,))
    return write_bundle(folder / "bundle", bundle, fp32=exported_student, int8=int8.path).folder


@pytest.fixture(scope="module")
def arm_cache(tmp_path_factory):
    """The aarch64 userland, built once for this module; skips where the registries cannot be reached."""
    cache = tmp_path_factory.mktemp("arm-cache")
    try:
        module.prepare_userland(module.cache_root(str(cache)), progress=lambda message: None)
    except ArmSetupError as exc:
        pytest.skip(f"no aarch64 userland here: {exc}")
    return cache


def test_bundle_agrees_on_neon_only_and_dot_product_cpus(tmp_path, two_form_bundle, arm_cache):
    out = tmp_path / "arm.json"
    args = [
        "verify-arm",
        str(two_form_bundle),
        "--cpu",
        "cortex-a53,neoverse-n1",
        "--cache-dir",
        str(arm_cache),
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["emulated"]["machine"] == "aarch64" and report["host"]["machine"] != "aarch64"
    assert report["emulated"]["onnxruntime"] == report["host"]["onnxruntime"]
    assert {(c["cpu"], c["form"]) for c in report["checks"]} == {
        (cpu, form) for cpu in ("cortex-a53", "neoverse-n1") for form in ("fp32", "int8")
    }
    for check in report["checks"]:
        assert check["samples"] == 18 and check["passed"]
        if check["form"] == "fp32":
            assert check["top1_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-4
    assert "aarch64" in result.output and "not latencies" in result.output


def test_compare_lists_every_disagreement():
    host = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.9]])
    arm = np.array([[2.0, 1.0], [0.0, 3.0], [0.9, 1.0]])  # the last sample flips
    check = compare("cortex-a72", "int8", host, arm, labels=np.array([0, 1, 0]))
    assert check.top1_agreement == pytest.approx(2 / 3) and not check.passed
    assert check.disagreements == [
        {"sample": 2, "host_class": 0, "aarch64_class": 1, "host_margin": pytest.approx(0.1)}
    ]
    assert check.host_accuracy == 1.0 and check.arm_accuracy == pytest.approx(2 / 3)


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

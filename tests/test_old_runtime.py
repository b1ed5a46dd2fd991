"""Models that the board's own ONNX Runtime loads: the oldest supported release (1.16) runs kd-edge's FP32 and
INT8 files and computes what the host computes; what the host's tools stamp, and older runtimes refuse, is gone."""

import numpy as np
import onnx
import pytest
from onnx import helper

from kd_edge.deploy.host_runtimes import OLDEST_SUPPORTED, parse_version, prepare_runtime, requirements, run_check
from kd_edge.deploy.portable import make_portable
from kd_edge.errors import ArmSetupError, ConfigError
from kd_edge.runtime.check import sample_logits

OLDEST = "1.16.3"


def stamped(path, out):
    """``path`` as quant_pre_process leaves a model: opset imports for domains no node uses, node metadata."""
    proto = onnx.load(str(path))
    proto.opset_import.extend([helper.make_opsetid("ai.onnx.ml", 5), helper.make_opsetid("com.microsoft.nchwc", 1)])
    proto.graph.node[0].metadata_props.add(key="pkg.torch.onnx.stack_trace", value="...")
    onnx.save(proto, str(out))
    return out


def test_a_portable_model_keeps_only_what_its_nodes_use(tmp_path, exported_student):
    proto = make_portable(onnx.load(str(stamped(exported_student, tmp_path / "stamped.onnx"))))
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 18)]
    assert proto.ir_version == 8 and not any(node.metadata_props for node in proto.graph.node)
    assert {p.key for p in proto.metadata_props} >= {"kd_edge.classes", "kd_edge.input_shape"}  # the card stays
    onnx.checker.check_model(proto, full_check=True)


def test_exported_and_quantized_files_are_portable(exported_student, tmp_path):
    from kd_edge.deploy.quantize import quantize
    from kd_edge.settings import QuantizeSettings

    settings = QuantizeSettings(calibration_size=60, optimize_latency=False, compare_latency=False)
    int8 = quantize(exported_student, settings, out=tmp_path / "s.int8.onnx").path
    for path in (exported_student, int8):
        proto = onnx.load(str(path))
        assert [o.domain for o in proto.opset_import] == [""], path
        assert proto.ir_version == 8 and not any(node.metadata_props for node in proto.graph.node)


def test_release_numbers_and_their_numpy():
    assert parse_version("1.16.3") == (1, 16, 3) and OLDEST_SUPPORTED == (1, 16)
    assert requirements("1.16.3") == ["onnxruntime==1.16.3", "numpy<2"]
    assert requirements("1.19.2") == ["onnxruntime==1.19.2", "numpy"]
    for bad, message in (("1.15.1", "1.16 and later"), ("latest", "release number")):
        with pytest.raises(ConfigError, match=message):
            parse_version(bad)


@pytest.fixture(scope="module")
def oldest():
    """A virtual environment with ONNX Runtime 1.16.3, in the user's cache as `verify-arm --onnxruntime` keeps it
    (made once per machine); skipped where pip cannot reach the package index (the reason is shown)."""
    try:
        return prepare_runtime(OLDEST, progress=lambda message: None)
    except ArmSetupError as exc:
        pytest.skip(f"ONNX Runtime {OLDEST} could not be installed here: {exc}")


@pytest.fixture(scope="module")
def two_forms(tmp_path_factory, exported_student):
    from kd_edge.deploy.bundle import write_bundle
    from kd_edge.deploy.quantize import quantize
    from kd_edge.settings import BundleSettings, QuantizeSettings

    folder = tmp_path_factory.mktemp("forms")
    settings = QuantizeSettings(calibration_size=60, compare_latency=False)
    int8 = quantize(exported_student, settings, out=folder / "s.int8.onnx").path
    bundle = BundleSettings(samples=30, form="int8")
    return write_bundle(folder / "bundle", bundle, fp32=exported_student, int8=int8).folder


@pytest.mark.slow
@pytest.mark.xdist_group("old-runtime")
def test_fp32_and_int8_run_in_the_oldest_supported_runtime_as_on_the_host(oldest, two_forms, tmp_path):
    from kd_edge.runtime.check import forms_of

    samples = two_forms / "samples.npz"
    old, facts = run_check(oldest, two_forms, samples, tmp_path / "old.npz")
    assert facts["onnxruntime"] == OLDEST
    with np.load(samples) as archive:
        host = sample_logits(forms_of(two_forms), archive["images"])
    assert set(old) == {"fp32", "int8"} == set(host)
    assert np.abs(old["fp32"] - host["fp32"]).max() < 1e-4
    assert (old["int8"].argmax(1) == host["int8"].argmax(1)).mean() >= 0.999


@pytest.mark.slow
@pytest.mark.xdist_group("old-runtime")
def test_what_the_host_stamps_is_refused_by_the_oldest_runtime_and_portable_files_are_not(oldest, two_forms, tmp_path):
    import shutil

    samples = two_forms / "samples.npz"
    refused = stamped(two_forms / "model.onnx", tmp_path / "stamped.onnx")
    with pytest.raises(ArmSetupError, match=r"ai\.onnx\.ml"):
        run_check(oldest, refused, samples, tmp_path / "refused.npz")
    portable = tmp_path / "portable.onnx"
    shutil.copy(refused, portable)
    onnx.save(make_portable(onnx.load(str(portable))), str(portable))
    logits, _ = run_check(oldest, portable, samples, tmp_path / "portable.npz")
    with np.load(samples) as archive:
        assert len(logits["int8"]) == len(archive["labels"])

"""kd-edge bench: the JSON contract, constraints read back from the child, memory cap, accuracy, no torch."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.runtime import ModelCard, OnnxModel
from kd_edge.runtime import emulate

runner = CliRunner()
QUICK = ["--runs", "20", "--rounds", "2", "--warmup", "2"]


def write_tiny_model(path, side=8, classes=3):
    """Flatten + Gemm over (N, 1, side, side) with kd-edge metadata; weights fixed by a seed."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((side * side, classes)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(np.zeros(classes, np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    card = ModelCard(classes=("a", "b", "c"), input_shape=(1, side, side), mean=(0.5,), std=(0.25,), parameters=side * side * classes + classes)
    for key, value in card.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_model(tmp_path / "tiny.onnx")


@pytest.fixture
def half_right(tmp_path, tiny):
    """40 images whose labels are the model's own prediction for the first 20 and wrong for the rest."""
    images = np.random.default_rng(1).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
    predicted = OnnxModel(tiny).predict(images)
    labels = predicted.copy()
    labels[20:] = (predicted[20:] + 1) % 3
    path = tmp_path / "labelled.npz"
    np.savez(path, images=images, labels=labels)
    return path


def bench(*args, ok=True):
    result = runner.invoke(app, ["bench", *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_json_contract(tmp_path, tiny, half_right):
    out = tmp_path / "bench.json"
    bench(tiny, "--threads", "1", "--batch-size", "1", "--batch-size", "4", "--data", half_right, "--json", out, *QUICK)
    report = json.loads(out.read_text())
    assert len(report["results"]) == 2
    for result in report["results"]:
        assert {"model", "threads", "batch_size", "latency_ms", "throughput_ips", "accuracy", "size_bytes", "peak_rss_mb", "emulation"} <= result.keys()
        assert {"p50", "p90", "p99", "mean", "std", "min", "max"} <= result["latency_ms"].keys()
        assert 0 < result["latency_ms"]["min"] <= result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
        assert result["runs"] == 20 and result["parameters"] == 195 and result["size_bytes"] == tiny.stat().st_size
        assert result["peak_rss_mb"] > 10 and result["startup_ms"] > 0 and result["first_inference_ms"] > 0
        assert isinstance(result["stable"], bool)
    assert [r["batch_size"] for r in report["results"]] == [1, 4]
    env = report["environment"]
    assert env["onnxruntime_version"] and env["numpy_version"] and env["cpu_model"] is not None and env["host_gflops_per_core"] > 0


def test_accuracy_on_a_labelled_set(tmp_path, tiny, half_right):
    out = tmp_path / "b.json"
    bench(tiny, "--data", half_right, "--json", out, *QUICK)
    assert json.loads(out.read_text())["results"][0]["accuracy"] == 0.5


def test_no_labels_means_null_accuracy(tmp_path, tiny):
    out = tmp_path / "b.json"
    bench(tiny, "--json", out, *QUICK)
    assert json.loads(out.read_text())["results"][0]["accuracy"] is None


def test_pinning_and_threads_are_read_back_from_the_child(tmp_path, tiny):
    out = tmp_path / "b.json"
    bench(tiny, "--cores", "0", "--threads", "1", "--threads", "2", "--json", out, *QUICK)
    one, two = json.loads(out.read_text())["results"]
    for result in (one, two):
        assert result["emulation"]["cores"] == {"requested": [0], "enforced": True, "mechanism": "sched_setaffinity", "read_back": [0]}
    assert two["threads_seen"] == one["threads_seen"] + 1  # ONNX Runtime adds one pool thread per extra intra-op thread


def test_more_threads_than_cores_warns(tiny):
    result = bench(tiny, "--cores", "0", "--threads", "2", *QUICK)
    assert "more than the 1 core(s) allowed" in result.output


def test_memory_cap_makes_an_oversized_batch_fail_cleanly(tiny):
    bench(tiny, "--memory", "300M", *QUICK)  # a normal batch runs under the cap
    result = bench(tiny, "--memory", "300M", "--batch-size", "2000000", *QUICK, ok=False)
    assert result.exit_code == 1 and "memory cap" in result.output and "Traceback" not in result.output


def test_cpu_quota_is_enforced_or_reported_as_not(tmp_path, tiny):
    out = tmp_path / "b.json"
    bench(tiny, "--cpu-quota", "0.5", "--json", out, *QUICK)
    quota = json.loads(out.read_text())["results"][0]["emulation"]["cpu_quota"]
    assert quota["requested"] == 0.5
    assert quota["enforced"] is True and "cgroup" in quota["mechanism"] or quota["enforced"] is False and quota["reason"]


def test_unwritable_cgroups_are_reported_not_enforced(tmp_path, monkeypatch):
    monkeypatch.setattr(emulate, "CGROUP_ROOT", tmp_path / "no-cgroups")
    report = emulate.limit_cpu(0.5)
    assert report["enforced"] is False and "no writable cgroup CPU controller" in report["reason"]


def test_profile_projects_and_says_so(tmp_path, tiny):
    out = tmp_path / "b.json"
    bench(tiny, "--profile", "rpi4", "--json", out, *QUICK)
    result = json.loads(out.read_text())["results"][0]
    projection = result["emulation"]["projection"]
    assert projection["enforced"] is False and projection["projected_p50_ms"] > 0 and "PROJECTION" in projection["method"]
    assert result["emulation"]["cores"]["read_back"] == sorted(os.sched_getaffinity(0))[:4]
    assert result["emulation"]["memory"]["requested"] == 4096 << 20


def test_drone_loop_reports_deadlines(tmp_path, tiny):
    out = tmp_path / "b.json"
    bench(tiny, "--rate", "50", "--duration", "0.4", "--rounds", "1", "--json", out)
    loop = json.loads(out.read_text())["results"][0]["drone_loop"]
    assert loop["frames"] == 20 and loop["deadline_ms"] == 20.0 and 0 <= loop["deadline_misses"] <= 20 and loop["jitter_ms"] >= 0


def test_markdown_and_plot(tmp_path, tiny, half_right):
    pytest.importorskip("matplotlib")
    bench(tiny, "--data", half_right, "--markdown", tmp_path / "b.md", "--plot", tmp_path / "b.png", *QUICK)
    assert "| tiny.onnx | 2 | 1 |" in (tmp_path / "b.md").read_text()
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_model_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    result = bench(bad, *QUICK, ok=False)
    assert result.exit_code == 1 and "cannot load" in result.output


def test_data_that_does_not_fit_the_model(tmp_path, tiny):
    np.savez(tmp_path / "big.npz", images=np.zeros((4, 10, 10), np.uint8), labels=np.zeros(4, np.int64))
    result = bench(tiny, "--data", tmp_path / "big.npz", *QUICK, ok=False)
    assert result.exit_code == 1 and "takes uint8 images of shape (N, 1, 8, 8)" in result.output


def test_unknown_profile_lists_the_valid_ones(tiny):
    result = bench(tiny, "--profile", "pi9", ok=False)
    assert result.exit_code == 1 and "rpi4" in result.output and "jetson-nano-cpu" in result.output


def test_profiles_command():
    result = runner.invoke(app, ["profiles"])
    assert result.exit_code == 0 and "rpi-zero-2w" in result.output and "cortex-a53" in result.output


def test_bench_never_imports_torch(tmp_path, tiny, half_right):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"  # any import of torch now fails
        "from kd_edge.cli import app\n"
        f"app(['bench', {str(tiny)!r}, '--data', {str(half_right)!r}, '--runs', '5', '--rounds', '1'], standalone_mode=False)\n"
        "print('torch imported:', sys.modules.get('torch') is not None)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert "torch imported: False" in completed.stdout


def test_memory_cap_falls_back_to_rlimit_without_cgroups():
    # In a child interpreter: RLIMIT_AS would also bind the test process.
    code = (
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from kd_edge.runtime import emulate\n"
        "emulate.CGROUP_ROOT = Path('/nonexistent-cgroups')\n"
        "report = emulate.cap_memory(100 << 20)\n"
        "print(report['enforced'], report['mechanism'].startswith('RLIMIT_AS'))\n"
        "small = np.ones(50 << 20, np.uint8)\n"
        "try:\n"
        "    np.ones(300 << 20, np.uint8)\n"
        "except MemoryError:\n"
        "    print('MemoryError')\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.stdout.split() == ["True", "True", "MemoryError"], completed.stdout + completed.stderr

"""`kd-edge pipeline` on YOLO frames: detectors trained, exported, quantized, bundled with their test frames, benched
and reported (F1 per class, drawn frames, latency a frame); the bundle checks on the board's code and on aarch64."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from kd_edge.cli import app
from tests.test_detection import CLASSES, squares_dataset, write_scene

# Slow (training, QEMU); on the worker that builds the aarch64 userland (tests/conftest.py's arm_cache).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("arm")]

FAST = """
[detect]
frame-size = 96
tile = 48
teacher-steps = 150
steps = 150
batch-size = 16

[bundle]
samples = 4

[bench]
threads = [1]
runs = 20
rounds = 1
warmup = 2
"""


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    """A finished pipeline on generated squares (shared: copy it before changing it)."""
    folder = tmp_path_factory.mktemp("detection-pipeline")
    data = squares_dataset(folder / "squares", groups=("a", "b", "c", "d"), frames=8)
    (folder / "fast.toml").write_text(FAST)
    args = [
        "pipeline",
        "--dataset",
        f"yolo:{data}",
        "--config",
        str(folder / "fast.toml"),
        "--out",
        str(folder / "run"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return folder / "run"


def test_the_pipeline_takes_yolo_frames_to_a_detector_bundle_and_its_report(detection_run):
    metrics = json.loads((detection_run / "metrics.json").read_text())
    assert list(metrics["wall_time_s"])[:6] == ["detect", "export", "quantize", "bundle", "bench", "report"]
    assert metrics["student"]["distilled"] and metrics["student"]["test"]["overall"]["f1"] > 0.8
    calibration = metrics["quantize"]["calibration"]  # --method auto: percentile for a detector
    assert metrics["quantize"]["metric"] == "f1" and (calibration["split"], calibration["method"]) == (
        "train",
        "percentile",
    )
    card = json.loads((detection_run / "bundle" / "model.json").read_text())
    assert card["task"] == "detect" and card["bundle"]["samples"]["frames"]
    with np.load(detection_run / "bundle" / "samples.npz") as samples:
        assert samples["images"].shape == (4, 96, 96, 3) and "labels" not in samples.files
        assert set(samples["boxes"][:, 0].astype(int)) <= {0, 1, 2, 3} and len(samples["boxes"]) >= 4
    assert "[detect]" in (detection_run / "kd-edge.toml").read_text()
    report = (detection_run / "report.md").read_text()
    for name in CLASSES:
        assert f"| {name} |" in report  # F1 per class, measured with the deployable model on the test frames
    assert "| all classes |" in report and "p50 a frame, host" in report and "(report/detections.png)" in report
    assert "data:image/png;base64," in (detection_run / "report.html").read_text()
    rerun = CliRunner().invoke(app, ["pipeline", "--config", str(detection_run / "kd-edge.toml"), "--out",
                                     str(detection_run)])  # fmt: skip
    assert rerun.exit_code == 0 and rerun.output.count("unchanged, kept") == 6, rerun.output


def test_the_bundle_scores_its_frames_on_the_boards_own_code_and_predicts_from_images(detection_run, tmp_path):
    """`python -m kd_edge.runtime.check` (what a board runs, torch-free) gives every form's F1 on samples.npz, the
    F1 the card reports for them; `kd-edge predict BUNDLE image` finds the squares."""
    check = subprocess.run([sys.executable, "-m", "kd_edge.runtime.check", str(detection_run / "bundle")],
                           capture_output=True, text=True, check=True)  # fmt: skip
    lines = check.stdout.strip().splitlines()
    assert len(lines) == 2 and all(": 4 samples, F1 " in line for line in lines), check.stdout
    write_scene(tmp_path, "frame-0001", [(0, 30, 20, 8), (1, 70, 44, 8)])
    result = CliRunner().invoke(app, ["predict", str(detection_run / "bundle"), str(tmp_path / "images"), "--json"])
    assert result.exit_code == 0, result.output
    (frame,) = json.loads(result.output)
    for name, x, y in (("car", 30, 20), ("bus", 70, 44)):  # a cell is 8 px here: its centre within 5.7 px
        assert min(np.hypot(d["x"] - x, d["y"] - y) for d in frame["detections"] if d["class"] == name) <= 5.7
    # The board's own command line (no typer there): the same objects, and the image drawn.
    board = [sys.executable, "-m", "kd_edge.runtime.board_cli", "predict", str(detection_run / "bundle"),
             str(tmp_path / "images" / "frame-0001.png"), "--json", "--draw", str(tmp_path / "drawn.png")]  # fmt: skip
    on_board = subprocess.run(board, capture_output=True, text=True, check=True)
    assert json.loads(on_board.stdout) == [frame] and (tmp_path / "drawn.png").stat().st_size > 0
    # --json FILE.json writes the same objects to that file, on either command line
    image = tmp_path / "images" / "frame-0001.png"
    result = CliRunner().invoke(
        app, ["predict", str(detection_run / "bundle"), str(image), "--json", str(tmp_path / "host.json")]
    )
    subprocess.run([*board[:5], str(image), "--json", str(tmp_path / "board.json")], check=True, capture_output=True)
    assert result.exit_code == 0, result.output
    for written in ("host.json", "board.json"):
        assert json.loads((tmp_path / written).read_text()) == [frame]


def test_the_detector_bundle_agrees_on_aarch64(detection_run, tmp_path, arm_cache):
    """Heatmaps and decoded objects of both forms, host against aarch64 ONNX Runtime under QEMU."""
    import shutil

    import onnxruntime as ort

    bundle = shutil.copytree(detection_run / "bundle", tmp_path / "bundle")
    out = tmp_path / "arm.json"
    args = ["verify-arm", str(bundle), "--cpu", "cortex-a53", "--onnxruntime", ort.__version__, "--cache-dir",
            str(arm_cache), "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {check["form"] for check in report["checks"]} == {"fp32", "int8"}
    for check in report["checks"]:
        assert check["passed"] and check["machine"] == "aarch64" and check["object_agreement"] >= 0.99
        assert check["host_accuracy"] == pytest.approx(check["arm_accuracy"], abs=0.05)  # F1 on the 4 frames
    assert "objects alike" in result.output
    assert json.loads((bundle / "model.json").read_text())["bundle"]["verified"]["cpus"] == ["cortex-a53"]

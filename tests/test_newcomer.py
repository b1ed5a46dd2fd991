"""The newcomer's path: errors before the wait, no silent minutes, predict, --version, hints to the right extra."""

import json
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.training import fit as train

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def counted_fits(monkeypatch):
    """Counts every call of the training loop: 0 means no epoch ran."""
    calls = []
    real = train.fit

    def counting(plan, hooks=None):
        calls.append(plan.stage)
        return real(plan, hooks)

    monkeypatch.setattr(train, "fit", counting)
    monkeypatch.setattr("kd_edge.training.networks.fit", counting)
    return calls


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--student-model", "cnn-smal"], "unknown model 'cnn-smal'"),
        (["--teacher-model", "resnet99"], "unknown model 'resnet99'"),
        (["--image-size", "32"], "--image-size resizes the images of a folder: dataset"),
        (["--alpha", "1", "--min-teacher-accuracy", "0.9"], "--alpha 1 trains the student alone"),
    ],
)
def test_bad_configurations_are_refused_before_any_training(tmp_path, easy_npz, counted_fits, extra, message):
    result = invoke("distill", "--dataset", f"npz:{easy_npz}", "--epochs", "1", "--out", tmp_path / "run", *extra)
    assert result.exit_code == 1 and message in " ".join(result.output.split()), result.output
    assert counted_fits == [] and not (tmp_path / "run").exists()


def test_a_model_that_does_not_fit_the_images_is_refused_before_any_training(tmp_path, counted_fits):
    from tests.conftest import easy_images

    images, labels = easy_images(30, size=18)
    np.savez(tmp_path / "odd.npz", images=images, labels=labels)
    result = invoke(
        "distill",
        "--dataset",
        f"npz:{tmp_path / 'odd.npz'}",
        "--student-model",
        "seed-student",
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 1 and "divisible by 4" in result.output
    assert counted_fits == [] and not (tmp_path / "run").exists()


def test_a_given_teacher_with_teacher_options_is_refused(tmp_path, easy_npz, teacher_run, counted_fits):
    result = invoke(
        "distill",
        "--dataset",
        f"npz:{easy_npz}",
        "--teacher",
        teacher_run / "teacher.pt",
        "--teacher-epochs",
        "5",
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 1 and "--teacher-model and --teacher-epochs would be ignored" in result.output
    assert counted_fits == []


def test_a_teacher_from_another_dataset_is_refused(tmp_path, teacher_run, counted_fits):
    from tests.conftest import easy_images

    images, labels = easy_images(60)
    np.savez(
        tmp_path / "other.npz", images=images[:, 0], labels=labels, classes=np.array(["a", "b", "c"])
    )  # same classes and shape
    result = invoke(
        "distill",
        "--dataset",
        f"npz:{tmp_path / 'other.npz'}",
        "--teacher",
        teacher_run / "teacher.pt",
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 1 and "was trained on" in result.output and "other.npz" in result.output
    assert counted_fits == [] and not (tmp_path / "run").exists()


def test_a_folder_with_a_finished_teacher_says_how_to_reuse_it(tmp_path, easy_npz, teacher_run):
    import shutil

    run = shutil.copytree(teacher_run, tmp_path / "run")
    result = invoke("distill", "--dataset", f"npz:{easy_npz}", "--out", run)
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and f"--teacher {run / 'teacher.pt'}" in message and "--force" in message


@pytest.mark.slow
def test_no_step_of_export_and_quantization_is_silent_for_long(tmp_path, student_checkpoint):
    """Every long step announces itself: the gaps between messages (and to the start and end) stay short."""
    from kd_edge.deploy.export import export_onnx
    from kd_edge.deploy.quantize import quantize
    from kd_edge.log import steps_shown
    from kd_edge.settings import QuantizeSettings

    times, messages = [time.perf_counter()], []
    with steps_shown(lambda message: (times.append(time.perf_counter()), messages.append(message))):
        exported = export_onnx(student_checkpoint, tmp_path)
        quantize(exported.path, QuantizeSettings(calibration_size=60, compare_latency=True))
    times.append(time.perf_counter())
    gaps = np.diff(times)
    assert max(gaps) < 3.0, list(zip(messages, gaps[1:], strict=False))
    kinds = " ".join(messages)
    # (the opt-in latency search's own messages: tests/test_quantize.py)
    for phase in ("export:", "calibrating", "test split", "bench: round"):
        assert phase in kinds


def test_a_step_that_reports_nothing_gets_a_heartbeat():
    """torch.export can take a minute without a word: kd-edge repeats its step with the time elapsed."""
    from kd_edge.log import heartbeat, steps_shown

    messages = []
    with steps_shown(messages.append), heartbeat("export: still working", every=0.05):
        time.sleep(0.3)
    assert len(messages) >= 3 and all(m.startswith("export: still working (") and m.endswith(" s)") for m in messages)
    count = len(messages)
    time.sleep(0.15)
    assert len(messages) == count  # it stops with the block


def test_onnx_runtime_calibration_logging_is_quiet_unless_verbose(tmp_path, exported_student, monkeypatch):
    import shutil

    model = shutil.copy(exported_student, tmp_path / "m.onnx")
    args = [
        "quantize",
        str(model),
        "--method",
        "entropy",
        "--calibration-size",
        "60",
        "--no-optimize-latency",
        "--no-compare-latency",
    ]
    quiet = runner.invoke(app, args)
    assert quiet.exit_code == 0 and "histogram" not in quiet.output
    monkeypatch.setenv("KD_EDGE_VERBOSE", "")  # --verbose sets it for the process: undone after the test
    loud = runner.invoke(app, ["--verbose", *args, "--force"])
    assert loud.exit_code == 0 and "histogram" in loud.output


def test_version():
    from kd_edge import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"kd-edge {__version__}"


def test_help_shows_the_default_presets_values_and_no_placeholders():
    distill = invoke("distill", "--help").output
    budget = "default: enough for 450|1200 optimiser steps"
    assert budget in " ".join(distill.split()) and "cnn-small|pooled-base" in "".join(distill.split())
    for command in ("distill", "export", "bench", "quantize", "bundle", "pipeline", "predict"):
        text = invoke(command, "--help").output
        options = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("-"))
        assert (
            "<bool>" not in text and "<list[" not in options and "{source}" not in text and "the preset's" not in text
        )
        described = " ".join(text.split("Options:", 1)[-1].split())  # the usage line names arguments {LIKE_THIS}
        assert re.search(r"\{[A-Za-z_]+\}", described) is None, "an unformatted {NAME} in an option's help"


def test_predict_image_files_a_folder_and_an_npz(tmp_path, exported_student, easy_npz):
    data = np.load(easy_npz)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(data["images"][i]).save(folder / f"{i}.png")
    Image.fromarray(data["images"][3]).resize((32, 32)).convert("RGB").save(tmp_path / "big.jpg")
    np.savez(tmp_path / "few.npz", images=data["images"][4:6])
    result = invoke(
        "predict", exported_student, folder, tmp_path / "big.jpg", tmp_path / "few.npz", "--json", "-k", "2"
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["input"].split("/")[-1] for row in rows] == [
        "0.png",
        "1.png",
        "2.png",
        "big.jpg",
        "few.npz[0]",
        "few.npz[1]",
    ]
    classes = ["a", "b", "c"]
    expected = [classes[label] for label in data["labels"][[0, 1, 2, 3, 4, 5]]]
    assert [row["top"][0]["class"] for row in rows] == expected  # the easy classes, recognised
    for row in rows:
        first, second = (t["probability"] for t in row["top"])
        assert 1 >= first >= second >= 0
    assert rows[3]["note"] == "resized from 32x32 to 16x16"
    # --json FILE.json (as `kd-edge bench --json FILE`): the same rows in the file, the table on the screen
    written = invoke("predict", exported_student, folder, "--json", tmp_path / "p.json", "-k", "2")
    assert written.exit_code == 0 and "predictions written to" in written.output, written.output
    assert json.loads((tmp_path / "p.json").read_text()) == rows[:3]
    refused = invoke("predict", exported_student, folder, tmp_path / "q.json")  # a .json is no image
    assert refused.exit_code == 1 and "--json" in refused.output and not (tmp_path / "q.json").exists()
    # a class-folder tree: its folders are named, to give instead
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    shutil.copy(folder / "0.png", tree / "a" / "0.png")
    nested = invoke("predict", exported_student, tree)
    assert nested.exit_code == 1 and "holds folders (a)" in nested.output and str(tree / "a") in nested.output


def test_predict_json_equals_file_writes_there(tmp_path, exported_student, easy_npz, monkeypatch, capsys):
    """`--json=FILE.json`, as the board's command line and `kd-edge bench --json=FILE` take it."""
    import gc

    from kd_edge.cli import main

    monkeypatch.setattr(gc, "freeze", lambda: None)  # main's exit shortcut would keep this test process's objects
    Image.fromarray(np.load(easy_npz)["images"][0]).save(tmp_path / "x.png")
    out = tmp_path / "p.json"
    monkeypatch.setattr(
        sys, "argv", ["kd-edge", "predict", str(exported_student), str(tmp_path / "x.png"), f"--json={out}"]
    )
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0, capsys.readouterr()
    assert json.loads(out.read_text())[0]["top"][0]["class"] in ("a", "b", "c")


def test_predict_says_what_is_wrong_with_float_pixels(tmp_path, exported_student):
    np.savez(tmp_path / "floats.npz", images=np.random.default_rng(0).random((2, 16, 16), dtype=np.float32))
    result = invoke("predict", exported_student, tmp_path / "floats.npz")
    assert (
        result.exit_code == 1
        and "raw uint8 pixel values 0-255, got float32" in result.output
        and "astype('uint8')" in result.output
    )

    Image.fromarray(np.ones((16, 16), np.float32)).save(tmp_path / "floats.tif")  # a float TIFF: no fixed range
    result = invoke("predict", exported_student, tmp_path / "floats.tif")
    assert result.exit_code == 1 and "save the image with 8 or 16 bits" in result.output, result.output


@pytest.mark.slow
def test_predict_needs_no_torch(tmp_path, exported_student, easy_npz):
    Image.fromarray(np.load(easy_npz)["images"][0]).save(tmp_path / "x.png")
    code = (
        "import sys; sys.modules['torch'] = None\nfrom kd_edge.cli import app\n"
        f"app(['predict', {str(exported_student)!r}, {str(tmp_path / 'x.png')!r}, '--json'])"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)[0]["top"][0]["class"] in ("a", "b", "c")


@pytest.mark.slow
def test_bench_scores_the_models_own_dataset_by_default(tmp_path, exported_student, easy_npz):
    from kd_edge.data import load_dataset
    from kd_edge.runtime import OnnxModel

    out = tmp_path / "b.json"
    result = invoke("bench", exported_student, "--runs", "10", "--rounds", "1", "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    test = load_dataset(f"npz:{easy_npz}").test
    assert report["results"][0]["accuracy"] == OnnxModel(exported_student).accuracy(test.images, test.labels)
    assert "(the dataset in the model card)" in report["data"]


def test_a_profile_with_more_cores_than_the_host_says_so():
    from kd_edge.runtime.bench.harness import board_cores
    from kd_edge.runtime.bench.profiles import get_profile

    fewer = board_cores(get_profile("rpi4"), {"read_back": [0, 1]})
    assert fewer["profile_cores"] == 4 and "this host gives 2" in fewer["note"]
    assert "note" not in board_cores(get_profile("rpi4"), {"read_back": [0, 1, 2, 3]})


def test_quantize_alone_points_to_its_own_extra(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    result = invoke("quantize", tmp_path / "m.onnx")
    assert result.exit_code == 1 and "pip install 'kd-edge[quantize]'" in result.output


def test_commands_end_with_the_next_step(tmp_path, easy_npz):
    result = invoke(
        "teacher", "--dataset", f"npz:{easy_npz}", "--epochs", "2", "--batch-size", "32", "--out", tmp_path / "t"
    )
    assert f"next: kd-edge distill --dataset npz:{easy_npz} --teacher {tmp_path / 't' / 'teacher.pt'}" in " ".join(
        result.output.split()
    )

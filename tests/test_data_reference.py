"""One data reference travels with every model: a folder dataset trained with --image-size is found again,
resized the same way, by every later stage (export --int8, quantize, qat, bench)."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.runtime.session import read_card
from tests.conftest import easy_images

FAST_INT8 = ["--no-optimize-latency", "--no-compare-latency"]


@pytest.fixture(scope="module")
def resized_run(tmp_path_factory):
    """A folder: dataset of 24x24 PNGs, trained at --image-size 16."""
    root = tmp_path_factory.mktemp("folder")
    images, labels = easy_images(40, size=24)
    for split, part in (("train", slice(0, 60)), ("val", slice(60, 90)), ("test", slice(90, 120))):
        for number, (image, label) in enumerate(zip(images[part], labels[part], strict=True)):
            folder = root / "pets" / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0]).save(folder / f"{number}.png")
    out = root / "run"
    result = CliRunner().invoke(
        app,
        [
            "distill", "--dataset", f"folder:{root / 'pets'}", "--image-size", "16", "--student-model", "cnn-tiny",
            "--teacher-model", "cnn-small", "--epochs", "2", "--batch-size", "16", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, out


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_every_later_stage_reads_the_data_as_training_did(resized_run):
    root, run = resized_run
    exports = root / "exports"
    invoke("export", run, "--onnx", "--int8", "--out", exports, *FAST_INT8)
    fp32, int8 = exports / "run.onnx", exports / "run.int8.onnx"
    card = read_card(fp32)
    assert card.data.image_size == 16 and tuple(card.input_shape) == (1, 16, 16)
    invoke("quantize", fp32, "--out", root / "again.int8.onnx", "--max-accuracy-drop", "50", *FAST_INT8)
    bench = invoke("bench", fp32, int8, "--runs", "5", "--rounds", "1", "--warmup", "1", "--json", root / "b.json")
    rows = json.loads((root / "b.json").read_text())["results"]
    assert all(row["accuracy"] is not None for row in rows), bench.output  # the card's data, resized to 16
    invoke("qat", run, "--epochs", "1", "--out", root / "qat", *FAST_INT8)
    assert (root / "qat" / "run.qat.onnx").is_file()


def test_a_checkpoint_records_one_data_reference(resized_run):
    from kd_edge.training.checkpoint import load_checkpoint

    _, run = resized_run
    ref = load_checkpoint(run / "student.pt").card.data
    assert ref.dataset.startswith("folder:") and ref.image_size == 16
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["student"]["test_accuracy"])

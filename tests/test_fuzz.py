"""Hostile input, generated: dataset files, model cards, ONNX files and options. Only documented errors, never a crash.

Every reader here takes files from users; hypothesis feeds them damaged and adversarial
variants, and each must either read them or raise its documented ``KdEdgeError``.
"""

import io
import json
import math
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.data.folders import Reading, load_image_folder
from kd_edge.data.sources import load_npz_dataset, read_idx
from kd_edge.errors import ConfigError, DatasetError, KdEdgeError, ModelCardError, ModelFileError
from kd_edge.runtime.card import ModelCard
from kd_edge.runtime.safety import check_model_file
from kd_edge.settings.files import read_toml
from kd_edge.settings.schedules import parse_schedule
from kd_edge.settings.training import teacher_mixing

# CI checks the same examples every run (a fresh search each run would make CI flaky); set
# KD_EDGE_FUZZ_RANDOM=1 to search new ones (which is how the IDX example below was found).
DERANDOMIZE = not os.environ.get("KD_EDGE_FUZZ_RANDOM")
FUZZ = settings(max_examples=150, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])


SCRATCH = tempfile.TemporaryDirectory(prefix="kd-edge-fuzz-")  # the examples' files, removed when the tests end


def scratch_file(data: bytes, name: str) -> Path:
    path = Path(SCRATCH.name) / name  # examples run one at a time: each overwrites the last one's file
    path.write_bytes(data)
    return path


# --- IDX ---------------------------------------------------------------------------------------------


def idx_bytes(dims: list[int], payload: bytes, magic: bytes = b"\x00\x00\x08") -> bytes:
    return magic + bytes([len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


@FUZZ
@given(
    dims=st.lists(st.integers(0, 2**32 - 1), max_size=6),
    payload=st.binary(max_size=512),
    magic=st.sampled_from([b"\x00\x00\x08", b"\x00\x00\x09", b"\x01\x00\x08", b""]),
    cut=st.integers(0, 64),
)
@example(dims=[0, 228, 876, 16310, 48655, 58193], payload=b"", magic=b"\x00\x00\x08", cut=0)  # found in CI
def test_idx_headers(dims, payload, magic, cut):
    data = idx_bytes(dims, payload, magic)
    data = data[: len(data) - cut] if cut else data
    try:
        array = read_idx(scratch_file(data, "x-idx3-ubyte"))
    except DatasetError:
        return
    assert array.dtype == np.uint8 and list(array.shape) == dims and array.size == len(data) - 4 - 4 * len(dims)


@FUZZ
@given(st.binary(max_size=300))
def test_idx_arbitrary_bytes(data):
    try:
        read_idx(scratch_file(data, "x-idx3-ubyte"))
    except DatasetError:
        pass


# --- npz ---------------------------------------------------------------------------------------------

dtypes = st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.int8, np.bool_])


@FUZZ
@given(
    n=st.integers(0, 40),
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=4),
    image_dtype=dtypes,
    label_dtype=dtypes,
    labels=st.lists(st.integers(-3, 12), max_size=40),
    classes=st.none() | st.lists(st.text(max_size=3), max_size=12),
    pixels=st.floats(allow_nan=True, allow_infinity=True),
)
@pytest.mark.slow
def test_npz_datasets(n, shape, image_dtype, label_dtype, labels, classes, pixels):
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: hostile input, on purpose
        images = np.full((n, *shape), pixels if np.issubdtype(image_dtype, np.floating) else 7, dtype=image_dtype)
    arrays = {"images": images, "labels": np.array(labels, dtype=np.int64).astype(label_dtype)}
    if classes is not None:
        arrays["classes"] = np.array(classes, dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        dataset = load_npz_dataset(scratch_file(buffer.getvalue(), "d.npz"))
    except DatasetError:
        return
    for split in (dataset.train, dataset.val, dataset.test):
        assert len(split) > 0 and split.images.dtype == np.uint8
        assert split.labels.min() >= 0 and split.labels.max() < dataset.num_classes


@FUZZ
@given(st.binary(max_size=400))
def test_npz_arbitrary_bytes(data):
    with pytest.raises(DatasetError):
        load_npz_dataset(scratch_file(data, "d.npz"))


# --- image folders -----------------------------------------------------------------------------------


def png(width: int, height: int, mode: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), color=128 if mode == "L" else (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


image_files = st.one_of(
    st.builds(png, st.integers(1, 12), st.integers(1, 12), st.sampled_from(["L", "RGB", "RGBA"])),
    st.binary(max_size=64),  # not an image at all
    st.builds(lambda w, h, cut: png(w, h, "L")[:cut], st.integers(1, 8), st.integers(1, 8), st.integers(0, 60)),
)


@FUZZ
@given(
    layout=st.dictionaries(
        st.sampled_from(["train", "val", "test"]),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(image_files, max_size=4), max_size=3),
        max_size=3,
    ),
    image_size=st.none() | st.integers(8, 16),
    bad_images=st.sampled_from(["refuse", "skip"]),
)
@pytest.mark.slow
def test_image_folders(layout, image_size, bad_images):
    with tempfile.TemporaryDirectory(prefix="kd-edge-fuzz-folder-") as folder:  # one per example: none left behind
        root = Path(folder)
        for split, classes in layout.items():
            (root / split).mkdir()
            for name, files in classes.items():
                (root / split / name).mkdir()
                for number, data in enumerate(files):
                    (root / split / name / f"{number}.png").write_bytes(data)
        try:
            dataset = load_image_folder(root, Reading(image_size, None, (0.8, 0.1, 0.1), bad_images))
        except DatasetError:
            return
        assert len(dataset.train) and len(dataset.val) and len(dataset.test)


# --- model cards -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
card_keys = st.sampled_from(
    ["classes", "input_shape", "layout", "mean", "std", "data", "model", "parameters", "test_accuracy", "quantization"]
)


@pytest.mark.slow
@FUZZ
@given(st.dictionaries(card_keys, json_values.map(json.dumps) | st.text(max_size=12), max_size=10))
def test_model_card_metadata(values):
    metadata = {f"kd_edge.{key}": value for key, value in values.items()}
    try:
        card = ModelCard.from_metadata(metadata)
    except ModelCardError:
        return
    channels = card.input_shape[0]
    assert len(card.mean) == len(card.std) == channels and all(s > 0 and math.isfinite(s) for s in card.std)
    assert card.classes and all(isinstance(c, str) for c in card.classes)


# --- ONNX files --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_bytes(exported_student):
    return exported_student.read_bytes()


@settings(max_examples=150, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_damaged_onnx_files(model_bytes, data):
    """Flipped bytes, cut files and spliced garbage: the safety check reads them or names the problem."""
    position = data.draw(st.integers(0, len(model_bytes) - 1))
    damage = data.draw(st.sampled_from(["flip", "cut", "splice"]))
    if damage == "flip":
        damaged = bytearray(model_bytes)
        damaged[position] ^= data.draw(st.integers(1, 255))
    elif damage == "cut":
        damaged = model_bytes[:position]
    else:
        damaged = model_bytes[:position] + data.draw(st.binary(min_size=1, max_size=32)) + model_bytes[position:]
    try:
        check_model_file(scratch_file(bytes(damaged), "model.onnx"))
    except ModelFileError:
        pass


# --- options -----------------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=24))
def test_schedule_and_weight_options(text):
    for parse in (lambda t: parse_schedule(t, "--alpha-schedule"), lambda t: teacher_mixing(t, 2)):
        try:
            parse(text)
        except ConfigError:
            pass


@FUZZ
@given(st.text(max_size=200))
def test_config_files(text):
    try:
        read_toml(scratch_file(text.encode(), "kd-edge.toml"))
    except ConfigError:
        pass


option_values = st.one_of(
    st.text(max_size=8), st.integers(-(10**6), 10**6).map(str), st.floats(allow_nan=True).map(str)
)


@settings(max_examples=60, deadline=None, derandomize=DERANDOMIZE)
@given(
    option=st.sampled_from(
        [
            "--epochs", "--alpha", "--temperature", "--teacher-weights", "--temperature-schedule", "--mode",
            "--batch-size", "--lr", "--kd-loss", "--init", "--optimizer", "--threads", "--precision", "--seed",
        ]
    ),
    value=option_values,
)  # fmt: skip
@pytest.mark.slow
def test_distill_options(option, value):
    """Any value of any option: a usage error (2) or a one-paragraph refusal (1), never a traceback."""
    missing = "npz:/nonexistent/kd-edge-fuzz.npz"  # valid settings end at the data, before any training
    result = CliRunner().invoke(app, ["distill", "--dataset", missing, "--out", f"{SCRATCH.name}/run", option, value])
    assert result.exit_code in (1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert isinstance(KdEdgeError("x"), ValueError)

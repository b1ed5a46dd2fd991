"""The model card: one schema, written and read the same way in ONNX metadata, model.json and checkpoints."""

import json

import pytest

from kd_edge.errors import ModelCardError
from kd_edge.runtime import DataRef, ModelCard, read_card
from kd_edge.runtime.card import write_card

CARD = ModelCard(
    classes=("cat", "dog"),
    input_shape=(3, 32, 32),
    mean=(0.5, 0.4, 0.3),
    std=(0.2, 0.2, 0.25),
    data=DataRef(dataset="folder:/data/pets", data_dir=None, image_size=32),
    model="cnn-small",
    parameters=1234,
    macs=56789,
    test_accuracy=0.91,
    quantization={"mode": "static", "excluded_nodes": ["conv1"]},
    source_sha256="ab" * 32,
    versions={"kd_edge": "0.1.0", "opset": 17},
    resize="bicubic",
)


def test_metadata_round_trip():
    metadata = CARD.to_metadata()
    assert all(key.startswith("kd_edge.") and isinstance(value, str) for key, value in metadata.items())
    # The keys of DESIGN.md's contract, in the forms other tools read.
    assert json.loads(metadata["kd_edge.classes"]) == ["cat", "dog"] and metadata["kd_edge.layout"] == "NCHW"
    assert json.loads(metadata["kd_edge.input_shape"]) == [3, 32, 32] and json.loads(metadata["kd_edge.std"]) == [
        0.2,
        0.2,
        0.25,
    ]
    assert ModelCard.from_metadata(metadata) == CARD


def test_the_resize_filter_is_a_plain_string_and_older_cards_get_the_one_their_training_used():
    assert CARD.to_metadata()["kd_edge.resize"] == "bicubic"  # what a C++ consumer reads
    older = {key: value for key, value in CARD.to_metadata().items() if key != "kd_edge.resize"}
    assert ModelCard.from_metadata(older).resize_filter == "bicubic"  # folders were always read bicubic
    rule = {"stride": 8, "threshold": 0.5}
    detector = ModelCard.from_dict({**CARD.to_dict(), "resize": None, "task": "detect", "detection": rule})
    assert detector.resize_filter == "bilinear"


def test_json_round_trip():
    assert ModelCard.from_dict(json.loads(json.dumps(CARD.to_dict()))) == CARD


def test_written_into_an_onnx_file_and_read_back(tmp_path):
    from tests.test_bench import write_tiny_model

    path = write_tiny_model(tmp_path / "m.onnx")
    card = ModelCard(classes=("a", "b", "c"), input_shape=(1, 8, 8), mean=(0.1,), std=(0.2,), test_accuracy=0.5)
    write_card(path, card)
    assert read_card(path) == card


def test_a_card_naming_more_or_fewer_classes_than_the_model_scores_is_refused_on_loading(tmp_path):
    """Without this, predict ends in an IndexError on the first class past the end."""
    from kd_edge.runtime import OnnxModel
    from tests.test_bench import write_tiny_model

    path = write_tiny_model(tmp_path / "m.onnx", classes=3)
    write_card(path, ModelCard(classes=("a", "b", "c", "d", "e"), input_shape=(1, 8, 8), mean=(0.1,), std=(0.2,)))
    with pytest.raises(ModelCardError, match="names 5 classes but the model outputs 3 scores"):
        OnnxModel(path)


def test_unknown_keys_are_ignored_not_rejected():
    metadata = {**CARD.to_metadata(), "kd_edge.from_the_future": "1", "other.tool": "x"}
    assert ModelCard.from_metadata(metadata) == CARD


@pytest.mark.parametrize(
    "key", ["kd_edge.classes", "kd_edge.input_shape", "kd_edge.layout", "kd_edge.mean", "kd_edge.std"]
)
def test_a_missing_required_key_is_named(key):
    metadata = CARD.to_metadata()
    del metadata[key]
    with pytest.raises(ModelCardError, match=f"lacks {key}"):
        ModelCard.from_metadata(metadata, "m.onnx")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("kd_edge.mean", "[0.5, 0.4]", "kd_edge.mean has 2 values but the input has 3"),
        ("kd_edge.std", '["a", "b", "c"]', "kd_edge.std must be a list of finite numbers"),
        ("kd_edge.std", "[0.2, 0.0, 0.2]", "kd_edge.std must be positive"),
        ("kd_edge.mean", "[NaN, 0, 0]", "kd_edge.mean must be a list of finite numbers"),
        ("kd_edge.input_shape", "[3, 32]", "kd_edge.input_shape must be"),
        ("kd_edge.input_shape", "[3, -1, 32]", "kd_edge.input_shape must be"),
        ("kd_edge.classes", "[]", "kd_edge.classes must be a non-empty list"),
        ("kd_edge.classes", "{not json", "kd_edge.classes is not valid JSON"),
        ("kd_edge.layout", "NWHC", "kd_edge.layout must be one of"),
        ("kd_edge.layout", "NHWC", "kd_edge.layout of a float32 input is NCHW"),
        ("kd_edge.input_type", "int8", "kd_edge.input_type must be one of"),
        ("kd_edge.channel_order", "GRAY", "kd_edge.channel_order GRAY does not fit 3 channel"),
        ("kd_edge.resize", "lanczos", "kd_edge.resize must be one of"),
        ("kd_edge.test_accuracy", "1.5", "kd_edge.test_accuracy must be a fraction"),
        ("kd_edge.parameters", "-3", "kd_edge.parameters must be a count"),
        ("kd_edge.data", '{"data_dir": "x"}', 'kd_edge.data must be an object with a "dataset" name'),
    ],
)
def test_a_malformed_key_is_named(key, value, message):
    metadata = {**CARD.to_metadata(), key: value}
    with pytest.raises(ModelCardError, match=message):
        ModelCard.from_metadata(metadata, "m.onnx")


def test_cards_are_keyword_only():
    with pytest.raises(TypeError):
        ModelCard(("a",), (1, 8, 8), (0.1,), (0.2,))

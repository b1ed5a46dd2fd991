"""Checkpoints: round trip with metadata, atomic replacement, and refusal of bad or unsafe files."""

import os

import pytest
import torch

from kd_edge.errors import CheckpointError
from kd_edge.runtime.card import DataRef, ModelCard
from kd_edge.training.checkpoint import load_checkpoint, save_checkpoint
from kd_edge.training.models import ModelSpec

CARD = ModelCard(
    classes=("a", "b", "c"), input_shape=(1, 16, 16), mean=(0.2,), std=(0.3,), data=DataRef(dataset="toy"), model="cnn"
)


def saved(tmp_path, name="model.pt", seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec("cnn", num_classes=3, in_channels=1, image_size=16, kwargs={"widths": (4, 8), "hidden": 8})
    model = spec.build()
    path = save_checkpoint(tmp_path / name, model, spec, CARD, {"test_accuracy": 0.5}, {"stage": "teacher"})
    return path, model


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    path, model = saved(tmp_path)
    ckpt = load_checkpoint(path)
    assert ckpt.spec.name == "cnn" and ckpt.spec.kwargs == {"widths": (4, 8), "hidden": 8}
    assert ckpt.card == CARD and ckpt.metrics == {"test_accuracy": 0.5} and ckpt.kd_edge_version
    rebuilt = ckpt.build_model().eval()
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(rebuilt(x), model.eval()(x))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_crash_during_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path, _ = saved(tmp_path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        saved(tmp_path, seed=1)
    assert path.read_bytes() == before
    assert load_checkpoint(path).metrics == {"test_accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path, _ = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_plain_state_dict_is_not_a_kd_edge_checkpoint(tmp_path):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a kd-edge checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


class Exploit:
    """Unpickling this would create a file: proof that pickled code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_code_never_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    torch.save({"format": "kd-edge-checkpoint", "payload": Exploit(str(sentinel))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="unsafe"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not sentinel.exists()


def test_pickled_code_in_an_init_file_or_a_training_state_never_runs(tmp_path):
    from kd_edge.training.checkpoint import TrainingStateFile, load_weights

    sentinel = tmp_path / "pwned"
    torch.save({"fc.weight": Exploit(str(sentinel))}, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="unsafe"):
        load_weights(tmp_path / "weights.pth")
    torch.save({"model": Exploit(str(sentinel))}, tmp_path / "student.state.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        TrainingStateFile(tmp_path, "student").load()
    assert not sentinel.exists()


def test_no_loader_in_the_package_enables_pickle_code_execution():
    from pathlib import Path

    import kd_edge

    for source in Path(kd_edge.__file__).parent.rglob("*.py"):
        for line in source.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{source}: {line.strip()}"

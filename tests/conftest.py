"""Shared fixtures: tiny datasets the tests make themselves, and no network access."""

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Tests never download: a missing dataset must fail fast with its message."""
    monkeypatch.setenv("KD_EDGE_OFFLINE", "1")
    monkeypatch.delenv("KD_EDGE_DATA", raising=False)


def easy_images(n_per_class: int, num_classes: int = 3, size: int = 16, channels: int = 1, seed: int = 0):
    """Images a tiny CNN learns in one epoch: class k has a bright square in its own place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    images = rng.integers(0, 60, size=(len(labels), channels, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = (label * 5) % (size - 4)
        images[i, :, row : row + 4, 2:6] = 250
    order = rng.permutation(len(labels))
    return images[order], labels[order].astype(np.int64)


@pytest.fixture
def easy_npz(tmp_path):
    """An npz dataset of 3 easy classes, 16x16 grayscale, 60 images per class."""
    images, labels = easy_images(60)
    path = tmp_path / "easy.npz"
    np.savez(path, images=images[:, 0], labels=labels, classes=np.array(["a", "b", "c"]))
    return path


@pytest.fixture
def student_checkpoint(tmp_path, easy_npz):
    """A trained cnn-tiny student on the easy dataset (a few seconds)."""
    from kd_edge.config import DataConfig, RunConfig, TeacherConfig, TrainConfig
    from kd_edge.distill import train_teacher

    config = TeacherConfig(DataConfig(f"npz:{easy_npz}"), TrainConfig("cnn-tiny", epochs=3, batch_size=32), RunConfig(str(tmp_path / "run")))
    train_teacher(config)
    path = tmp_path / "run" / "student.pt"
    (tmp_path / "run" / "teacher.pt").rename(path)
    return path

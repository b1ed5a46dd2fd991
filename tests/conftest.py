"""Shared fixtures: tiny datasets the tests make themselves, trained once per session, and no network access."""

import os
import shutil

# One torch thread per test process: two xdist workers on 2 cores, each with torch's default of a thread per
# core (and the subprocesses they start), oversubscribe the CPU and OpenMP's spinning threads wait on each
# other. Measured here: two tiny `kd-edge distill` runs side by side took 37.6 s at 2 threads each, 21.1 s at
# 1; alone, 19.9 s against 14.0 s. Set before torch is imported, and inherited by every child process.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Tests never download: a missing dataset must fail fast with its message."""
    monkeypatch.setenv("KD_EDGE_OFFLINE", "1")
    monkeypatch.delenv("KD_EDGE_DATA", raising=False)


@pytest.fixture(autouse=True)
def no_system_datasets(monkeypatch, tmp_path):
    """Tests see only the data they make: not a Fashion-MNIST the host has installed under /usr/share/datasets."""
    from kd_edge.data import sources

    monkeypatch.setattr(sources, "SYSTEM_ROOTS", {"fashion-mnist": [tmp_path / "host" / "usr/share/datasets"]})


@pytest.fixture(autouse=True)
def folder_cache(monkeypatch, tmp_path):
    """Decoded image folders are cached in the test's own folder, not the user's ~/.cache."""
    from kd_edge.data import folders

    monkeypatch.setattr(folders, "cache_dir", lambda: tmp_path / "folder-cache")
    return tmp_path / "folder-cache"


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


@pytest.fixture(scope="session")
def easy_npz(tmp_path_factory):
    """An npz dataset of 3 easy classes, 16x16 grayscale, 100 images per class (read-only: shared by all tests)."""
    images, labels = easy_images(100)
    path = tmp_path_factory.mktemp("data") / "easy.npz"
    np.savez(path, images=images[:, 0], labels=labels, classes=np.array(["a", "b", "c"]))
    return path


def train_teacher_run(out, easy_npz, model: str, epochs: int):
    from kd_edge.settings import DataSettings, NetworkSettings, OptimSettings, TeacherSettings
    from kd_edge.training.distill import train_teacher

    settings = TeacherSettings(
        data=DataSettings(dataset=f"npz:{easy_npz}"),
        teacher=NetworkSettings(model=model, epochs=epochs, steps=1),
        optim=OptimSettings(batch_size=32),
    )
    train_teacher(settings, out)
    return out


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory, easy_npz):
    """A run folder with a cnn-small teacher.pt on the easy dataset (shared: copy it before changing it)."""
    return train_teacher_run(tmp_path_factory.mktemp("teacher") / "run", easy_npz, "cnn-small", epochs=2)


@pytest.fixture(scope="session")
def student_checkpoint(tmp_path_factory, easy_npz):
    """A trained cnn-tiny checkpoint, named student.pt, in a run folder of its own (shared, read-only)."""
    run = train_teacher_run(tmp_path_factory.mktemp("student") / "run", easy_npz, "cnn-tiny", epochs=3)
    path = run / "student.pt"
    (run / "teacher.pt").rename(path)
    return path


@pytest.fixture(scope="session")
def exported_student(tmp_path_factory, student_checkpoint):
    from kd_edge.deploy.export import export_onnx

    return export_onnx(student_checkpoint, tmp_path_factory.mktemp("exported")).path


@pytest.fixture
def fp32_model(tmp_path, exported_student):
    """The exported student copied into this test's folder, so that outputs beside it do not collide."""
    folder = tmp_path / "exports"
    folder.mkdir()
    return shutil.copy(exported_student, folder / exported_student.name)


OLDEST_ONNXRUNTIME = "1.16.3"  # the oldest release kd-edge supports on a board


@pytest.fixture(scope="module")
def arm_cache():
    """The aarch64 userland in the user's cache, as `kd-edge verify-arm` keeps it (XDG_CACHE_HOME moves it): built
    once per machine, about a minute; skips where the registries cannot be reached."""
    import onnxruntime as ort

    from kd_edge.deploy import arm_userland as module
    from kd_edge.errors import ArmSetupError

    cache = module.cache_root(None).parent
    try:
        for release in (OLDEST_ONNXRUNTIME, ort.__version__):
            module.prepare_userland(module.cache_root(str(cache)), release, progress=lambda message: None)
    except ArmSetupError as exc:
        pytest.skip(f"no aarch64 userland here: {exc}")
    return cache


def pytest_collection_modifyitems(items):
    """Slow tests first: under two workers the long ones then overlap, instead of the run ending on one worker
    (single-threaded, see above) while the other waits."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

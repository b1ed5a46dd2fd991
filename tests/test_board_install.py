"""The board install as a bundle's README writes it: a fresh virtual environment, no package index, kd-edge from the
bundle's own wheel next to the board's numpy and ONNX Runtime (here the oldest supported release); then the
runtime's commands run from there, without torch, typer or the source tree."""

import os
import subprocess
import sys
import zipfile

import pytest

from kd_edge import __version__
from kd_edge.deploy.board_wheel import wheel_name, write_wheel
from kd_edge.deploy.host_runtimes import requirements

BOARD_RUNTIME = "1.16.3"  # the oldest ONNX Runtime kd-edge supports: what an older board image carries


def clean_environment() -> dict:
    """No pip configuration (this machine's find-links and constraints) and no path to kd-edge's source."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "PYTHON")) and key not in ("VIRTUAL_ENV",)
    }


def run(command, cwd, check=True):
    completed = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=clean_environment(), capture_output=True, text=True
    )
    if check:
        assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


@pytest.fixture(scope="module")
def board_wheelhouse(tmp_path_factory):
    """The board's own numpy and ONNX Runtime as wheels (fetched once from the package index, as a board image
    would hold them); skipped with the reason where the index cannot be reached."""
    folder = tmp_path_factory.mktemp("board-wheels")
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", folder]
    completed = run([*download, *requirements(BOARD_RUNTIME)], folder, check=False)
    if completed.returncode != 0:
        pytest.skip(f"the package index is not reachable for the board's runtime: {completed.stderr.strip()[-300:]}")
    return folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, exported_student):
    from kd_edge.deploy.bundle import write_bundle
    from kd_edge.deploy.quantize import quantize
    from kd_edge.settings import BundleSettings, QuantizeSettings

    folder = tmp_path_factory.mktemp("bundle")
    int8 = quantize(exported_student, QuantizeSettings(calibration_size=60, compare_latency=False),
                    out=folder / "s.int8.onnx").path  # fmt: skip
    settings = BundleSettings(samples=30, form="int8")
    return write_bundle(folder / "bundle", settings, fp32=exported_student, int8=int8).folder


def test_the_wheel_is_kd_edge_alone_and_needs_only_numpy_and_onnxruntime(tmp_path):
    path = write_wheel(tmp_path)
    assert path.name == wheel_name(__version__)
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"kd_edge-{__version__}.dist-info/METADATA").decode()
        record = wheel.read(f"kd_edge-{__version__}.dist-info/RECORD").decode()
    assert "kd_edge/runtime/board_cli.py" in names and not any("__pycache__" in name for name in names)
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(line.split()[1].split(">")[0] for line in base) == ["numpy", "onnxruntime"]
    assert set(names) == {line.split(",")[0] for line in record.splitlines()}  # RECORD lists every file


@pytest.mark.slow
@pytest.mark.xdist_group("board-install")
def test_a_fresh_environment_installs_from_the_bundle_offline_and_runs_it(bundle, board_wheelhouse, tmp_path):
    venv = tmp_path / "board"
    run([sys.executable, "-m", "venv", venv], tmp_path)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index"]
    run([*pip, "--find-links", board_wheelhouse, "--find-links", bundle, "kd-edge"], tmp_path)  # as the README says
    python, kd_edge = venv / "bin" / "python", venv / "bin" / "kd-edge"

    where = run([python, "-c", "import kd_edge, onnxruntime as o; print(kd_edge.__file__, o.__version__)"], tmp_path)
    assert str(venv) in where.stdout and BOARD_RUNTIME in where.stdout  # the wheel's kd-edge, not the source tree
    for absent in ("torch", "typer", "PIL"):
        assert run([python, "-c", f"import {absent}"], tmp_path, check=False).returncode != 0, absent

    checked = run([kd_edge, "check", bundle], tmp_path)
    assert "int8: 30 samples, accuracy" in checked.stdout and "fp32: 30 samples" in checked.stdout
    predicted = run([kd_edge, "predict", bundle, bundle / "samples.npz", "--top-k", "1"], tmp_path)
    assert len(predicted.stdout.splitlines()) == 30
    benched = run([kd_edge, "bench", bundle, "--threads", "1", "--runs", "20", "--rounds", "1", "--warmup", "2"],
                  tmp_path)  # fmt: skip
    assert "Profile: rpi4" in benched.stdout and "| model | threads |" in benched.stdout
    from PIL import Image

    Image.new("L", (16, 16)).save(tmp_path / "frame.png")
    image = run([kd_edge, "predict", bundle, tmp_path / "frame.png"], tmp_path, check=False)
    assert image.returncode == 1 and "needs Pillow" in image.stderr

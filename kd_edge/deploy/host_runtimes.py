"""Other ONNX Runtime releases on this host: one virtual environment per version, made once and cached.

A board often carries an older runtime than the host (a vendor image, a JetPack release). This runs
kd-edge's on-board check (``python -m kd_edge.runtime.check``, numpy and onnxruntime only) in a
virtual environment holding that release, so that a model is proven to load and compute there:

    python = prepare_runtime("1.16.3")          # ~/.cache/kd-edge/onnxruntime/1.16.3, built once
    logits, facts = run_check(python, "bundle", samples_npz, out_npz)

Needs pip to reach the package index the first time; says what to do when it cannot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from kd_edge.errors import ArmSetupError, ConfigError

OLDEST_SUPPORTED = (1, 16)  # the oldest ONNX Runtime kd-edge's files are made for, and tested on
NUMPY_2_FROM = (1, 19)  # ONNX Runtime releases before 1.19 were built against numpy 1
HINT = (
    "kd-edge installs other ONNX Runtime releases from the package index the first time (pip install "
    "onnxruntime==VERSION); make the index reachable, or give a version that is cached already."
)


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.16.3"`` -> (1, 16, 3); a ConfigError for anything else, or for a release older than 1.16."""
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", text.strip()):
        raise ConfigError(f"--onnxruntime {text!r}: give a release number such as 1.16.3")
    version = tuple(int(part) for part in text.strip().split("."))
    if version[:2] < OLDEST_SUPPORTED:
        oldest = ".".join(map(str, OLDEST_SUPPORTED))
        raise ConfigError(f"--onnxruntime {text}: kd-edge's models are made for ONNX Runtime {oldest} and later")
    return version


def requirements(version: str) -> list[str]:
    """What one ONNX Runtime release needs to import: itself and a numpy it was built against."""
    numpy = "numpy" if parse_version(version)[:2] >= NUMPY_2_FROM else "numpy<2"
    return [f"onnxruntime=={version}", numpy]


def cache_base(cache_dir: str | None) -> Path:
    """kd-edge's cache: ``cache_dir`` when given, else ~/.cache/kd-edge (or under XDG_CACHE_HOME)."""
    return Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kd-edge"


def runtimes_root(cache_dir: str | None) -> Path:
    return cache_base(cache_dir) / "onnxruntime"


def prepare_runtime(version: str, cache_dir: str | None = None, progress=print) -> Path:
    """The Python of the cached virtual environment holding ONNX Runtime ``version`` (built when missing)."""
    root = runtimes_root(cache_dir)
    venv = root / f"py{sys.version_info.major}.{sys.version_info.minor}-onnxruntime{version}"
    python = venv / "bin" / "python"
    if (venv / "ready").is_file():
        return python
    progress(f"installing ONNX Runtime {version} in {venv} (once)")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".building-") as building:
        building = Path(building)
        run([sys.executable, "-m", "venv", str(building)], hint=HINT)
        pip = [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run(
            [*pip, "--only-binary=:all:", *requirements(version)], what=f"pip install onnxruntime=={version}", hint=HINT
        )
        (building / "ready").write_text(f"onnxruntime {version}\n")
        if venv.exists():
            shutil.rmtree(venv)
        building.rename(venv)
    return python


def run_check(python: Path, model: Path, samples: Path, out: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Every form's logits on ``samples`` (and the runtime's facts), computed by ``python`` with this kd-edge."""
    import kd_edge

    source = Path(kd_edge.__file__).resolve().parent.parent
    environment = {**os.environ, "PYTHONPATH": str(source), "PYTHONNOUSERSITE": "1"}
    command = [str(python), "-m", "kd_edge.runtime.check", str(model), "--images", str(samples), "--out", str(out)]
    run(command, env=environment, what=f"the check under {python.parent.parent.name}")
    with np.load(out) as archive:
        facts = json.loads(str(archive["facts"]))
        return {name: archive[name] for name in archive.files if name != "facts"}, facts


def run(command: list[str], env: dict | None = None, what: str | None = None, hint: str = "") -> None:
    try:
        completed = subprocess.run(command, env=env, capture_output=True, text=True)
    except OSError as exc:
        raise ArmSetupError(f"cannot run {command[0]} ({exc.strerror}). {hint}".strip()) from exc
    if completed.returncode != 0:
        tail = " | ".join((completed.stderr or completed.stdout).strip().splitlines()[-3:])
        raise ArmSetupError(
            f"{what or ' '.join(command[:3])} failed (exit {completed.returncode}): {tail}. {hint}".strip()
        )

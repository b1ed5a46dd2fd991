"""Every `kd-edge ...` line of the README and the guides parses, and the tour runs as written (at a tiny budget)."""

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kd_edge.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
GUIDES = sorted((ROOT / "docs").glob("*.md"))
# The tour: the README's short one, then the whole one of the getting-started guide (lines both hold run once).
TOUR = README + (ROOT / "docs" / "getting-started.md").read_text()
# Appended to the tour's commands so that it runs in seconds; each command's own options stay as written.
BUDGET = {
    "teacher": ["--epochs", "1", "--batch-size", "64"],
    "distill": ["--epochs", "1", "--batch-size", "64"],
    "export": ["--no-optimize-latency", "--no-compare-latency"],
    "quantize": [
        "--no-optimize-latency",
        "--no-compare-latency",
        "--calibration-size",
        "100",
        "--max-accuracy-drop",
        "5",
    ],
    "qat": ["--epochs", "1", "--no-optimize-latency", "--no-compare-latency"],
    "bundle": ["--form", "int8", "--no-optimize-latency", "--samples", "30"],
    "bench": ["--runs", "10", "--rounds", "1", "--warmup", "2"],
    "pipeline": ["--epochs", "1", "--config", "fast.toml"],
    "sweep": ["--epochs", "1", "--batch-size", "64", "--seeds", "1", "-T", "4", "--alpha", "0.5"],
}
FAST_PIPELINE = """
[quantize]
optimize-latency = false
[bundle]
form = "int8"
samples = 30
[bench]
threads = [1]
runs = 10
rounds = 1
"""
NEEDS_OTHER_DATA = ("fashion-mnist", "cifar10", "--dataset mnist ")
NEEDS_REGISTRIES = ("verify-arm",)  # tested by tests/test_verify_arm.py where the registries answer
NEEDS_OWN_PROCESS = ("--nproc",)  # relaunches the command line under torchrun: tests/test_distributed.py
NEEDS_MINUTES = ("search",)  # a 20-minute search on Fashion-MNIST: tests/test_search.py runs one on tiny data


def readme_commands(text: str = TOUR) -> list[list[str]]:
    """The `kd-edge` command lines of ``text``'s shell blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("kd-edge "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_the_readme_has_a_tour():
    commands = readme_commands()
    assert len(commands) >= 15 and {c[0] for c in commands} >= {
        "teacher",
        "distill",
        "export",
        "quantize",
        "bench",
        "bundle",
        "pipeline",
        "predict",
    }


def every_documented_command() -> list[list[str]]:
    commands = readme_commands(README) + [args for guide in GUIDES for args in readme_commands(guide.read_text())]
    return [list(args) for args in dict.fromkeys(tuple(args) for args in commands)]


@pytest.mark.parametrize("args", every_documented_command(), ids=lambda args: " ".join(args)[:60])
def test_every_documented_command_parses(args):
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output  # an unknown command or option fails before --help is honoured
    assert "Usage" in result.output or "kd-edge" in result.output


def out_folder(args: list[str]) -> Path:
    return Path(args[args.index("--out") + 1])


def without_out(args: list[str]) -> tuple[str, ...]:
    """The command line without its --out folder."""
    at = args.index("--out") if "--out" in args else len(args)
    return tuple(args[:at] + args[at + 2 :])


@pytest.mark.slow
def test_the_tour_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs" / "images").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "images" / "digit-7.png", tmp_path / "docs" / "images")
    (tmp_path / "fast.toml").write_text(FAST_PIPELINE)
    ran, seen, outputs = [], set(), {}
    for args in readme_commands():
        line = " ".join(args)
        skip = (
            any(marker in f"{line} " for marker in (*NEEDS_OTHER_DATA, *NEEDS_OWN_PROCESS))
            or args[0] in (*NEEDS_REGISTRIES, *NEEDS_MINUTES)
            or "--help" in args
        )
        if skip or line in seen:  # a line the README repeats (the deployment section's) ran already
            continue
        seen.add(line)
        elsewhere = without_out(args)
        if elsewhere in outputs:  # the same command into another folder: its output is the earlier one's
            shutil.copytree(outputs[elsewhere], out_folder(args), symlinks=True)
            continue
        # A run's own resolved config (--config RUN/kd-edge.toml) holds the budget that run had.
        budget = [] if "--config" in args else BUDGET.get(args[0], [])
        result = CliRunner().invoke(app, [*args, *budget])
        assert result.exit_code == 0, f"kd-edge {line}\n{result.output}"
        ran.append(args[0])
        if args[0] == "pipeline":
            outputs[elsewhere] = out_folder(args)
    assert {"teacher", "distill", "export", "quantize", "qat", "bundle", "bench", "predict", "pipeline"} <= set(ran)
    for path in (
        "runs/exports/s.onnx",
        "runs/exports/s.int8.onnx",
        "runs/exports/s.qat.onnx",
        "runs/bundle.tar.gz",
        "runs/bench.json",
        "runs/bench.png",
        "runs/p/report.html",
    ):
        assert Path(path).exists(), path
    assert not any(Path(n).exists() for n in ("exports", "bundle", "bundle.tar.gz", "bench.json"))  # all under runs/
    # The deployment guide's Python example, run against the files the tour wrote.
    example = re.search(
        r"```python\n(import numpy as np\nfrom kd_edge.data import load_dataset.*?)```",
        (ROOT / "docs" / "deployment.md").read_text(),
        flags=re.S,
    ).group(1)
    namespace = {}
    exec(compile(example, "deployment.md", "exec"), namespace)
    assert namespace["predicted"].shape == (10,) and 0 <= namespace["predicted"].max() < 10


def test_missing_fashion_mnist_says_what_was_searched_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(
        app,
        ["distill", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "mine"), "--out", str(tmp_path / "run")],
    )
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "downloading is off ($KD_EDGE_OFFLINE)" in message and str(tmp_path / "mine" / "FashionMNIST/raw") in message
    assert "/usr/share/datasets" in message and "apt-get install dataset-fashion-mnist" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "home").exists() and os.listdir(tmp_path) == []

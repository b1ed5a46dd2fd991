"""Training under torchrun: 2 CPU processes with gloo, sharded data, rank 0 alone writing, resumable on 1 process."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from kd_edge.data import load_dataset
from kd_edge.training.batches import DeviceSplit, Normalizer
from kd_edge.training.checkpoint import load_checkpoint
from kd_edge.training.evaluate import accuracy

pytestmark = pytest.mark.slow  # torchrun launches several processes

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "kd_edge"]


def distill_args(easy_npz, out, *extra):
    return [
        "distill", "--dataset", f"npz:{easy_npz}", "--student-model", "cnn-tiny", "--teacher-model", "cnn-small",
        "--batch-size", "16", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def hard_npz(tmp_path_factory):
    """3 classes whose mark barely stands out of the noise, 3,000 images: a model scores well below 100 % and
    many images sit near its decision boundary, so a slightly different model (another rank's BatchNorm
    statistics) scores differently. 300 test and 300 validation images."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 1000)
    images = rng.integers(0, 200, size=(len(labels), 16, 16)).astype(np.int64)
    for i, label in enumerate(labels):
        images[i, label * 5 : label * 5 + 4, 2:6] += 30
    path = tmp_path_factory.mktemp("hard") / "hard.npz"
    np.savez(path, images=images.clip(0, 255).astype(np.uint8), labels=labels, classes=np.array(["a", "b", "c"]))
    return path


def single_process_accuracies(checkpoint_path, npz) -> dict:
    """A saved network's accuracy on the whole validation and test splits, computed here in one process."""
    checkpoint = load_checkpoint(checkpoint_path)
    dataset = load_dataset(f"npz:{npz}")
    model = checkpoint.build_model().eval()
    normalize = Normalizer(checkpoint.card.mean, checkpoint.card.std, torch.device("cpu"))
    return {
        f"{name}_accuracy": accuracy(model, DeviceSplit(getattr(dataset, name), torch.device("cpu")), normalize)
        for name in ("val", "test")
    }


def run(command, timeout=300):
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_two_processes_train_on_shards_and_rank_0_alone_writes(tmp_path, hard_npz):
    out = tmp_path / "run"
    result = run([*TORCHRUN, *distill_args(hard_npz, out, "--epochs", "3")])
    assert result.stdout.count("kd-edge results in") == 1  # one summary, rank 0's
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "student.pt", "teacher.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("teacher", "student"):
        split = metrics[stage]["distributed"]
        assert split["world_size"] == 2 and split["backend"] == "gloo" and split["effective_batch"] == 32
        images = split["images_trained_per_rank"]
        assert len(images) == 2 and images[0] == images[1] > 0  # both ranks trained, on equal shards
        assert sum(images) <= 3 * metrics["data"]["train"]  # each image at most once an epoch across the ranks
    # the accuracies it reports are what the saved networks score in a single process, on every image
    for stage in ("teacher", "student"):
        single = single_process_accuracies(out / f"{stage}.pt", hard_npz)
        reported = {name: metrics[stage][name] for name in single}
        assert single == reported and 0.4 < single["test_accuracy"] < 0.97, (stage, reported)  # not all easy


def test_online_mode_under_torchrun_launched_by_nproc(tmp_path, easy_npz):
    """`--nproc 2` relaunches the command under torchrun itself; online distillation trains both there."""
    out = tmp_path / "run"
    online = distill_args(easy_npz, out, "--mode", "online", "--epochs", "2", "--lr-scaling", "linear", "--nproc", "2")
    run([sys.executable, "-m", "kd_edge", *online])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"]["distributed"]["world_size"] == 2
    assert metrics["student"]["distributed"]["effective_lr"] == pytest.approx(2 * 4e-3)  # linear: 2 x the lr
    assert (out / "teacher.pt").is_file() and metrics["teacher"]["source"].startswith("trained online")


SINGLE = [sys.executable, "-m", "kd_edge"]


@pytest.mark.parametrize("first, then", [(TORCHRUN, SINGLE), (SINGLE, TORCHRUN)], ids=["2-to-1", "1-to-2"])
def test_a_run_resumes_on_another_process_count_under_a_step_budget(tmp_path, easy_npz, first, then):
    """The default budget is in optimiser steps, which plans other epochs on another process count (here 2 and
    8 epochs on 1 process, 5 and 18 on 2): the resume continues with the new count's plan and learning rate."""
    out = tmp_path / "run"
    args = distill_args(easy_npz, out, "--teacher-steps", "30", "--steps", "120", "--lr-scaling", "linear")
    launcher = subprocess.Popen([*first, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "student.state.pt").exists():
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, stderr = launcher.communicate(timeout=120)
    # it was stopped, not finished (torchrun's launcher exits with its own code; a single process with 143)
    assert stderr.count("stopped by SIGTERM") == 1 and launcher.returncode in (1, 143), stderr
    saved = torch.load(out / "student.state.pt", weights_only=True)
    run([*then, *args, "--resume"])
    metrics = json.loads((out / "metrics.json").read_text())
    processes = 1 if then is SINGLE else 2
    assert saved["world_size"] == 3 - processes and metrics["student"]["distributed"]["world_size"] == processes
    assert metrics["student"]["epochs"] == {1: 8, 2: 18}[processes]  # the new count's plan
    assert metrics["student"]["distributed"]["effective_lr"] == pytest.approx(4e-3 * processes)
    assert metrics["student"]["history"][-1]["epoch"] == metrics["student"]["epochs"]  # it ran to the plan's end
    assert 0.9 <= metrics["student"]["test_accuracy"] <= 1.0


def test_the_pipeline_trains_under_torchrun_and_rank_0_finishes_it(tmp_path, easy_npz):
    fast = tmp_path / "fast.toml"
    fast.write_text(
        "[distill]\nbatch-size = 16\n[quantize]\noptimize-latency = false\nmax-accuracy-drop = 100\n"
        "[bundle]\nform = 'int8'\nsamples = 30\n[bench]\nthreads = [1]\nruns = 10\nrounds = 1\n"
    )
    out = tmp_path / "pipe"
    args = ["pipeline", "--dataset", f"npz:{easy_npz}", "--epochs", "3", "--teacher-model", "cnn-small",
            "--student-model", "cnn-tiny", "--config", str(fast), "--out", str(out)]  # fmt: skip
    result = run([*TORCHRUN, *args])
    assert result.stdout.count("kd-edge pipeline in") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"]["distributed"]["world_size"] == 2 and (out / "report.html").is_file()

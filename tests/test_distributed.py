"""Training under torchrun: 2 CPU processes with gloo, sharded data, rank 0 alone writing, resumable on 1 process."""

import json
import signal
import subprocess
import sys
import time

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


def run(command, timeout=300):
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_two_processes_train_on_shards_and_rank_0_alone_writes(tmp_path, easy_npz):
    out = tmp_path / "run"
    result = run([*TORCHRUN, *distill_args(easy_npz, out, "--epochs", "3")])
    assert result.stdout.count("kd-edge results in") == 1  # one summary, rank 0's
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "student.pt", "teacher.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("teacher", "student"):
        split = metrics[stage]["distributed"]
        assert split["world_size"] == 2 and split["backend"] == "gloo" and split["effective_batch"] == 32
        images = split["images_trained_per_rank"]
        assert len(images) == 2 and images[0] == images[1] > 0  # both ranks trained, on equal shards
        assert sum(images) <= 3 * metrics["data"]["train"]  # each image at most once an epoch across the ranks
    # the accuracy it reports is what the saved student scores in a single process
    checkpoint = load_checkpoint(out / "student.pt")
    dataset = load_dataset(f"npz:{easy_npz}")
    model = checkpoint.build_model().eval()
    test = DeviceSplit(dataset.test, torch.device("cpu"))
    single = accuracy(model, test, Normalizer(checkpoint.card.mean, checkpoint.card.std, torch.device("cpu")))
    assert single == metrics["student"]["test_accuracy"]


def test_online_mode_under_torchrun_launched_by_nproc(tmp_path, easy_npz):
    """`--nproc 2` relaunches the command under torchrun itself; online distillation trains both there."""
    out = tmp_path / "run"
    online = distill_args(easy_npz, out, "--mode", "online", "--epochs", "2", "--lr-scaling", "linear", "--nproc", "2")
    run([sys.executable, "-m", "kd_edge", *online])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"]["distributed"]["world_size"] == 2
    assert metrics["student"]["distributed"]["effective_lr"] == pytest.approx(2 * 4e-3)  # linear: 2 x the lr
    assert (out / "teacher.pt").is_file() and metrics["teacher"]["source"].startswith("trained online")


def test_a_two_process_run_resumes_on_one_process(tmp_path, easy_npz):
    out = tmp_path / "run"
    launcher = subprocess.Popen(
        [*TORCHRUN, *distill_args(easy_npz, out, "--teacher-epochs", "2", "--epochs", "12")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "student.state.pt").exists():
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    launcher.communicate(timeout=120)
    state = torch.load(out / "student.state.pt", weights_only=True)
    assert state["world_size"] == 2
    resumed = run([sys.executable, "-m", "kd_edge", *distill_args(easy_npz, out, "--teacher-epochs", "2",
                                                                  "--epochs", "12", "--resume")])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["student"]["history"]) == 12 and metrics["student"]["distributed"]["world_size"] == 1
    assert 0.9 <= metrics["student"]["test_accuracy"] <= 1.0, resumed.stdout


def test_the_pipeline_trains_under_torchrun_and_rank_0_finishes_it(tmp_path, easy_npz):
    fast = tmp_path / "fast.toml"
    fast.write_text(
        "[quantize]\noptimize-latency = false\nmax-accuracy-drop = 100\n[bundle]\nform = 'int8'\n"
        "samples = 30\n[bench]\nthreads = [1]\nruns = 10\nrounds = 1\n"
    )
    out = tmp_path / "pipe"
    args = ["pipeline", "--dataset", f"npz:{easy_npz}", "--epochs", "2", "--teacher-model", "cnn-small",
            "--student-model", "cnn-tiny", "--config", str(fast), "--out", str(out)]  # fmt: skip
    result = run([*TORCHRUN, *args])
    assert result.stdout.count("kd-edge pipeline in") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"]["distributed"]["world_size"] == 2 and (out / "report.html").is_file()

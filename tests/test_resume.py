"""Crash-safe, resumable training: SIGKILL, SIGTERM, a signal mid-epoch, damaged state, changed settings."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from kd_edge import interrupt
from kd_edge.cli import app
from kd_edge.errors import CheckpointError, ConfigError, TrainingInterrupted
from kd_edge.settings import DataSettings, DistillSettings, KDSettings, NetworkSettings, OptimSettings, RunSettings
from kd_edge.training import distill as distill_module
from kd_edge.training import fit_state, networks


def settings_for(easy_npz, epochs=4, kd=None, cutmix=0.0) -> DistillSettings:
    return DistillSettings(
        data=DataSettings(dataset=f"npz:{easy_npz}", augment="shift"),  # augmentation: the generator matters mid-epoch
        teacher=NetworkSettings(model="cnn-tiny", epochs=3, steps=1),
        student=NetworkSettings(model="cnn-tiny", epochs=epochs, steps=1),
        optim=OptimSettings(batch_size=32, cutmix=cutmix),
        kd=kd or KDSettings(temperature_schedule="linear:2"),
        run=RunSettings(seed=5, deterministic=True),
    )


def run_distill(easy_npz, out, resume=False, **changes) -> dict:
    return distill_module.distill(settings_for(easy_npz, **changes), out, resume=resume)


def student_weights(run_dir):
    return torch.load(run_dir / "student.pt", weights_only=True)["state_dict"]


def same_training(a: dict, b: dict) -> bool:
    keys = ("loss", "ce", "kd", "train_accuracy", "val_accuracy", "temperature")
    history = [[h.get(k) for k in keys] for h in a["student"]["history"]]
    return history == [[h.get(k) for k in keys] for h in b["student"]["history"]] and (
        a["student"]["test_accuracy"] == b["student"]["test_accuracy"]
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, easy_npz):
    out = tmp_path_factory.mktemp("straight") / "run"
    return out, run_distill(easy_npz, out)


def stop_at(monkeypatch, stage: str, epoch: int, step: int):
    """Make training see a SIGTERM after the given step, as the command line's handler would record it."""
    original = fit_state.FitState.after_step

    def after_step(loop, steps_done, totals):
        if loop.stage == stage and loop.epoch == epoch and steps_done == step:
            monkeypatch.setattr(interrupt, "_requested", signal.SIGTERM)
        return original(loop, steps_done, totals)

    monkeypatch.setattr(fit_state.FitState, "after_step", after_step)


@pytest.mark.parametrize("stage, epoch, step", [("student", 2, 2), ("student", 3, 4), ("teacher", 2, 1)])
def test_a_run_stopped_mid_epoch_resumes_to_the_same_result(
    tmp_path, easy_npz, uninterrupted, monkeypatch, stage, epoch, step
):
    straight_dir, straight = uninterrupted
    out = tmp_path / "run"
    stop_at(monkeypatch, stage, epoch, step)
    with pytest.raises(TrainingInterrupted, match="the state is saved in") as stopped:
        run_distill(easy_npz, out)
    assert stopped.value.signum == signal.SIGTERM and (out / f"{stage}.state.pt").is_file()
    monkeypatch.setattr(interrupt, "_requested", None)
    monkeypatch.undo()
    resumed = run_distill(easy_npz, out, resume=True)
    assert same_training(resumed, straight)
    assert all(torch.equal(v, student_weights(straight_dir)[k]) for k, v in student_weights(out).items())
    assert not list(out.glob("*.state*.pt"))  # removed once the stage is done
    assert resumed["resumed"] == 1


def test_a_run_with_cutmix_stopped_mid_epoch_resumes_to_the_same_result(tmp_path, easy_npz, uninterrupted, monkeypatch):
    """CutMix's own generator is saved with the state: the resumed student mixes the same batches the same way."""
    straight = run_distill(easy_npz, tmp_path / "straight", cutmix=0.5)
    assert not same_training(straight, uninterrupted[1])  # the mixing did change what was learnt
    assert straight["soft_labels"]["cached"] is False  # the teacher ran on each mixed batch
    stop_at(monkeypatch, "student", 2, 3)
    with pytest.raises(TrainingInterrupted):
        run_distill(easy_npz, tmp_path / "run", cutmix=0.5)
    monkeypatch.setattr(interrupt, "_requested", None)
    monkeypatch.undo()
    resumed = run_distill(easy_npz, tmp_path / "run", resume=True, cutmix=0.5)
    assert same_training(resumed, straight)
    assert all(
        torch.equal(v, student_weights(tmp_path / "straight")[k]) for k, v in student_weights(tmp_path / "run").items()
    )


def test_a_run_written_before_cutmix_existed_resumes(tmp_path, easy_npz, monkeypatch):
    """Its config.json has no optim.cutmix: it trained without, today's default, so it resumes; with CutMix asked
    for now, it is refused."""
    stop_at(monkeypatch, "student", 2, 3)
    with pytest.raises(TrainingInterrupted):
        run_distill(easy_npz, tmp_path / "run")
    monkeypatch.setattr(interrupt, "_requested", None)
    monkeypatch.undo()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    del config["optim"]["cutmix"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"optim.cutmix: 0.0 then, 0.5 now"):
        run_distill(easy_npz, tmp_path / "run", resume=True, cutmix=0.5)
    assert run_distill(easy_npz, tmp_path / "run", resume=True)["resumed"] == 1


def test_a_finished_teacher_is_not_trained_again(tmp_path, easy_npz, monkeypatch):
    out = tmp_path / "run"
    stop_at(monkeypatch, "student", 1, 2)
    with pytest.raises(TrainingInterrupted):
        run_distill(easy_npz, out)
    monkeypatch.setattr(interrupt, "_requested", None)
    monkeypatch.undo()
    stages = []
    original = networks.fit
    monkeypatch.setattr(networks, "fit", lambda plan, hooks=None: stages.append(plan.stage) or original(plan, hooks))
    run_distill(easy_npz, out, resume=True)
    assert stages == ["student"]


def test_resuming_with_other_settings_is_refused(tmp_path, easy_npz, monkeypatch):
    out = tmp_path / "run"
    stop_at(monkeypatch, "student", 1, 2)
    with pytest.raises(TrainingInterrupted):
        run_distill(easy_npz, out)
    monkeypatch.setattr(interrupt, "_requested", None)
    with pytest.raises(ConfigError, match=r"kd.temperature: 2.0 then, 3.0 now"):
        run_distill(easy_npz, out, resume=True, kd=KDSettings(temperature=3.0))


def test_resuming_with_another_teacher_file_is_refused(tmp_path, easy_npz, monkeypatch):
    out = tmp_path / "run"
    stop_at(monkeypatch, "student", 2, 1)
    with pytest.raises(TrainingInterrupted):
        run_distill(easy_npz, out)
    monkeypatch.setattr(interrupt, "_requested", None)
    teacher = torch.load(out / "teacher.pt", weights_only=True)
    teacher["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in teacher["state_dict"].items()}
    torch.save(teacher, out / "teacher.pt")
    with pytest.raises(CheckpointError, match="not the teacher this run trained"):
        run_distill(easy_npz, out, resume=True)


def test_a_damaged_latest_state_falls_back_to_the_one_before(tmp_path, easy_npz, uninterrupted, monkeypatch, capsys):
    monkeypatch.setattr(fit_state, "STATE_INTERVAL_S", 0.0)  # a state after every step: latest and previous both exist
    out = tmp_path / "run"
    stop_at(monkeypatch, "student", 3, 3)
    with pytest.raises(TrainingInterrupted):
        run_distill(easy_npz, out)
    monkeypatch.setattr(interrupt, "_requested", None)
    monkeypatch.undo()
    latest = out / "student.state.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated, as a crash in the middle of a copy leaves it
    warnings = []
    monkeypatch.setattr("kd_edge.training.checkpoint.step", warnings.append)
    resumed = run_distill(easy_npz, out, resume=True)
    assert any("resuming from the state saved before it" in w for w in warnings)
    assert same_training(resumed, uninterrupted[1])


def test_damaged_state_and_nothing_before_it_is_an_error_not_a_fresh_start(tmp_path, easy_npz, monkeypatch):
    out = tmp_path / "run"
    stop_at(monkeypatch, "student", 1, 1)
    with pytest.raises(TrainingInterrupted):
        run_distill(easy_npz, out)
    monkeypatch.setattr(interrupt, "_requested", None)
    (out / "student.state.prev.pt").unlink(missing_ok=True)
    (out / "student.state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged"):
        run_distill(easy_npz, out, resume=True)


def test_the_same_seed_gives_the_same_metrics(tmp_path, easy_npz, uninterrupted):
    again = run_distill(easy_npz, tmp_path / "again")
    assert same_training(again, uninterrupted[1])


def test_resume_and_force_together_are_refused(tmp_path, easy_npz):
    with pytest.raises(ConfigError, match="pick one"):
        distill_module.distill(settings_for(easy_npz), tmp_path / "run", resume=True, force=True)


# --- real signals, in a child process ---------------------------------------------------------------------


def distill_command(easy_npz, out, *extra):
    return [
        sys.executable, "-m", "kd_edge", "distill", "--dataset", f"npz:{easy_npz}", "--student-model", "cnn-tiny",
        "--teacher-model", "cnn-tiny", "--teacher-epochs", "3", "--epochs", "20", "--batch-size", "32",
        "--deterministic", "--augment", "shift", "--out", str(out), *extra,
    ]  # fmt: skip


def wait_for(path, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_mid_student_then_resume_gives_a_valid_student(tmp_path, easy_npz):
    out = tmp_path / "run"
    child = subprocess.Popen(distill_command(easy_npz, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(out / "student.state.pt", child)  # saved at the end of the student's first epoch
    time.sleep(0.3)  # into the next one: the kill loses part of an epoch
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL  # killed, not finished: the resume below has work to do
    assert (out / "teacher.pt").is_file() and "student" not in json.loads((out / "metrics.json").read_text())
    resumed = subprocess.run(distill_command(easy_npz, out, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"]["epochs"] == 20 and len(metrics["student"]["history"]) == 20
    assert 0.9 <= metrics["student"]["test_accuracy"] <= 1.0
    straight = subprocess.run(distill_command(easy_npz, tmp_path / "straight"), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    assert same_training(metrics, json.loads((tmp_path / "straight" / "metrics.json").read_text()))


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_then_resumes(tmp_path, easy_npz):
    out = tmp_path / "run"
    child = subprocess.Popen(distill_command(easy_npz, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "student.state.pt", child)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 143, stderr
    assert "SIGTERM" in stderr and "--resume" in stderr and "Traceback" not in stderr
    state = torch.load(out / "student.state.pt", weights_only=True)
    assert state["stage"] == "student"
    resumed = subprocess.run(distill_command(easy_npz, out, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr


SECOND_SIGNAL = """
import os, signal, sys, time
from kd_edge import interrupt
with interrupt.stop_on_signals():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)
    print("first recorded:", interrupt.requested() == signal.SIGINT, flush=True)  # asks for a clean stop only
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
    print("still running after the second signal", flush=True)
"""


def test_a_second_signal_exits_at_once():
    """The first signal only asks for a clean stop (training ends at its next step); the second ends the process
    there and then, with 128 + its number. Each is delivered and handled alone: they cannot coalesce."""
    child = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], capture_output=True, text=True, timeout=30)
    assert "first recorded: True" in child.stdout, child.stderr
    assert child.returncode == 130 and "still running" not in child.stdout


def test_cli_resume_message_and_exit_code(tmp_path, easy_npz, monkeypatch):
    stop_at(monkeypatch, "student", 1, 1)
    args = [
        "distill", "--dataset", f"npz:{easy_npz}", "--student-model", "cnn-tiny", "--teacher-model", "cnn-tiny",
        "--epochs", "2", "--batch-size", "32", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    stopped = CliRunner().invoke(app, args)
    assert stopped.exit_code == 143 and "--resume" in stopped.output
    monkeypatch.setattr(interrupt, "_requested", None)
    monkeypatch.undo()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "--resume to continue it" in again.output
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "holds no earlier run" not in resumed.output
    # --resume where --out holds no run: it starts from the beginning, and says so
    fresh = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "mistyped"), "--resume"])
    assert fresh.exit_code == 0 and "holds no earlier run" in fresh.output, fresh.output
    assert (tmp_path / "mistyped" / "student.pt").is_file()


def test_a_signal_that_came_after_the_last_safe_point_still_sets_the_exit_code():
    """A command that finished its work after a SIGTERM still exits 143 (a supervisor learns its signal came),
    and says that nothing is left to continue."""
    from kd_edge.errors import Interrupted

    with pytest.raises(Interrupted) as stopped, interrupt.stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler records it; no safe point follows
    assert stopped.value.signum == signal.SIGTERM and stopped.value.finished
    assert "had finished" in str(stopped.value) and interrupt.requested() is None


def test_aerial_crops_from_a_folders_larger_photos_resume_to_the_same_result(tmp_path, monkeypatch, folder_cache):
    """Training crops cut from the photos' larger copy (a folder of 32 px photos, a 16 px model): the copy is made
    again on resume, in the same order, so a run stopped mid-epoch ends where the uninterrupted one does."""
    from kd_edge.training import fit as fit_module
    from tests.test_data import make_plain_tree

    root = make_plain_tree(tmp_path / "photos", per_class=15, size=32)
    settings = DistillSettings(
        data=DataSettings(dataset=f"folder:{root}", image_size=16, augment="aerial", split=(0.6, 0.2, 0.2)),
        student=NetworkSettings(model="cnn-tiny", epochs=8, steps=1),
        optim=OptimSettings(batch_size=8),
        kd=KDSettings(alpha=1.0),
        run=RunSettings(seed=5, deterministic=True),
    )
    cut_from = []
    original = fit_module.augment
    monkeypatch.setattr(fit_module, "augment", lambda *a: cut_from.append(a[3].shape[-1]) or original(*a))
    straight = distill_module.distill(settings, tmp_path / "straight")
    assert set(cut_from) == {32}  # every batch's crops came from the 32 px copy
    stop_at(monkeypatch, "student", 3, 2)
    with pytest.raises(TrainingInterrupted):
        distill_module.distill(settings, tmp_path / "run")
    monkeypatch.setattr(interrupt, "_requested", None)
    resumed = distill_module.distill(settings, tmp_path / "run", resume=True)
    assert same_training(resumed, straight)
    assert all(
        torch.equal(v, student_weights(tmp_path / "straight")[k]) for k, v in student_weights(tmp_path / "run").items()
    )

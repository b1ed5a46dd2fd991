"""Distillation modes (online, multi-teacher), T and alpha schedules, student initialisation, budgets, sweeps."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.errors import CheckpointError, ConfigError
from kd_edge.settings import DataSettings, DistillSettings, KDSettings, NetworkSettings, OptimSettings, RunSettings
from kd_edge.settings.schedules import Schedule, parse_schedule, scheduled_value
from kd_edge.training import distill as distill_module
from kd_edge.training import networks, teachers
from kd_edge.training.device import build_seeded
from kd_edge.training.losses import confidence_weights, ensemble_logits
from tests.conftest import train_teacher_run


def settings_for(easy_npz, **changes) -> DistillSettings:
    """Tiny networks, 2 epochs, batch 32, seed 3; ``changes`` replace any of it."""
    return DistillSettings(
        **{
            "data": DataSettings(dataset=f"npz:{easy_npz}"),
            "teacher": NetworkSettings(model="cnn-small", epochs=2, steps=1),
            "student": NetworkSettings(model="cnn-tiny", epochs=2, steps=1),
            "optim": OptimSettings(batch_size=32),
            "run": RunSettings(seed=3),
            **changes,
        }
    )


def run_distill(easy_npz, out, teachers=(), **changes) -> dict:
    return distill_module.distill(settings_for(easy_npz, **changes), out, teachers=teachers)


@pytest.fixture(scope="module")
def second_teacher(tmp_path_factory, easy_npz):
    """A teacher of another architecture (cnn-tiny) on the same data."""
    return train_teacher_run(tmp_path_factory.mktemp("teacher2") / "run", easy_npz, "cnn-tiny", epochs=2) / "teacher.pt"


# --- schedules -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("constant", [8, 8, 8, 8, 8]),
        ("linear:2", [8, 6.5, 5, 3.5, 2]),
        ("cosine:2", [8, 2 + 3 * (1 + math.cos(math.pi / 4)), 5, 2 + 3 * (1 + math.cos(3 * math.pi / 4)), 2]),
        ("step:2", [8, 8, 8, 2, 2]),  # epochs 1-3 before half of 5 epochs (2.5 done), then END
        ("step:2:0.2", [8, 2, 2, 2, 2]),
    ],
)
def test_schedules_give_the_specified_values(text, expected):
    schedule = parse_schedule(text, "--temperature-schedule")
    values = [scheduled_value(schedule, 8.0, epoch, 5) for epoch in range(1, 6)]
    assert values == pytest.approx(expected)


def test_adaptive_moves_half_way_after_each_epoch_without_improvement():
    schedule = Schedule(kind="adaptive", end=0.0)
    accuracies = [0.50, 0.60, 0.60, 0.59, 0.70]  # epochs 3 and 4 do not improve on 0.60
    values = [scheduled_value(schedule, 0.8, epoch, 6, accuracies) for epoch in range(1, 7)]
    assert values == pytest.approx([0.8, 0.8, 0.8, 0.4, 0.2, 0.2])


@pytest.mark.parametrize("text", ["warmup:2", "linear", "linear:x", "constant:3", "step:1:1.5"])
def test_bad_schedules_say_what_to_write(text):
    with pytest.raises(ConfigError, match="temperature-schedule"):
        parse_schedule(text, "--temperature-schedule")


def test_an_alpha_schedule_ending_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match=r"alpha in \[0, 1\]"):
        KDSettings(alpha_schedule="linear:1.5")


def test_scheduled_values_are_in_force_each_epoch_and_recorded(tmp_path, easy_npz, teacher_run, monkeypatch):
    seen = []
    original = distill_module.kd_step

    def watching_kd_step(normalize, teachers, weights):
        step = original(normalize, teachers, weights)

        def recording(model, index, images, labels):
            seen.append((round(weights.temperature, 6), round(weights.alpha, 6)))
            return step(model, index, images, labels)

        return recording

    monkeypatch.setattr(distill_module, "kd_step", watching_kd_step)
    kd = KDSettings(temperature=8.0, alpha=0.9, temperature_schedule="linear:2", alpha_schedule="step:0.1")
    student = NetworkSettings(model="cnn-tiny", epochs=3, steps=1)
    metrics = run_distill(easy_npz, tmp_path / "run", (str(teacher_run / "teacher.pt"),), kd=kd, student=student)
    history = metrics["student"]["history"]
    # step: alpha switches once half of the 3 epochs is done, at the start of epoch 3
    assert [(h["temperature"], h["alpha"]) for h in history] == [(8.0, 0.9), (5.0, 0.9), (2.0, 0.1)]
    steps = len(seen) // 3
    assert seen == [(8.0, 0.9)] * steps + [(5.0, 0.9)] * steps + [(2.0, 0.1)] * steps
    assert all(math.isfinite(h["loss"]) for h in history)


# --- multi-teacher ---------------------------------------------------------------------------------------


def test_the_ensemble_target_softens_to_the_weighted_mixture():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 10) * 3
    weights = torch.tensor([0.5, 0.3, 0.2])
    temperature = 4.0
    mixture = (weights[:, None, None] * F.softmax(logits / temperature, dim=2)).sum(0)
    target = ensemble_logits(logits, weights, temperature)
    assert torch.allclose(F.softmax(target / temperature, dim=1), mixture, atol=1e-6)
    alone = ensemble_logits(logits[:1], torch.tensor([1.0]), temperature)
    assert torch.allclose(F.softmax(alone / temperature, 1), F.softmax(logits[0] / temperature, 1), atol=1e-6)


def test_confidence_weights_favour_the_sure_teacher_per_sample():
    sure, unsure = torch.tensor([[9.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.9, 0.8]])
    weights = confidence_weights(torch.stack([sure, unsure]))
    assert weights.shape == (2, 1) and torch.allclose(weights.sum(0), torch.ones(1))
    assert weights[0, 0] > 0.7


@pytest.mark.parametrize("weighting", ["equal", "confidence", "3,1"])
def test_multi_teacher_reports_each_teacher_and_the_ensemble(
    tmp_path, easy_npz, teacher_run, second_teacher, weighting, monkeypatch
):
    calls = []
    original = teachers.load_teacher

    def counting(*args):
        teacher, view, info = original(*args)
        teacher.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
        return teacher, view, info

    monkeypatch.setattr(teachers, "load_teacher", counting)
    paths = (str(teacher_run / "teacher.pt"), str(second_teacher))
    metrics = run_distill(easy_npz, tmp_path / "run", paths, mode="multi", teacher_weights=weighting)
    teacher = metrics["teacher"]
    assert [m["model"] for m in teacher["members"]] == ["cnn-small", "cnn-tiny"]
    assert teacher["model"] == "ensemble of cnn-small, cnn-tiny" and 0.0 <= teacher["test_accuracy"] <= 1.0
    assert metrics["soft_labels"]["shape"] == [2, metrics["data"]["train"], 3]
    train, val, test = (metrics["data"][split] for split in ("train", "val", "test"))
    # after loading (and scoring itself), each teacher runs once over the train split (cached logits) and once
    # over val and test for the ensemble's accuracy: not once during the student's epochs
    assert sum(calls) == 2 * (train + val + test)
    assert math.isfinite(metrics["student"]["history"][-1]["kd"])


def test_multi_teacher_errors_name_the_problem(tmp_path, easy_npz, teacher_run):
    one = (str(teacher_run / "teacher.pt"),)
    with pytest.raises(ConfigError, match="two or more"):
        run_distill(easy_npz, tmp_path / "a", one, mode="multi")
    with pytest.raises(ConfigError, match="--mode multi"):
        run_distill(easy_npz, tmp_path / "b", one * 2)
    with pytest.raises(ConfigError, match="2 weights for 3 teachers"):
        run_distill(easy_npz, tmp_path / "c", one * 3, mode="multi", teacher_weights="1,2")
    assert not any((tmp_path / name).exists() for name in "abc")  # refused before any output


def test_a_teacher_for_other_classes_is_refused_among_several(tmp_path, easy_npz, teacher_run):
    import numpy as np

    from tests.conftest import easy_images

    images, labels = easy_images(30, num_classes=4)
    other = tmp_path / "four.npz"
    np.savez(other, images=images[:, 0], labels=labels)
    foreign = train_teacher_run(tmp_path / "foreign", other, "cnn-small", epochs=3) / "teacher.pt"
    with pytest.raises(CheckpointError, match="classes"):
        run_distill(easy_npz, tmp_path / "run", (str(teacher_run / "teacher.pt"), str(foreign)), mode="multi")
    assert not (tmp_path / "run").exists()


# --- online ----------------------------------------------------------------------------------------------


def saved_val_accuracy(checkpoint_path, easy_npz) -> float:
    """A saved network's accuracy on the validation split, computed here from its file."""
    from kd_edge.data import load_dataset
    from kd_edge.training.batches import DeviceSplit, Normalizer
    from kd_edge.training.checkpoint import load_checkpoint
    from kd_edge.training.evaluate import accuracy

    checkpoint = load_checkpoint(checkpoint_path)
    normalize = Normalizer(checkpoint.card.mean, checkpoint.card.std, torch.device("cpu"))
    val = DeviceSplit(load_dataset(f"npz:{easy_npz}").val, torch.device("cpu"))
    return accuracy(checkpoint.build_model().eval(), val, normalize)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_the_recorded_validation_accuracy_is_the_saved_network_s(tmp_path, easy_npz, mode):
    """Offline, fit's own measurement of the selected epoch is recorded; online, each network is measured."""
    metrics = run_distill(easy_npz, tmp_path / "run", mode=mode, kd=KDSettings(alpha=0.5))
    for name in ("teacher", "student"):
        assert metrics[name]["val_accuracy"] == saved_val_accuracy(tmp_path / "run" / f"{name}.pt", easy_npz)
    history = metrics["student"]["history"]
    assert metrics["student"]["val_accuracy"] == max(epoch["val_accuracy"] for epoch in history)


def test_online_mode_trains_both_networks_from_each_other(tmp_path, easy_npz):
    metrics = run_distill(easy_npz, tmp_path / "run", mode="online")
    for name in ("teacher", "student"):
        info = metrics[name]
        assert (tmp_path / "run" / f"{name}.pt").is_file() and 0.0 <= info["test_accuracy"] <= 1.0
    history = metrics["student"]["history"]
    assert all(math.isfinite(h[k]) for h in history for k in ("loss", "ce", "kd", "teacher_ce", "teacher_kd"))
    assert history[-1]["teacher_ce"] < history[0]["teacher_ce"]  # the teacher learnt too
    from kd_edge.training.checkpoint import load_checkpoint

    teacher = load_checkpoint(tmp_path / "run" / "teacher.pt")
    fresh = build_seeded(teacher.spec, seed=3)
    assert not all(torch.equal(teacher.state_dict[k], v) for k, v in fresh.state_dict().items())


def test_online_mode_refuses_a_given_teacher(tmp_path, easy_npz, teacher_run):
    with pytest.raises(ConfigError, match="from scratch"):
        run_distill(easy_npz, tmp_path / "run", (str(teacher_run / "teacher.pt"),), mode="online")


# --- initialisation and paired starts --------------------------------------------------------------------


def starting_weights(monkeypatch):
    """Capture the student's weights and the seed as fit receives them."""
    captured = []
    original = networks.fit

    def recording_fit(plan, hooks=None):
        captured.append(({k: v.clone() for k, v in plan.model.state_dict().items()}, plan.seed))
        return original(plan, hooks)

    monkeypatch.setattr(networks, "fit", recording_fit)
    return captured


def test_distilled_and_alone_runs_start_identically(tmp_path, easy_npz, teacher_run, monkeypatch):
    captured = starting_weights(monkeypatch)
    teacher = (str(teacher_run / "teacher.pt"),)
    run_distill(easy_npz, tmp_path / "kd", teacher)
    run_distill(easy_npz, tmp_path / "alone", kd=KDSettings(alpha=1.0))
    run_distill(easy_npz, tmp_path / "online", mode="online")
    (kd_state, kd_seed), (alone_state, alone_seed), (pair_state, pair_seed) = captured
    assert kd_seed == alone_seed == pair_seed  # same data order
    assert all(torch.equal(kd_state[k], alone_state[k]) for k in kd_state)
    assert all(torch.equal(kd_state[k], pair_state[f"student.{k}"]) for k in kd_state)


def test_init_from_a_checkpoint_of_the_same_architecture_loads_everything(
    tmp_path, easy_npz, student_checkpoint, monkeypatch
):
    captured = starting_weights(monkeypatch)
    metrics = run_distill(easy_npz, tmp_path / "run", kd=KDSettings(alpha=1.0), init=str(student_checkpoint))
    report = metrics["student"]["init"]
    source = torch.load(student_checkpoint, weights_only=True)["state_dict"]
    assert sorted(report["loaded"]) == sorted(source) and not report["shape_mismatch"]
    start, _ = captured[0]
    assert all(torch.equal(start[k], source[k]) for k in source)


def test_partial_init_from_a_larger_teacher_reports_what_was_not_loaded(tmp_path, easy_npz, teacher_run):
    """cnn-small's tensors go into cnn-tiny where name and shape agree; the rest stay as initialised."""
    init = str(teacher_run / "teacher.pt")
    report = run_distill(easy_npz, tmp_path / "run", kd=KDSettings(alpha=1.0), init=init)["student"]["init"]
    assert report["shape_mismatch"]  # wider layers of the teacher
    assert set(report["loaded"]).isdisjoint(report["shape_mismatch"])
    assert report["source"] == str(teacher_run / "teacher.pt")


def test_init_from_a_plain_state_dict_file(tmp_path, easy_npz, student_checkpoint):
    """A torchvision-style weights file: a bare state_dict."""
    state = torch.load(student_checkpoint, weights_only=True)["state_dict"]
    plain = tmp_path / "weights.pth"
    torch.save(state, plain)
    metrics = run_distill(easy_npz, tmp_path / "run", kd=KDSettings(alpha=1.0), init=str(plain))
    assert sorted(metrics["student"]["init"]["loaded"]) == sorted(state)


def test_init_with_nothing_matching_is_refused_before_training(tmp_path, easy_npz):
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, unrelated)
    with pytest.raises(CheckpointError, match="none of its 1 tensors"):
        run_distill(easy_npz, tmp_path / "run", kd=KDSettings(alpha=1.0), init=str(unrelated))
    assert not (tmp_path / "run").exists()


# --- budgets ---------------------------------------------------------------------------------------------


def test_the_default_budget_depends_on_the_dataset_size():
    recipe = DistillSettings()
    teacher, student, batch = recipe.teacher.for_images(28), recipe.student.for_images(28), 192  # batch under 64 px
    assert recipe.optim.for_images(28).batch_size == batch and recipe.optim.for_images(64).batch_size == 256
    assert teacher.planned_epochs(54_000, batch) == 1 and student.planned_epochs(54_000, batch) == 2  # Fashion-MNIST
    assert teacher.planned_epochs(4_000, batch) == 13 and student.planned_epochs(4_000, batch) == 23  # mnist-5k
    assert student.planned_epochs(10, batch) == 200  # capped
    assert NetworkSettings(model="cnn-small", epochs=4, steps=450).planned_epochs(4_000, batch) == 4  # --epochs wins
    camera = recipe.teacher.for_images(64), recipe.student.for_images(64)  # RSSCN7's 1,787 training images
    assert [network.planned_epochs(1_787, 256) for network in camera] == [134, 200]


def test_the_planned_epochs_are_reported_and_the_budget_is_kept_as_given(tmp_path, easy_npz):
    student = NetworkSettings(model="cnn-tiny", steps=8)
    metrics = run_distill(easy_npz, tmp_path / "run", kd=KDSettings(alpha=1.0), student=student)
    assert metrics["student"]["epochs"] == 2  # 144 training images: 4 steps an epoch
    # config.json, which a resume must match, holds the budget: the epochs it makes depend on the process count
    config = json.loads((tmp_path / "run" / "config.json").read_text())["student"]
    assert config["epochs"] is None and config["steps"] == 8


# --- sweep -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_resumes_without_rerunning_finished_cells(tmp_path, easy_npz, monkeypatch):
    args = [
        "sweep",
        "--dataset",
        f"npz:{easy_npz}",
        "-T",
        "2,4",
        "--alpha",
        "0.5,1",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--student-model",
        "cnn-tiny",
        "--teacher-model",
        "cnn-small",
        "--teacher-epochs",
        "2",
        "--out",
        str(tmp_path / "sweep"),
    ]
    trained = []  # the run folder of every student trained
    original = distill_module.train_and_save

    def counting(context, networks, **kwargs):
        trained.append(context.run.dir.relative_to(tmp_path / "sweep" / "cells").as_posix())
        return original(context, networks, **kwargs)

    monkeypatch.setattr(distill_module, "train_and_save", counting)
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    # cells T2-a0.5, T4-a0.5 and alone (alpha 1 at both temperatures is one cell), for 2 seeds
    assert sorted(trained) == [f"{cell}/seed{seed}" for cell in ("T2-a0.5", "T4-a0.5", "alone") for seed in (0, 1)]
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [c["cell"] for c in summary["cells"]] == ["T2-a0.5", "alone", "T4-a0.5"]
    best = max(summary["cells"], key=lambda c: c["val_mean"])
    assert summary["best"]["cell"] == best["cell"] and "validation" in summary["selected_on"]
    assert (tmp_path / "sweep" / "sweep.md").is_file()
    # a lost cell is rerun, the others are kept
    (tmp_path / "sweep" / "cells" / "T4-a0.5" / "seed1" / "metrics.json").unlink()
    trained.clear()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert trained == ["T4-a0.5/seed1"] and "finished earlier, kept" in again.output
    summary = (tmp_path / "sweep" / "sweep.json").read_text()
    # the same folder with another budget: refused, naming the difference, instead of mixing two sweeps
    other = CliRunner().invoke(app, [*args[:-2], "--epochs", "2", *args[-2:]])
    assert other.exit_code == 1 and "student.epochs: 1 then, 2 now" in other.output, other.output
    assert (tmp_path / "sweep" / "sweep.json").read_text() == summary  # the summary is untouched


def test_qat_fine_tunes_against_the_teachers_the_run_used(tmp_path, easy_npz, teacher_run, second_teacher):
    from kd_edge.training.checkpoint import load_checkpoint
    from kd_edge.training.soft_labels import teachers_of_run

    paths = (str(teacher_run / "teacher.pt"), str(second_teacher))
    run_distill(easy_npz, tmp_path / "run", paths, mode="multi", teacher_weights="3,1")
    teachers = teachers_of_run(tmp_path / "run", load_checkpoint(tmp_path / "run" / "student.pt"), torch.device("cpu"))
    assert len(teachers.models) == 2 and teachers.weighting == pytest.approx((0.75, 0.25))


def test_the_sweeps_best_cell_is_chosen_on_validation_whatever_the_test_split_says(tmp_path):
    from kd_edge.search.sweep import summarize
    from kd_edge.settings.search import SweepSettings

    # T2 is better on validation, T4 far better on test: a choice that looked at test would pick T4
    scores = {"T2-a0.5": (0.90, 0.50), "T4-a0.5": (0.80, 0.99)}
    for cell, (val, test) in scores.items():
        for seed in (0, 1):
            folder = tmp_path / "cells" / cell / f"seed{seed}"
            folder.mkdir(parents=True)
            student = {"val_accuracy": val, "test_accuracy": test, "train_seconds": 1.0}
            (folder / "metrics.json").write_text(json.dumps({"student": student}))
    summary = summarize(SweepSettings(temperatures=(2.0, 4.0), alphas=(0.5,), seeds=2), tmp_path)
    assert summary["best"]["cell"] == "T2-a0.5" and summary["best"]["test_mean"] == pytest.approx(0.50)

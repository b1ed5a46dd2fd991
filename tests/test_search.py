"""kd-edge search: latency filter, successive halving, Pareto front, resume, and a real search on tiny data."""

import json
import os
import signal
import time

import pytest
from typer.testing import CliRunner

from kd_edge.cli import app
from kd_edge.errors import ConfigError
from kd_edge.search.space import Candidate, keep_better_half, pareto_front, within_budget
from kd_edge.search.student_search import measure_untrained, successive_halving
from kd_edge.search.timing import CandidateMeasurer
from kd_edge.settings import SearchSettings
from kd_edge.settings.parse import quantity
from kd_edge.training import distill as distill_module


def test_budgets_read_with_their_units():
    assert quantity("time", "--latency-budget")("2ms") == 2.0
    assert quantity("time", "--latency-budget")("500us") == 0.5
    assert quantity("memory", "--memory")("64M") == 64.0
    assert quantity("memory", "--memory")("1G") == 1024.0
    assert quantity("duration", "--time-limit")("20m") == 1200.0
    with pytest.raises(ConfigError, match=r"e\.g\. 2ms or 500us"):
        quantity("time", "--latency-budget")("2 parsecs")


def test_pareto_front_of_a_hand_made_set():
    points = [(1.0, 0.80), (2.0, 0.90), (2.0, 0.85), (3.0, 0.89), (0.5, 0.70), (4.0, 0.95), (0.5, 0.60)]
    # (2.0, 0.85) loses to (2.0, 0.90); (3.0, 0.89) to (2.0, 0.90); (0.5, 0.60) to (0.5, 0.70)
    assert pareto_front(points) == [4, 0, 1, 5]


def candidate(name, ms, int8_ms=None, parameters=1000, activations=4000):
    latency = {"fp32": {"ms": ms, "source": "projected", "host_ms": ms / 5}}
    if int8_ms is not None:
        latency["int8"] = {"ms": int8_ms, "source": "projected", "host_ms": int8_ms / 5}
    return Candidate(name, parameters, 0, activations, latency)


def test_the_latency_filter_uses_the_faster_form_and_the_memory_budget():
    config = SearchSettings(latency_budget_ms=1.0, memory_mb=0.01)  # 10,485 bytes
    assert within_budget(candidate("fp32 fits", 0.9), config)
    assert within_budget(candidate("int8 fits", 1.5, int8_ms=0.8, parameters=5000), config)  # 5,000 + 4,000 bytes
    assert not within_budget(candidate("too slow", 1.1, int8_ms=1.2), config)
    assert not within_budget(candidate("too big", 0.5, parameters=2000), config)  # 8,000 + 4,000 bytes in FP32
    # The untrained filter's margin lets a candidate 10 % over the budget train; the final choice has none.
    assert within_budget(candidate("near", 1.1), config, margin=0.25)
    assert not within_budget(candidate("near", 1.3), config, margin=0.25)


class FakeTimer:
    def __init__(self, latencies):
        self.latencies, self.calls = latencies, []

    def untrained(self, candidates, folder):
        self.calls.append([c.name for c in candidates])
        return {
            c.name: {"fp32": {"ms": self.latencies[c.name], "source": "projected", "host_ms": 0}} for c in candidates
        }


def test_untrained_latencies_are_measured_once_and_kept(tmp_path):
    timer = FakeTimer({"a": 0.5, "b": 3.0})
    for target in ("profile rpi4, batch 1", "profile rpi4, batch 1", "profile rpi5, batch 1"):
        candidates = [Candidate("a", 1, 1, 1), Candidate("b", 1, 1, 1)]
        measure_untrained(candidates, timer, tmp_path / "latency.json", tmp_path / "untrained", target)
    assert timer.calls == [["a", "b"], ["a", "b"]]  # measured once per board, never again for the same one
    config = SearchSettings(latency_budget_ms=1.0)
    assert [c.name for c in candidates if within_budget(c, config)] == ["a"]


def test_successive_halving_keeps_the_better_half_each_rung(tmp_path):
    accuracy = {"a": 0.60, "b": 0.90, "c": 0.80, "d": 0.70, "e": 0.50}
    trained = []

    def fake_train(name, steps, run, previous):
        trained.append((name, steps, previous is not None))
        return {"val_accuracy": accuracy[name] + steps / 100, "run": str(run)}

    survivors = [candidate(name, 0.5) for name in accuracy]
    config = SearchSettings(latency_budget_ms=1.0, rungs=3, rung_steps=1, finalists=2)
    finalists = successive_halving(survivors, config, fake_train, tmp_path, started=time.perf_counter())
    assert [c.name for c in finalists] == ["b", "c"]
    assert [t for t in trained if t[1] == 1] == [(n, 1, False) for n in "abcde"]  # rung 0: all, from scratch
    assert sorted(t[0] for t in trained if t[1] == 2) == ["b", "c", "d"]  # rung 1: the better half (rounded up)
    assert sorted(t[0] for t in trained if t[1] == 4) == ["b", "c"]  # rung 2: continued from rung 1
    assert all(t[2] for t in trained if t[1] > 1)
    assert keep_better_half([candidate("x", 2.0), candidate("y", 1.0)])[0].name == "y"  # a tie: the faster
    assert len(keep_better_half([candidate(n, 1.0) for n in "abcde"], at_least=4)) == 4


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory, teacher_run):
    out = tmp_path_factory.mktemp("search") / "s"
    args = [
        "search", "--teacher", str(teacher_run / "teacher.pt"), "--latency-budget", "50ms", "--profile", "host",
        "--space", "cnn@w0.25d1,cnn@w0.5d1,seed@w0.5", "--rungs", "2", "--finalists", "2", "--rung-steps", "2",
        "--bench-runs", "20", "--bench-rounds", "1", "--out", str(out),
    ]  # fmt: skip
    return args, out, CliRunner().invoke(app, args)


@pytest.mark.slow
@pytest.mark.xdist_group("search")  # one worker runs the tiny search once for both tests
def test_a_search_on_tiny_data_chooses_and_bundles_a_student(tiny_search):
    _, out, result = tiny_search
    assert result.exit_code == 0, result.output
    found = json.loads((out / "search.json").read_text())
    assert len(found["candidates"]) == 3 and len(found["finalists"]) == 2
    stopped = {c["name"] for c in found["candidates"]} - {f["name"] for f in found["finalists"]}
    assert [s["name"] for s in found["stopped"]] == sorted(stopped) and found["stopped"][0]["rungs"] == 1
    chosen = found["chosen"]
    assert chosen["name"] in {f["name"] for f in found["finalists"]} and chosen["latency_source"] == "host"
    assert "test_accuracy" in chosen and all("test_accuracy" not in f for f in found["finalists"])
    best = max(found["finalists"], key=lambda f: f["val_accuracy"])
    assert chosen["val_accuracy"] == best["val_accuracy"]
    assert (out / "bundle" / "model.onnx").is_file() and (out / "search.md").is_file()
    shipped = json.loads((out / "bundle" / "model.json").read_text())["bundle"]["deployable"]["form"]
    assert shipped == chosen["fastest_form"] == chosen["bundle_form"]  # the form the search timed faster
    timings = json.loads((out / "bundle.form-timing.json").read_text())  # beside the bundle, not in its card
    assert timings["form"] == shipped and " ms host" in timings["measured"]


@pytest.mark.slow
@pytest.mark.xdist_group("search")
def test_a_search_run_again_retrains_and_remeasures_nothing(tiny_search, monkeypatch):
    args, out, _ = tiny_search
    runs, timed = [], []
    original = distill_module.train_and_save  # each rung's run folder is checked against its settings, not trained
    monkeypatch.setattr(distill_module, "train_and_save", lambda *a, **k: runs.append(a) or original(*a, **k))
    monkeypatch.setattr(CandidateMeasurer, "finalist", lambda self, candidate, folder: timed.append(candidate.name))
    monkeypatch.setattr(CandidateMeasurer, "untrained", lambda self, candidates, folder: timed.extend(candidates))
    before = [(out / name).read_text() for name in ("latency.json", "finalists.json")]
    chosen = json.loads((out / "search.json").read_text())["chosen"]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert runs == [] and timed == []  # nothing trained, exported, quantized or timed again
    assert [(out / name).read_text() for name in ("latency.json", "finalists.json")] == before
    assert json.loads((out / "search.json").read_text())["chosen"] == chosen


@pytest.mark.slow
def test_a_sigterm_while_timing_stops_the_search_and_running_it_again_finishes(tmp_path, teacher_run, monkeypatch):
    from kd_edge.runtime.bench import harness

    out = tmp_path / "s"
    args = [
        "search", "--teacher", str(teacher_run / "teacher.pt"), "--latency-budget", "50ms", "--profile", "host",
        "--space", "cnn@w0.25d1,seed@w0.5", "--rungs", "1", "--finalists", "1", "--rung-steps", "2",
        "--bench-runs", "10", "--bench-rounds", "1", "--out", str(out),
    ]  # fmt: skip
    original, calls = harness.measure_in_child, []

    def signalled(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # the second untrained candidate's timing: SIGTERM, as `kill` would send it
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*a, **k)

    monkeypatch.setattr(harness, "measure_in_child", signalled)
    stopped = CliRunner().invoke(app, args)
    assert stopped.exit_code == 143 and "stopped by SIGTERM before the end of bench round" in stopped.output
    assert "To continue, run the same command again" in stopped.output and not (out / "search.json").exists()
    monkeypatch.undo()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "search.json").read_text())["chosen"] is not None


class FinalistTimer(FakeTimer):
    """Untrained, every candidate fits; trained, each takes what ``trained_ms`` says."""

    def __init__(self, latencies, trained_ms):
        super().__init__(latencies)
        self.trained_ms = trained_ms

    def finalist(self, candidate, folder):
        latency = {"fp32": {"ms": self.trained_ms[candidate.name], "source": "projected", "host_ms": 0}}
        return {"val_accuracy": candidate.val_accuracy, "latency": latency, "files": {}, "run": "x"}


def test_the_chosen_student_is_the_best_that_still_fits_once_timed_trained(tmp_path, teacher_run, monkeypatch):
    from kd_edge.search import student_search

    names = ("cnn@w0.25d1", "cnn@w0.5d1")
    accuracy = {"cnn@w0.25d1": 0.8, "cnn@w0.5d1": 0.9}

    def fake_train(name, steps, run, previous):
        run.mkdir(parents=True, exist_ok=True)
        (run / "student.pt").write_bytes(name.encode())  # what the finalists' record is keyed by
        return {"val_accuracy": accuracy[name], "run": str(run)}

    def summary_of(chosen, out, *rest):  # the bundle it would write needs real exports: only the choice matters
        fields = {"test_accuracy": 0.0, "board_ms": 0.0, "latency_source": "projected", "fastest_form": "fp32"}
        return {"name": chosen.name, "val_accuracy": chosen.val_accuracy, **fields, "bundle": "-", "bundle_form": "-"}

    monkeypatch.setattr(student_search, "chosen_summary", summary_of)
    config = SearchSettings(latency_budget_ms=1.0, space=names, rungs=1, finalists=2)
    # the more accurate one is over the budget once trained (a trained graph can time slower): not chosen
    timer = FinalistTimer(dict.fromkeys(names, 0.5), {"cnn@w0.25d1": 0.8, "cnn@w0.5d1": 1.6})
    result = student_search.search(teacher_run / "teacher.pt", tmp_path / "a", config, measure=timer, train=fake_train)
    assert [f["name"] for f in result["finalists"]] == list(names) and result["chosen"]["name"] == "cnn@w0.25d1"
    # none fits once trained: nothing is chosen (the command then exits 1), however accurate
    timer = FinalistTimer(dict.fromkeys(names, 0.5), dict.fromkeys(names, 1.2))
    result = student_search.search(teacher_run / "teacher.pt", tmp_path / "b", config, measure=timer, train=fake_train)
    assert result["chosen"] is None and len(result["finalists"]) == 2

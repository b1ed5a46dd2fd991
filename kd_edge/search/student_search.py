"""The most accurate student that fits a board's latency and memory budget: ``kd-edge search``.

    search("runs/t/teacher.pt", "runs/search", SearchSettings(profile="rpi4", latency_budget_ms=2.0))

1. **Latency filter.** Every candidate of the student space (families at several widths and
   depths, ``kd_edge.training.models``) is exported untrained, in FP32 and INT8, and timed on the
   emulated board by the bench harness (latency does not depend on the weights). A
   candidate whose faster form is over the latency budget, or whose weights plus peak
   activations exceed the memory budget, is dropped.
2. **Successive halving.** The survivors are distilled from the same teacher (its soft labels
   computed once for all) for a short budget; the better half on the validation split
   continues, each from where it stopped, for twice as long; and so on, within the time limit.
3. **Finalists.** The last rung's students are exported, quantized and timed again. The Pareto
   front (validation accuracy against board latency) is written as search.md, search.json
   and search.png; the most accurate finalist within the budgets is chosen, its test accuracy
   reported (the only test figure), and bundled for the board.

Every latency says where it comes from: ``projected`` (the profile's single-thread projection
to the board) or ``host`` (measured here, for profiles that do not project). Everything is
resumable: measured latencies are kept in latency.json (keyed by what they depend on), a trained
rung of the same settings and teacher is never retrained, and an interrupted one resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kd_edge.io import atomic_write_json, atomic_write_text, ensure_writable_dir
from kd_edge.log import step
from kd_edge.runtime.bench.profiles import get_profile
from kd_edge.search.space import (
    Candidate,
    describe_space,
    fastest_form,
    keep_better_half,
    pareto_front,
    safe_name,
    within_budget,
    within_budget_final,
)
from kd_edge.search.summary import markdown, plot
from kd_edge.search.timing import CandidateMeasurer
from kd_edge.search.train import CandidateTrainer
from kd_edge.settings.data import DataSettings
from kd_edge.settings.fields import require
from kd_edge.settings.search import SearchSettings


def search(
    teacher_path,
    out,
    config: SearchSettings,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    measure=None,
    train=None,
    progress_factory=None,
) -> dict:
    """Search for the student of ``teacher_path`` (a teacher.pt) in ``out``, on ``dataset`` (default: the
    teacher's). ``measure`` and ``train`` default to ``CandidateMeasurer`` and ``CandidateTrainer``; tests pass
    fakes."""
    from kd_edge.training.checkpoint import load_checkpoint

    require(config.latency_budget_ms is not None, "kd-edge search needs --latency-budget")
    get_profile(config.profile)  # an unknown board fails before any work
    started = time.perf_counter()
    out = ensure_writable_dir(out)
    teacher = load_checkpoint(teacher_path)
    data = DataSettings(dataset=dataset or teacher.card.data.dataset, data_dir=data_dir)
    measure = measure or CandidateMeasurer(config, teacher.card, data_dir)
    train = train or CandidateTrainer(config, teacher_path, data, progress_factory)
    candidates = describe_space(config.space, teacher)
    # What a latency depends on besides the candidate: a rerun that changes any of it measures again
    channels, height, width = teacher.card.input_shape
    target = (
        f"profile {config.profile}, batch {config.batch_size}, input {channels}x{height}x{width}, "
        f"{len(teacher.card.classes)} classes, {config.bench_runs} runs in {config.bench_rounds} rounds"
    )
    measure_untrained(candidates, measure, out / "latency.json", out / "untrained", target)
    survivors = [c for c in candidates if within_budget(c, config, config.latency_margin)]
    step(
        f"search: {len(survivors)} of {len(candidates)} candidates fit the budget untrained "
        f"(within {config.latency_margin:.0%} of it: timed again once trained)"
    )
    if not survivors:
        return finish(config, out, candidates, [], None, started, data_dir)
    finalists = successive_halving(survivors, config, train, out, started)
    measure_finalists(finalists, measure, out / "finalists.json", out / "finalists", target)
    fitting = [c for c in finalists if within_budget_final(c, config)]
    chosen = max(fitting, key=lambda c: (c.final["val_accuracy"], -c.board_ms(c.final["latency"])), default=None)
    return finish(config, out, candidates, finalists, chosen, started, data_dir)


def measure_untrained(candidates: list[Candidate], measure, record: Path, folder: Path, target: str) -> None:
    """Every candidate's latency in both forms, from ``record`` where measured before on the same ``target``
    (profile, batch size, input, classes, timing effort: a search rerun for another board measures again)."""
    everything = json.loads(record.read_text()) if record.is_file() else {}
    known = everything.setdefault(target, {})
    missing = [c for c in candidates if c.name not in known]
    if missing:
        step(f"search: timing {len(missing)} untrained candidates in FP32 and INT8 on the emulated board")
        known.update(measure.untrained(missing, folder))
        atomic_write_json(record, everything)
    for candidate in candidates:
        candidate.latency = known[candidate.name]


def measure_finalists(finalists: list[Candidate], measure, record: Path, folder: Path, target: str) -> None:
    """Every finalist exported, quantized and timed, from ``record`` where the same student (by the SHA-256 of
    its checkpoint) was measured before on the same ``target``: a rerun measures nothing it measured already."""
    from kd_edge.runtime.bundle_files import file_sha256

    everything = json.loads(record.read_text()) if record.is_file() else {}
    known = everything.setdefault(target, {})
    for candidate in finalists:
        key = f"{candidate.name} {file_sha256(Path(candidate.rungs[-1]['run']) / 'student.pt')}"
        if key not in known:
            known[key] = measure.finalist(candidate, folder)
            atomic_write_json(record, everything)
        candidate.final = known[key]


def successive_halving(survivors: list[Candidate], config: SearchSettings, train, out: Path, started: float):
    """Rung k trains every remaining candidate ``rung_steps * 2**k`` more optimiser steps (whole epochs, rounded
    up); the better half (at least ``finalists``) goes on."""
    remaining = survivors
    for rung in range(config.rungs):
        steps = config.rung_steps * 2**rung
        for candidate in remaining:
            if time.perf_counter() - started > config.time_limit_s:
                step(f"search: the time limit is reached in rung {rung + 1}; the finalists are those trained so far")
                return [c for c in remaining if len(c.rungs) == rung + 1] or [c for c in remaining if c.rungs]
            previous = candidate.rungs[-1]["run"] if candidate.rungs else None
            run = out / "candidates" / safe_name(candidate.name) / f"rung{rung}"
            candidate.rungs.append({"steps": steps, **train(candidate.name, steps, run, previous)})
        if rung < config.rungs - 1:
            remaining = keep_better_half(remaining, at_least=config.finalists)
    return remaining


def finish(config: SearchSettings, out: Path, candidates, finalists, chosen, started: float, data_dir=None) -> dict:
    points = [(c.board_ms(c.final["latency"]), c.final["val_accuracy"]) for c in finalists]
    front = {finalists[i].name for i in pareto_front(points)}
    result = {
        "profile": config.profile,
        "latency_budget_ms": config.latency_budget_ms,
        "memory_budget_mb": config.memory_mb,
        "batch_size": config.batch_size,
        "selected_on": "validation accuracy; test accuracy is reported for the chosen student only",
        "seconds": round(time.perf_counter() - started, 1),
        "candidates": [
            {
                "name": c.name,
                "parameters": c.parameters,
                "macs": c.macs,
                "activation_bytes": c.activation_bytes,
                "untrained_latency": c.latency,
                "fits_untrained": within_budget(c, config),
                "rungs": c.rungs,
            }
            for c in candidates
        ],
        "finalists": [
            {"name": c.name, **c.final, "board_ms": c.board_ms(c.final["latency"]), "on_front": c.name in front}
            for c in finalists
        ],
        "stopped": [  # trained, then left behind by halving (or the time limit): less training than a finalist
            {"name": c.name, "rungs": len(c.rungs), "val_accuracy": c.val_accuracy, "board_ms": c.board_ms()}
            for c in candidates
            if c.rungs and c.name not in {f.name for f in finalists}
        ],
        "chosen": chosen_summary(chosen, out, config.batch_size, data_dir) if chosen else None,
    }
    atomic_write_json(out / "search.json", result)
    atomic_write_text(out / "search.md", markdown(result))
    plot(result, config, out / "search.png")
    return result


def chosen_summary(chosen: Candidate, out: Path, batch_size: int, data_dir: str | None) -> dict:
    from kd_edge.deploy.bundle import write_bundle
    from kd_edge.deploy.form_choice import FormDecision

    files, latency = chosen.final["files"], chosen.final["latency"]
    metrics = json.loads((Path(chosen.final["run"]) / "metrics.json").read_text())
    form = fastest_form(latency)
    timings = ", ".join(f"{f} {entry['ms']:.4f} ms {entry['source']}" for f, entry in latency.items())
    reason = f"the faster form at batch {batch_size} as kd-edge search timed it"
    bundle = write_bundle(
        out / "bundle",
        fp32=Path(files["fp32"]),
        int8=Path(files["int8"]) if "int8" in files else None,
        chosen=FormDecision(form=form, reason=reason, measured=timings),
        data_dir=data_dir,
        force=True,
    )
    return {
        "name": chosen.name,
        "val_accuracy": chosen.final["val_accuracy"],
        "test_accuracy": metrics["student"]["test_accuracy"],
        "fastest_form": form,
        "board_ms": chosen.board_ms(chosen.final["latency"]),
        "latency_source": chosen.final["latency"][form]["source"],
        "bundle": str(bundle.folder),
        "bundle_form": bundle.form,
    }

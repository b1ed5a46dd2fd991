"""The most accurate student that fits a board's latency and memory budget: ``kd-edge search``.

    search(SearchConfig(teacher="runs/t/teacher.pt", profile="rpi4", latency_budget_ms=2.0, out="runs/search"))

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
resumable: measured latencies are kept in latency.json and a trained rung is never retrained.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kd_edge.errors import ConfigError
from kd_edge.io import atomic_save_figure, atomic_write_json, atomic_write_text, ensure_writable_dir
from kd_edge.log import step

DEFAULT_SPACE = (
    *(f"cnn@w{w:g}d{d}" for w in (0.25, 0.5, 1, 1.5, 2) for d in (1, 2, 3)),
    *(f"mobile@w{w:g}d{d}" for w in (0.5, 1, 2) for d in (1, 2)),
    *(f"seed@w{w:g}" for w in (0.5, 1, 2)),
)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    teacher: str
    latency_budget_ms: float
    profile: str = "rpi4"
    memory_mb: float | None = None
    batch_size: int = 1
    time_limit_s: float = 1200.0
    dataset: str | None = None  # default: the teacher's
    data_dir: str | None = None
    out: str = "runs/search"
    space: tuple[str, ...] = DEFAULT_SPACE
    rung_steps: int = 200  # optimiser steps, not epochs: the same budget on any dataset size
    rungs: int = 3
    finalists: int = 4  # halving stops short of this many, so that the front has points to compare
    # Untrained candidates up to this fraction over the budget still train: host timings under
    # 0.1 ms vary 10-25 % between sessions, and the trained INT8 form, latency-searched, is often
    # faster. The chosen student must fit the budget itself, timed again once trained.
    latency_margin: float = 0.25
    bench_runs: int = 300  # in total, over bench_rounds fresh processes: sub-0.1 ms figures are noisy
    bench_rounds: int = 3
    seed: int = 0
    threads: int | None = None

    def __post_init__(self):
        if not self.latency_budget_ms > 0:
            raise ConfigError(f"--latency-budget must be positive, got {self.latency_budget_ms} ms")
        if self.memory_mb is not None and not self.memory_mb > 0:
            raise ConfigError(f"--memory must be positive, got {self.memory_mb} MB")
        if not 0 <= self.latency_margin <= 1:
            raise ConfigError(f"--latency-margin is a fraction of the budget, 0 to 1, got {self.latency_margin}")
        if min(self.rung_steps, self.rungs, self.batch_size, self.finalists) < 1:
            raise ConfigError("--rung-steps, --rungs, --finalists and --batch-size must be at least 1")
        if not self.space:
            raise ConfigError("the student space is empty")


@dataclass
class Candidate:
    name: str
    parameters: int
    macs: int
    activation_bytes: int
    latency: dict = field(default_factory=dict)  # form -> {"ms", "source", "host_ms"}
    rungs: list[dict] = field(default_factory=list)  # {"steps", "epochs", "val_accuracy", "run"}
    final: dict = field(default_factory=dict)

    def board_ms(self, latency: dict | None = None) -> float:
        """The faster form's latency on the board (projected, or measured on the host)."""
        latency = latency or self.latency
        return latency[fastest_form(latency)]["ms"]

    def memory_bytes(self, latency: dict | None = None) -> int:
        """Weights of the faster form (4 bytes a parameter in FP32, 1 in INT8) plus peak activations."""
        form = fastest_form(latency or self.latency)
        return self.parameters * (1 if form == "int8" else 4) + self.activation_bytes

    @property
    def val_accuracy(self) -> float:
        return self.rungs[-1]["val_accuracy"] if self.rungs else -1.0


def fastest_form(latency: dict) -> str:
    """The faster form ("fp32" or "int8") by ``latency`` (form -> {"ms", ...})."""
    return min(latency, key=lambda form: latency[form]["ms"])


# --- parsing the budgets ---------------------------------------------------------------------------------

UNITS = {
    "time": {"us": 1e-3, "ms": 1.0, "s": 1e3},
    "memory": {"k": 1 / 1024, "kb": 1 / 1024, "m": 1.0, "mb": 1.0, "g": 1024.0, "gb": 1024.0},
    "duration": {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0},
}


def parse_quantity(text: str, kind: str, option: str) -> float:
    """``"2ms"`` -> 2.0 (time in ms), ``"64M"`` -> 64.0 (memory in MB), ``"20m"`` -> 1200.0 (duration in s)."""
    units = UNITS[kind]
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in units):
        examples = {"time": "2ms or 500us", "memory": "64M or 1G", "duration": "20m, 90s or 1h"}[kind]
        raise ConfigError(f"{option} {text!r}: write a number with a unit ({', '.join(units)}), e.g. {examples}")
    default = {"time": "ms", "memory": "m", "duration": "s"}[kind]
    return float(match.group(1)) * units[unit or default]


# --- the pure parts: filter, halving, front ----------------------------------------------------------------


def within_budget(candidate: Candidate, config: SearchConfig, margin: float = 0.0) -> bool:
    """Fits the latency budget (``margin``: a fraction it may exceed it by) and the memory budget."""
    fits_time = candidate.board_ms() <= config.latency_budget_ms * (1 + margin)
    fits_memory = config.memory_mb is None or candidate.memory_bytes() <= config.memory_mb * 2**20
    return fits_time and fits_memory


def keep_better_half(candidates: list[Candidate], at_least: int = 1) -> list[Candidate]:
    """The better half (rounded up, but ``at_least`` of them) by validation accuracy; ties go to the faster."""
    ranked = sorted(candidates, key=lambda c: (-c.val_accuracy, c.board_ms()))
    return ranked[: max(math.ceil(len(ranked) / 2), at_least)]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point beats: as fast or faster and as accurate or
    more, and strictly better in one. Sorted by latency."""
    front = [
        i
        for i, (latency, accuracy) in enumerate(points)
        if not any(
            other_latency <= latency
            and other_accuracy >= accuracy
            and (other_latency < latency or other_accuracy > accuracy)
            for other_latency, other_accuracy in points
        )
    ]
    return sorted(front, key=lambda i: points[i][0])


# --- the search ----------------------------------------------------------------------------------------------


def search(config: SearchConfig, measure=None, train=None, progress_factory=None) -> dict:
    """Run the search (``measure`` and ``train`` default to the bench harness and ``distill``; tests pass fakes)."""
    from kd_edge.training.checkpoint import load_checkpoint

    started = time.perf_counter()
    out = ensure_writable_dir(config.out)
    teacher = load_checkpoint(config.teacher)
    dataset = config.dataset or teacher.card.data.dataset
    measure = measure or HarnessTimer(config, teacher.card, dataset)
    train = train or Distiller(config, dataset, progress_factory)
    candidates = describe_space(config.space, teacher)
    target = f"profile {config.profile}, batch {config.batch_size}"
    measure_untrained(candidates, measure, out / "latency.json", out / "untrained", target)
    survivors = [c for c in candidates if within_budget(c, config, config.latency_margin)]
    step(
        f"search: {len(survivors)} of {len(candidates)} candidates fit the budget untrained "
        f"(within {config.latency_margin:.0%} of it: timed again once trained)"
    )
    if not survivors:
        return finish(config, out, candidates, [], None, started)
    finalists = successive_halving(survivors, config, train, out, started)
    for candidate in finalists:
        candidate.final = measure.finalist(candidate, out / "finalists")
    fitting = [c for c in finalists if within_budget_final(c, config)]
    chosen = max(fitting, key=lambda c: (c.final["val_accuracy"], -c.board_ms(c.final["latency"])), default=None)
    return finish(config, out, candidates, finalists, chosen, started)


def describe_space(space: tuple[str, ...], teacher) -> list[Candidate]:
    from kd_edge.training.models import ModelSpec, count_macs, count_parameters, peak_activation_bytes

    card = teacher.card
    candidates = []
    for name in space:
        model = ModelSpec(name, len(card.classes), card.input_shape[0], card.input_shape[1]).build()
        candidates.append(
            Candidate(
                name,
                count_parameters(model),
                count_macs(model, card.input_shape),
                peak_activation_bytes(model, card.input_shape),
            )
        )
    return candidates


def measure_untrained(candidates: list[Candidate], measure, record: Path, folder: Path, target: str) -> None:
    """Every candidate's latency in both forms, from ``record`` where measured before on the same ``target``
    (profile and batch size: a search rerun for another board measures again)."""
    everything = json.loads(record.read_text()) if record.is_file() else {}
    known = everything.setdefault(target, {})
    missing = [c for c in candidates if c.name not in known]
    if missing:
        step(f"search: timing {len(missing)} untrained candidates in FP32 and INT8 on the emulated board")
        known.update(measure.untrained(missing, folder))
        atomic_write_json(record, everything)
    for candidate in candidates:
        candidate.latency = known[candidate.name]


def successive_halving(survivors: list[Candidate], config: SearchConfig, train, out: Path, started: float):
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


def within_budget_final(candidate: Candidate, config: SearchConfig) -> bool:
    return within_budget(replace(candidate, latency=candidate.final["latency"]), config)


def safe_name(name: str) -> str:
    return name.replace("@", "-")


# --- the real measurements and training ----------------------------------------------------------------


class HarnessTimer:
    """Latency on the emulated board through ``kd-edge bench``'s harness (the profile's cores, quota, memory)."""

    def __init__(self, config: SearchConfig, card, dataset: str):
        self.config, self.card, self.dataset = config, card, dataset

    def untrained(self, candidates: list[Candidate], folder: Path) -> dict:
        from kd_edge.deploy.export import write_onnx
        from kd_edge.training.models import ModelSpec

        ensure_writable_dir(folder)
        files = {}
        for candidate in candidates:
            model = ModelSpec(
                candidate.name, len(self.card.classes), self.card.input_shape[0], self.card.input_shape[1]
            ).build()
            fp32 = folder / f"{safe_name(candidate.name)}.onnx"
            card = replace(self.card, model=candidate.name, test_accuracy=None)
            write_onnx(model.eval(), card, fp32)
            files[candidate.name] = {"fp32": fp32, "int8": self.quantized(fp32, folder, budget=100.0)}
        return self.time(files)

    def finalist(self, candidate: Candidate, folder: Path) -> dict:
        """Export and quantize a trained candidate, time both forms; its validation accuracy as the student
        reached it (the INT8 form is kept only within the quantizer's accuracy budget)."""
        from kd_edge.deploy.export import ExportConfig, export_onnx

        run = Path(candidate.rungs[-1]["run"])
        fp32 = export_onnx(
            ExportConfig(
                source=str(run / "student.pt"),
                out_dir=str(folder),
                name=safe_name(candidate.name),
                data_dir=self.config.data_dir,
                force=True,
            )
        ).path
        int8 = self.quantized(fp32, folder, budget=None)
        latency = self.time({candidate.name: {"fp32": fp32, "int8": int8}})[candidate.name]
        return {
            "val_accuracy": candidate.val_accuracy,
            "latency": latency,
            "files": {form: str(path) for form, path in (("fp32", fp32), ("int8", int8)) if path},
            "run": str(run),
        }

    def quantized(self, fp32: Path, folder: Path, budget: float | None) -> Path | None:
        from kd_edge.errors import QuantizationError
        from kd_edge.deploy.quantize import QuantizeConfig, quantize

        settings = {"max_accuracy_drop": budget} if budget is not None else {}
        try:
            return quantize(
                QuantizeConfig(
                    model=str(fp32),
                    out=str(folder / f"{fp32.stem}.int8.onnx"),
                    data_dir=self.config.data_dir,
                    calibration_size=200,
                    optimize_latency=budget is None,
                    compare_latency=False,
                    force=True,
                    **settings,
                )
            ).path
        except QuantizationError as exc:
            step(f"search: {fp32.name} stays FP32 ({str(exc)[:90]}...)")
            return None

    def time(self, files: dict[str, dict]) -> dict:
        import numpy as np

        from kd_edge.runtime.bench.harness import BenchConfig, run_benchmark

        paths = [str(p) for forms in files.values() for p in forms.values() if p is not None]
        channels, height, width = self.card.input_shape
        images = np.random.default_rng(0).integers(0, 256, (64, channels, height, width), dtype=np.uint8)
        report = run_benchmark(
            BenchConfig(
                models=tuple(paths),
                threads=(1,),
                batch_sizes=(self.config.batch_size,),
                profile=self.config.profile,
                runs=self.config.bench_runs,
                rounds=self.config.bench_rounds,
                warmup=10,
            ),
            images=images,
        )
        by_path = {r.model: r for r in report.results}
        latency = {}
        for name, forms in files.items():
            latency[name] = {}
            for form, path in forms.items():
                if path is None:
                    continue
                result = by_path[str(path)]
                projected = result.projected_p50_ms
                latency[name][form] = {
                    "ms": projected if projected is not None else result.latency_ms.p50,
                    "source": "projected" if projected is not None else "host",
                    "host_ms": result.latency_ms.p50,
                }
        return latency


class Distiller:
    """Distils a candidate from the search's teacher for some steps, continuing from its last rung's student;
    the teacher's soft labels are computed once for all candidates."""

    def __init__(self, config: SearchConfig, dataset: str, progress_factory: Callable | None):
        self.config, self.dataset, self.progress_factory = config, dataset, progress_factory
        self.soft_labels: dict = {}

    def __call__(self, name: str, steps: int, run: Path, previous: str | None) -> dict:
        from kd_edge.config import distill_config
        from kd_edge.training.distill import distill

        metrics_file = run / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        if "student" not in metrics:  # not finished before: train (a finished rung is never retrained)
            settings = distill_config(
                dataset=self.dataset,
                data_dir=self.config.data_dir,
                student_model=name,
                teacher_paths=[self.config.teacher],
                init=str(Path(previous) / "student.pt") if previous else "scratch",
                out=str(run),
                seed=self.config.seed,
                threads=self.config.threads,
                force=True,
            )
            settings = replace(settings, student=replace(settings.student, steps=steps))
            progress = self.progress_factory() if self.progress_factory else None
            metrics = distill(settings, progress=progress, soft_label_cache=self.soft_labels)
        return {
            "epochs": metrics["student"]["epochs"],
            "val_accuracy": metrics["student"]["val_accuracy"],
            "run": str(run),
        }


# --- the results -------------------------------------------------------------------------------------------


def finish(config, out: Path, candidates, finalists, chosen, started: float) -> dict:
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
        "chosen": chosen_summary(chosen, out, config.batch_size) if chosen else None,
    }
    atomic_write_json(out / "search.json", result)
    atomic_write_text(out / "search.md", markdown(result))
    plot(result, config, out / "search.png")
    return result


def chosen_summary(chosen: Candidate, out: Path, batch_size: int) -> dict:
    from kd_edge.deploy.bundle import BundleConfig, write_bundle

    files, latency = chosen.final["files"], chosen.final["latency"]
    metrics = json.loads((Path(chosen.final["run"]) / "metrics.json").read_text())
    form = fastest_form(latency)
    timings = ", ".join(f"{f} {entry['ms']:.4f} ms {entry['source']}" for f, entry in latency.items())
    bundle = write_bundle(
        BundleConfig(out=str(out / "bundle"), compare_latency=False, force=True),
        fp32=Path(files["fp32"]),
        int8=Path(files["int8"]) if "int8" in files else None,
        chosen=(form, f"the faster form at batch {batch_size} as kd-edge search timed it ({timings})"),
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


def markdown(result: dict) -> str:
    budget = f"{result['latency_budget_ms']:g} ms"
    if result["memory_budget_mb"]:
        budget += f", {result['memory_budget_mb']:g} MB"
    fits = sum(c["fits_untrained"] for c in result["candidates"])
    lines = [
        f"Search under profile {result['profile']}, budget {budget}, batch {result['batch_size']}: "
        f"{fits} of {len(result['candidates'])} candidates fit untrained; {len(result['finalists'])} finalists "
        f"({result['seconds']:.0f} s).",
        "",
        "| finalist | validation accuracy % | board latency ms | source | forms | Pareto front |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in sorted(result["finalists"], key=lambda f: f["board_ms"]):
        source = "/".join(sorted({entry["source"] for entry in f["latency"].values()}))
        lines.append(
            f"| {f['name']} | {100 * f['val_accuracy']:.2f} | {f['board_ms']:.4f} | {source} | "
            f"{', '.join(f['latency'])} | {'yes' if f['on_front'] else ''} |"
        )
    chosen = result["chosen"]
    if chosen:
        lines += [
            "",
            f"Chosen: **{chosen['name']}**, {100 * chosen['val_accuracy']:.2f} % validation, "
            f"{100 * chosen['test_accuracy']:.2f} % test, {chosen['board_ms']:.4f} ms ({chosen['latency_source']}, "
            f"{chosen['fastest_form']}); bundle {chosen['bundle']} ({chosen['bundle_form']}).",
        ]
    else:
        lines += ["", "No finalist fits the budget: loosen it, or widen the student space."]
    if result["stopped"]:
        lines += [
            "",
            "Left behind by successive halving (accuracy after fewer steps; latency untrained):",
            "",
            "| candidate | rungs trained | validation accuracy % | board latency ms |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {s['name']} | {s['rungs']} | {100 * s['val_accuracy']:.2f} | {s['board_ms']:.4f} |"
            for s in sorted(result["stopped"], key=lambda s: s["board_ms"])
        ]
    return "\n".join(lines) + "\n"


def plot(result: dict, config: SearchConfig, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    finalists = result["finalists"]
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    for s in result["stopped"]:
        axes.scatter(s["board_ms"], 100 * s["val_accuracy"], color="tab:gray", marker="x", alpha=0.6)
        axes.annotate(s["name"], (s["board_ms"], 100 * s["val_accuracy"]), fontsize=6, color="tab:gray",
                      xytext=(3, -8), textcoords="offset points")  # fmt: skip
    for f in finalists:
        axes.scatter(f["board_ms"], 100 * f["val_accuracy"], color="tab:blue" if f["on_front"] else "tab:gray")
        axes.annotate(
            f["name"], (f["board_ms"], 100 * f["val_accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    front = sorted((f for f in finalists if f["on_front"]), key=lambda f: f["board_ms"])
    axes.plot([f["board_ms"] for f in front], [100 * f["val_accuracy"] for f in front], color="tab:blue")
    axes.axvline(config.latency_budget_ms, color="tab:red", linestyle="--", label="latency budget")
    if result["chosen"]:
        chosen = result["chosen"]
        axes.scatter(
            chosen["board_ms"],
            100 * chosen["val_accuracy"],
            s=120,
            facecolors="none",
            edgecolors="tab:red",
            label=f"chosen: {chosen['name']}",
        )
    sources = {e["source"] for f in finalists for e in f["latency"].values()}
    axes.set_xlabel(f"latency at batch {config.batch_size}, ms ({'/'.join(sorted(sources))}, {config.profile})")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title("finalists: accuracy against board latency (grey x: stopped by halving)", fontsize=10)
    axes.legend(fontsize=7)
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=100)
    plt.close(figure)
    return True

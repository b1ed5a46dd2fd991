"""Searching for a recipe or a student: ``kd-edge sweep`` and ``kd-edge search``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kd_edge.settings.fields import knob, require
from kd_edge.settings.parse import name_list, number_list, quantity
from kd_edge.settings.training import DistillSettings, RunSettings

DEFAULT_SPACE = (
    *(f"cnn@w{w:g}d{d}" for w in (0.25, 0.5, 1, 1.5, 2) for d in (1, 2, 3)),
    *(f"mobile@w{w:g}d{d}" for w in (0.5, 1, 2) for d in (1, 2)),
    *(f"seed@w{w:g}" for w in (0.5, 1, 2)),
)


@dataclass(frozen=True, kw_only=True)
class SweepSettings:
    """A grid of temperatures and alphas over ``distill``'s settings, several seeds per cell."""

    distill: DistillSettings = field(default_factory=DistillSettings)
    temperatures: tuple[float, ...] = knob(
        (1.0, 2.0, 4.0, 8.0), "Temperatures, comma-separated.", short="-T", parse=number_list("--temperature")
    )
    alphas: tuple[float, ...] = knob(
        (0.1, 0.5, 0.9), "Alphas (hard-label weights), comma-separated; 1 is the student alone.",
        parse=number_list("--alpha"),
    )  # fmt: skip
    seeds: int = knob(3, "Seeds per cell (--seed, --seed+1, ...): mean and std over them.")

    def __post_init__(self):
        require(bool(self.temperatures) and bool(self.alphas), "the sweep needs at least one temperature and alpha")
        require(self.seeds >= 1, f"--seeds must be at least 1, got {self.seeds}")
        for temperature in self.temperatures:
            replace(self.distill.kd, temperature=temperature)  # KDSettings validates
        for alpha in self.alphas:
            replace(self.distill.kd, alpha=alpha)


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """The most accurate student within a board's latency (and memory) budget."""

    latency_budget_ms: float | None = knob(
        None,
        "Latency the student may take on the board at --batch-size: 2ms, 500us...",
        parse=quantity("time", "--latency-budget"),
        required=True,
    )
    profile: str = knob("rpi4", "Device profile (`kd-edge profiles`): its cores, quota and memory, its projection.")
    memory_mb: float | None = knob(
        None,
        "Memory the model may take: weights of its form plus peak activations (64M, 1G).",
        parse=quantity("memory", "--memory"),
        none="no limit",
    )
    batch_size: int = knob(1, "Batch size the latency budget is for.")
    time_limit_s: float = knob(
        1200.0, "Time for the whole search (20m, 1h, 90s); halving stops when it is up.",
        parse=quantity("duration", "--time-limit"),
    )  # fmt: skip
    space: tuple[str, ...] = knob(
        DEFAULT_SPACE,
        "Candidates, comma-separated: registry names or family members FAMILY@wWIDTHdDEPTH.",
        parse=name_list,
        none="",
    )
    rung_steps: int = knob(200, "Optimiser steps of the first halving rung (whole epochs, rounded up); each doubles.")
    rungs: int = knob(3, "Successive-halving rungs.")
    finalists: int = knob(4, "Halving keeps at least this many, so that the front compares several.")
    latency_margin: float = knob(
        0.25,
        "Untrained candidates up to this fraction over the budget still train (sub-0.1 ms timings vary 10-25 %); "
        "the chosen student must fit the budget itself, timed again once trained.",
    )
    bench_runs: int = knob(300, "Timed runs per candidate and form, over --bench-rounds fresh processes.")
    bench_rounds: int = knob(3, "Interleaved timing rounds, each in a fresh process.")
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self):
        require(
            self.latency_budget_ms is None or self.latency_budget_ms > 0,
            f"--latency-budget must be positive, got {self.latency_budget_ms} ms",
        )
        require(self.memory_mb is None or self.memory_mb > 0, f"--memory must be positive, got {self.memory_mb} MB")
        require(
            0 <= self.latency_margin <= 1,
            f"--latency-margin is a fraction of the budget, 0 to 1, got {self.latency_margin}",
        )
        require(
            min(self.rung_steps, self.rungs, self.batch_size, self.finalists, self.bench_runs, self.bench_rounds) >= 1,
            "--rung-steps, --rungs, --finalists, --batch-size, --bench-runs and --bench-rounds must be at least 1",
        )
        require(bool(self.space), "the student space is empty")

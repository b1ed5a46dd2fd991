"""The student space of ``kd-edge search`` and the pure rules over it: the budgets, halving, the Pareto front."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from kd_edge.settings.search import SearchSettings


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


def within_budget(candidate: Candidate, config: SearchSettings, margin: float = 0.0) -> bool:
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


def within_budget_final(candidate: Candidate, config: SearchSettings) -> bool:
    return within_budget(replace(candidate, latency=candidate.final["latency"]), config)


def safe_name(name: str) -> str:
    return name.replace("@", "-")

"""Which form a bundle ships, INT8 or FP32: a rule that gives the same answer every time it is asked.

    decision = decide_form(fp32_path, int8_path, images, BundleSettings())

The two models are timed at the deployment's own setting (the board profile's thread
count, as far as this host has cores, at batch 1 unless the user says otherwise) in
interleaved rounds, each model in a fresh process with ONNX Runtime's default session
options: the same harness as `kd-edge bench`. Each round gives a paired INT8/FP32 ratio.

The rule: FP32 ships only when INT8 is slower beyond the noise, that is when the one-sided
95 % lower confidence bound on the INT8/FP32 ratio (a paired t-interval on the rounds' log
ratios) is above 1.05, 5 % being the repeat noise of a quiet machine. Otherwise INT8 ships: it
is four times smaller and, within what the timing can tell, as fast. A difference inside the
noise decides nothing, so the answer does not change from one run to the next: on a 2-core
host whose fresh-process readings of a 0.1 ms model vary 2x, 15 rounds gave the same answer in
99.9 % of resamples of 56 measured rounds (benchmarks/results/deployable-form.md).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kd_edge.log import step
from kd_edge.settings.bench import BenchSettings
from kd_edge.settings.deploy import BundleSettings

NOISE_FLOOR = 0.05
RULE = (
    "FP32 only if the one-sided 95 % lower confidence bound on the INT8/FP32 p50 ratio (paired t-interval on the "
    "per-round log ratios) exceeds 1.05; otherwise INT8 (smaller, and not slower beyond the measured noise)"
)
# Student's t, one-sided 95 %, by degrees of freedom (rounds - 1); 1.697 (30) stands for more.
T95 = {
    1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
    11: 1.796, 12: 1.782, 13: 1.771, 14: 1.761, 15: 1.753, 16: 1.746, 17: 1.740, 18: 1.734, 19: 1.729, 20: 1.725,
    21: 1.721, 22: 1.717, 23: 1.714, 24: 1.711, 25: 1.708, 26: 1.706, 27: 1.703, 28: 1.701, 29: 1.699, 30: 1.697,
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class FormDecision:
    form: str  # "int8" or "fp32"
    reason: str
    profile: str | None = None
    threads: int | None = None
    batch_size: int | None = None
    fp32_p50_ms: list[float] | None = None  # one per round
    int8_p50_ms: list[float] | None = None
    round_ratios: list[float] | None = None  # INT8 / FP32, round by round
    ratio: float | None = None  # the geometric mean of the round ratios
    lower_bound: float | None = None  # the ratio is above this with 95 % confidence
    noise: float | None = None  # half the range of the round ratios
    rule: str | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


def decision_threads(settings: BundleSettings) -> int:
    """The thread count the forms are timed at: the user's, else the profile's cores, at most this host's."""
    from kd_edge.runtime.bench.profiles import get_profile

    if settings.threads is not None:
        return settings.threads
    return min(get_profile(settings.profile).cores or os.cpu_count() or 1, len(os.sched_getaffinity(0)))


def decide_form(fp32: Path, int8: Path, images: np.ndarray, settings: BundleSettings) -> FormDecision:
    """Time both models at the deployment's setting and apply the rule (``rule_verdict``)."""
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark

    threads, batch = decision_threads(settings), settings.batch_size
    step(
        f"bundle: timing FP32 against INT8 at {threads} thread(s), batch {batch}, {settings.profile} profile, "
        f"{settings.rounds} interleaved rounds in fresh processes"
    )
    bench = BenchSettings(
        threads=(threads,), batch_sizes=(batch,), runs=100 * settings.rounds, rounds=settings.rounds,
        profile=settings.profile,
    )  # fmt: skip
    job = BenchJob(models=(str(fp32), str(int8)), settings=bench, projections=False)
    report = run_benchmark(job, images=images[: max(batch, 8)])
    rounds = {name: next(r for r in report.results if r.model == str(path)).round_p50_ms
              for name, path in (("fp32", fp32), ("int8", int8))}  # fmt: skip
    return rule_verdict(rounds["fp32"], rounds["int8"], profile=settings.profile, threads=threads, batch_size=batch)


def lower_bound(ratios: list[float]) -> float:
    """The one-sided 95 % lower confidence bound on the ratio: exp(mean - t * sd / sqrt(n)) of the log ratios."""
    logs = np.log(ratios)
    t = T95.get(len(logs) - 1, T95[30])
    return float(np.exp(logs.mean() - t * logs.std(ddof=1) / np.sqrt(len(logs))))


def rule_verdict(fp32_ms: list[float], int8_ms: list[float], **setting) -> FormDecision:
    """The form the rule picks from paired per-round p50s (the same round index is one pair)."""
    ratios = [i / f for f, i in zip(fp32_ms, int8_ms, strict=True)]
    ratio = float(np.exp(np.mean(np.log(ratios))))
    bound = lower_bound(ratios)
    noise = (max(ratios) - min(ratios)) / 2
    where = f"at {setting.get('threads')} thread(s), batch {setting.get('batch_size')}"
    measured = (
        f"INT8/FP32 p50 {ratio:.2f}x {where} over {len(ratios)} rounds, 95 % lower bound {bound:.2f}x, "
        f"round ratios {min(ratios):.2f}x to {max(ratios):.2f}x"
    )
    if bound > 1 + NOISE_FLOOR:
        form, reason = "fp32", f"INT8 met its accuracy budget but is slower than FP32 beyond the noise: {measured}"
    else:
        form, reason = "int8", f"INT8 met its accuracy budget and is not slower than FP32 beyond the noise: {measured}"
    return FormDecision(
        form=form, reason=reason, fp32_p50_ms=list(fp32_ms), int8_p50_ms=list(int8_ms), round_ratios=ratios,
        ratio=ratio, lower_bound=bound, noise=noise, rule=RULE, **setting,
    )  # fmt: skip

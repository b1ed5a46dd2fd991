"""Which form a bundle ships, INT8 or FP32: a rule that gives the same answer every time it is asked.

    decision = decide_form(fp32_path, int8_path, images, BundleSettings())

The two models are timed in interleaved rounds, each model in a fresh process with ONNX
Runtime's default session options (the same harness as `kd-edge bench`), at batch 1 unless the
user says otherwise. Each round gives a paired INT8/FP32 ratio:

* for a board profile (rpi4 by default), the ratio *projected on the board*: both models timed
  on one host thread, each scaled by its data type's board factor (this host's measured matrix-
  product throughput in that type against the board's calibrated one, and Amdahl's scaling to
  the board's threads: ``kd_edge.runtime.bench.projection``). The host's throughput is measured
  once per round, so its noise enters the rounds' spread too. Host and board disagree often:
  this host's AVX2 runs int8 products 3x faster than float32, a Cortex-A72 without the dot-
  product instructions much less (on RSSCN7's pooled-base, INT8 0.78x FP32 here, 1.8x projected);
* for the host profile, the ratio measured at the host's thread count (or ``--threads``).

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
    "per-round log ratios; on a board profile, the ratio projected on the board) exceeds 1.05; otherwise INT8 "
    "(smaller, and not slower beyond the measured noise)"
)
# Student's t, one-sided 95 %, by degrees of freedom (rounds - 1); 1.697 (30) stands for more.
T95 = {
    1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
    11: 1.796, 12: 1.782, 13: 1.771, 14: 1.761, 15: 1.753, 16: 1.746, 17: 1.740, 18: 1.734, 19: 1.729, 20: 1.725,
    21: 1.721, 22: 1.717, 23: 1.714, 24: 1.711, 25: 1.708, 26: 1.706, 27: 1.703, 28: 1.701, 29: 1.699, 30: 1.697,
}  # fmt: skip


# What a bundle's card keeps of a decision: what was decided and how. The timings go to a file beside the bundle
# (``kd_edge.deploy.bundle.write_timings``): they differ at every run, and in the card they would make the archive
# a new artifact each time.
VERDICT_FIELDS = ("form", "reason", "profile", "threads", "batch_size", "rule")


@dataclass(frozen=True, kw_only=True)
class FormDecision:
    form: str  # "int8" or "fp32"
    reason: str  # the verdict, in words that do not change from one run to the next
    measured: str | None = None  # the timings behind it, in words
    profile: str | None = None
    threads: int | None = None
    batch_size: int | None = None
    fp32_p50_ms: list[float] | None = None  # one per round
    int8_p50_ms: list[float] | None = None
    round_ratios: list[float] | None = None  # INT8 / FP32, round by round (on a board profile, projected)
    board_scales: list[float] | None = None  # per round, how much slower INT8 is against FP32 on the board than here
    ratio: float | None = None  # the geometric mean of the round ratios
    lower_bound: float | None = None  # the ratio is above this with 95 % confidence
    noise: float | None = None  # half the range of the round ratios
    rule: str | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def verdict_dict(self) -> dict:
        return {key: value for key, value in self.to_dict().items() if key in VERDICT_FIELDS}

    @property
    def timed(self) -> bool:
        return self.measured is not None

    @property
    def explanation(self) -> str:
        """The verdict and, where the forms were timed, the measurements behind it."""
        return f"{self.reason}: {self.measured}" if self.timed else self.reason


def decision_threads(settings: BundleSettings) -> int:
    """The thread count the forms are compared at: the user's, else a board's cores (projected), else this host's."""
    from kd_edge.runtime.bench.profiles import get_profile

    if settings.threads is not None:
        return settings.threads
    return get_profile(settings.profile).cores or len(os.sched_getaffinity(0))


def decide_form(fp32: Path, int8: Path, images: np.ndarray, settings: BundleSettings) -> FormDecision:
    """Time both models (at one host thread for a board, projected; at the host's threads for the host) and
    apply the rule (``rule_verdict``)."""
    from kd_edge.runtime.bench.profiles import get_profile

    profile, threads, batch = get_profile(settings.profile), decision_threads(settings), settings.batch_size
    board = profile.clock_ghz is not None
    where = (
        f"projected on {profile.name} at {threads} thread(s) from 1 host thread" if board else f"{threads} thread(s)"
    )
    step(f"bundle: timing FP32 against INT8 ({where}, batch {batch}), {settings.rounds} rounds in fresh processes")
    fp32_ms, int8_ms = time_both(fp32, int8, images, settings, 1 if board else threads)
    scales = board_scales(profile, threads, settings.rounds) if board else None
    return rule_verdict(fp32_ms, int8_ms, scales, profile=settings.profile, threads=threads, batch_size=batch)


def time_both(fp32: Path, int8: Path, images: np.ndarray, settings: BundleSettings, threads: int):
    """Each model's p50 per interleaved round, at ``threads`` host threads."""
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark

    batch = settings.batch_size
    bench = BenchSettings(
        threads=(threads,), batch_sizes=(batch,), runs=100 * settings.rounds, rounds=settings.rounds,
        profile=settings.profile,
    )  # fmt: skip
    job = BenchJob(models=(str(fp32), str(int8)), settings=bench, projections=False)
    report = run_benchmark(job, images=images[: max(batch, 8)])
    return [next(r for r in report.results if r.model == str(path)).round_p50_ms for path in (fp32, int8)]


def board_scales(profile, threads: int, rounds: int) -> list[float]:
    """Per round, (INT8's board time / its host 1-thread time) / (FP32's likewise) at ``threads`` board threads,
    from this host's throughput measured once a round."""
    from kd_edge.runtime.bench.projection import board_factor, host_throughput_rounds, thread_scaling

    def scale(throughput: dict) -> float:
        cost = {t: board_factor(profile, t, throughput) * thread_scaling(profile, t, threads) for t in ("fp32", "int8")}
        return cost["int8"] / cost["fp32"]

    return [scale(throughput) for throughput in host_throughput_rounds(rounds)]


def lower_bound(ratios: list[float]) -> float:
    """The one-sided 95 % lower confidence bound on the ratio: exp(mean - t * sd / sqrt(n)) of the log ratios."""
    logs = np.log(ratios)
    t = T95.get(len(logs) - 1, T95[30])
    return float(np.exp(logs.mean() - t * logs.std(ddof=1) / np.sqrt(len(logs))))


def rule_verdict(fp32_ms: list[float], int8_ms: list[float], scales: list[float] | None = None, **setting):
    """The form the rule picks from paired per-round p50s (the same round index is one pair), each round's ratio
    times its board scale where there is one (``board_scales``)."""
    ratios = [i / f * s for f, i, s in zip(fp32_ms, int8_ms, scales or [1.0] * len(fp32_ms), strict=True)]
    ratio = float(np.exp(np.mean(np.log(ratios))))
    bound = lower_bound(ratios)
    noise = (max(ratios) - min(ratios)) / 2
    where = f"at {setting.get('threads')} thread(s), batch {setting.get('batch_size')}"
    if scales:
        where = f"projected on {setting.get('profile')} {where} (from 1 host thread)"
    measured = (
        f"INT8/FP32 p50 {ratio:.2f}x {where} over {len(ratios)} rounds, 95 % lower bound {bound:.2f}x, "
        f"round ratios {min(ratios):.2f}x to {max(ratios):.2f}x; the noise floor is {1 + NOISE_FLOOR:.2f}x"
    )
    if bound > 1 + NOISE_FLOOR:
        form, reason = "fp32", "INT8 met its accuracy budget but is slower than FP32 beyond the noise"
    else:
        form, reason = "int8", "INT8 met its accuracy budget and is not slower than FP32 beyond the noise"
    return FormDecision(
        form=form, reason=reason, measured=measured, fp32_p50_ms=list(fp32_ms), int8_p50_ms=list(int8_ms),
        round_ratios=ratios, ratio=ratio, lower_bound=bound, noise=noise, rule=RULE, board_scales=scales, **setting,
    )  # fmt: skip

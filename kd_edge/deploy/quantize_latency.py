"""The quantizer's timing: which nodes stay FP32 for speed, and INT8 against FP32 at the end.

Timings use ONNX Runtime sessions with default options but the thread count, as any other
program opens the model, so that a figure measured here holds outside kd-edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd_edge.log import progress, step


@dataclass(frozen=True, kw_only=True)
class LatencyComparison:
    """Median latency (ms) of the FP32 and INT8 models per batch size, from `kd-edge bench`'s harness
    with its default settings (so `kd-edge bench` of the two files reads the same, within ``spread``)."""

    threads: int
    fp32_ms: dict[int, float]
    int8_ms: dict[int, float]
    spread: dict[int, float]  # per batch size: the larger of the two models' spread across rounds

    def slower_batches(self) -> list[int]:
        """Batch sizes at which the INT8 model is slower than FP32 by more than the rounds' spread."""
        return [b for b in self.fp32_ms if self.int8_ms[b] > self.fp32_ms[b] * (1 + self.spread[b])]


SPEEDUP_TO_ACCEPT = 0.90  # a node stays FP32 only if that cuts latency by 10 %: timing noise here reaches 5 %


def search_latency(build, fp32_path: Path, nodes: list[str], images: np.ndarray, excluded: list[str], threads: int):
    """Keep in FP32 the nodes whose INT8 version costs more than it saves, measured, not guessed.

    Each candidate (a set of FP32 nodes) is timed against the FP32 model in plain
    sessions, in alternating rounds at batch 1 and 64; its score is the geometric
    mean of the two INT8/FP32 latency ratios. Greedily adds the node whose exclusion
    lowers the score most, while that gains at least 10 % in two separate measurements.
    """
    search = []

    def score(nodes: list[str]) -> float:
        model = build(nodes)
        progress(f"quantize: latency search, timing {', '.join(nodes) or 'all nodes in INT8'} against FP32")
        ratios = latency_ratios(fp32_path, model.path, images, threads)
        value = float(np.sqrt(ratios["batch1"] * ratios["batch64"]))
        search.append({"fp32_nodes": list(nodes), **ratios, "score": value})
        return value

    current = score(excluded)
    candidates = [name for name in nodes if name not in excluded]
    while candidates:
        trials = {name: score([*excluded, name]) for name in candidates}
        name = min(trials, key=trials.get)
        if trials[name] > current * SPEEDUP_TO_ACCEPT:
            break
        # Confirm with a fresh measurement of both, so that one noisy reading does not
        # keep a node (and its weights) in FP32 for nothing.
        again, again_current = score([*excluded, name]), score(excluded)
        if again > again_current * SPEEDUP_TO_ACCEPT:
            break
        excluded, current = [*excluded, name], again
        candidates.remove(name)
    return excluded, search


def latency_ratios(fp32_path: Path, int8_path: Path, images: np.ndarray, threads: int) -> dict:
    from kd_edge.runtime.bench.child import interleaved_latency_ms

    paths = {"fp32": fp32_path, "int8": int8_path}
    batch1 = interleaved_latency_ms(paths, threads, images[:1], runs=2000, rounds=5)
    batch64 = interleaved_latency_ms(paths, threads, images[:64], runs=200, rounds=5)
    return {"batch1": batch1["int8"] / batch1["fp32"], "batch64": batch64["int8"] / batch64["fp32"]}


def compare_latency(fp32: Path, int8: Path, images: np.ndarray, threads: int) -> LatencyComparison:
    """Median batch-1 and batch-64 latency of both models, measured by `kd-edge bench`'s harness:
    each measurement in a fresh process, the two models alternating over three rounds."""
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark
    from kd_edge.settings.bench import BenchSettings

    step("quantize: timing FP32 against INT8 with `kd-edge bench`'s harness")
    settings = BenchSettings(threads=(threads,), batch_sizes=(1, 64))  # bench's defaults otherwise
    report = run_benchmark(BenchJob(models=(str(fp32), str(int8)), settings=settings), images=images[:64])
    spread = {b: max(r.round_spread for r in report.results if r.batch_size == b) for b in (1, 64)}
    return LatencyComparison(
        threads=threads,
        fp32_ms={batch: report.p50_ms(str(fp32), batch) for batch in (1, 64)},
        int8_ms={batch: report.p50_ms(str(int8), batch) for batch in (1, 64)},
        spread=spread,
    )

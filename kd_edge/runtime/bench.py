"""Latency measurement of ONNX models: warm-up, then timed runs of ``session.run`` on preprocessed input."""

from __future__ import annotations

import time

import numpy as np

from kd_edge.runtime.session import OnnxModel


def time_runs(model: OnnxModel, inputs: np.ndarray, runs: int, warmup: int = 10) -> np.ndarray:
    """Seconds taken by each of ``runs`` calls, after ``warmup`` untimed ones."""
    feed = {model.input_name: inputs}
    run = model.session.run
    for _ in range(warmup):
        run(None, feed)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        run(None, feed)
        times[i] = time.perf_counter() - start
    return times


def interleaved_latency_ms(models: dict[str, OnnxModel], images: np.ndarray, runs: int, rounds: int = 5) -> dict[str, float]:
    """Median latency (ms) of each model on the same input, timed in alternating rounds
    so that a drift of the machine (another process, a clock change) hits all of them alike."""
    samples = {name: [] for name in models}
    per_round = max(runs // rounds, 1)
    for _ in range(rounds):
        for name, model in models.items():
            samples[name].append(time_runs(model, model.preprocess(images), per_round))
    return {name: float(np.median(np.concatenate(times)) * 1e3) for name, times in samples.items()}

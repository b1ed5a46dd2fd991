"""What happens in a benchmark's child process: apply the board's constraints, load the model, time it.

Each measurement is one spawned process (nothing inherited: no thread pool, no affinity, no
memory), so that one model's warm caches or threads never flatter another's figure. Numpy and
onnxruntime only.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd_edge.errors import KdEdgeError
from kd_edge.runtime.bench.emulate import (
    Constraints,
    apply_constraints,
    release_cgroups,
    throttling,
    throttling_delta,
    verify_pinning,
)
from kd_edge.runtime.host import proc_status_kb, thread_count
from kd_edge.runtime.session import OnnxModel

ADVICE = "raise --memory or lower --batch-size"


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """What one child process measures: one model, one setting, one round."""

    model: str
    threads: int
    batch_size: int
    constraints: Constraints
    warmup: int
    runs: int
    duration: float | None
    images: np.ndarray
    labels: np.ndarray | None
    rate: float | None
    measure_accuracy: bool
    frames: tuple[bytes, ...] = ()  # encoded camera frames (JPEG, PNG...) whose whole path is timed


@dataclass(frozen=True, kw_only=True)
class Reading:
    """What one child process reports back."""

    latencies_s: np.ndarray
    startup_s: float
    first_inference_s: float
    threads_seen: int
    emulation: dict
    throttling: dict | None  # CFS counters gained during the timed calls
    peak_rss_mb: float
    accuracy: float | None = None
    drone_loop: dict | None = None
    frame_path: dict | None = None


def measure(job: Measurement) -> Reading | str:
    """Runs in the child: constrain, load, time. Returns a Reading, or an error message."""
    try:
        emulation = apply_constraints(job.constraints)
        started = time.perf_counter()
        model = OnnxModel(job.model, job.threads)
        startup = time.perf_counter() - started
        batch = (
            np.resize(job.images, (job.batch_size, *job.images.shape[1:]))
            if len(job.images) < job.batch_size
            else job.images[: job.batch_size]
        )
        inputs = model.preprocess(batch)
        started = time.perf_counter()
        model.logits(inputs)
        first = time.perf_counter() - started
        throttled_before = throttling()
        latencies = time_latencies(model, inputs, job.warmup, job.runs, job.duration)
        throttled = throttling_delta(throttled_before, throttling())
        peak_rss = peak_rss_mb()  # before the accuracy pass, whose batches are not this row's batch size
        emulation["cores"] = verify_pinning(emulation["cores"])  # ONNX Runtime's threads exist now
        accuracy = model.accuracy(job.images, job.labels) if job.measure_accuracy and job.labels is not None else None
        loop = drone_loop(model, job.images, job.rate, job.duration or 3.0) if job.rate else None
        frames = frame_path(model, job.frames) if job.frames else None
        return Reading(
            latencies_s=latencies,
            startup_s=startup,
            first_inference_s=first,
            threads_seen=thread_count(),
            emulation=emulation,
            throttling=throttled,
            peak_rss_mb=peak_rss,
            accuracy=accuracy,
            drone_loop=loop,
            frame_path=frames,
        )
    except MemoryError:
        cap = job.constraints.memory_bytes or 0
        return (
            f"out of memory under the {cap:,}-byte memory cap running {job.model} at batch {job.batch_size}; {ADVICE}"
        )
    except KdEdgeError as exc:
        return str(exc)
    except (
        Exception
    ) as exc:  # onnxruntime's own errors (a failed allocation under a cap, a bad input): report, do not crash the child
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{job.model} at batch {job.batch_size} failed in ONNX Runtime: {first_line}"


def frame_path(model: OnnxModel, frames: tuple[bytes, ...], passes: int = 3) -> dict:
    """Each encoded frame as a camera pipeline takes it, batch 1, ``passes`` times: decode (Pillow; a JPEG at a
    reduced scale where it is over twice the input), convert to the model's channels and resize to its input (a
    detector's letterboxed) as `kd-edge predict` does, then preprocess and infer. Medians in ms."""
    try:
        from PIL import Image
    except ModuleNotFoundError:
        raise KdEdgeError("--frames decodes images with Pillow: pip install 'kd-edge[images]'") from None
    import io

    from kd_edge.data.pixels import load_reduced, model_pixels, shown_size
    from kd_edge.data.yolo import fitted
    from kd_edge.runtime.detections import letterbox

    detector, (_, height, width) = model.card.task == "detect", model.input_shape
    parts: dict[str, list[float]] = {"decode_ms": [], "resize_ms": [], "inference_ms": []}
    sizes = set()
    for _ in range(passes):
        for encoded in frames:
            started = time.perf_counter()
            with Image.open(io.BytesIO(encoded)) as image:
                size = shown_size(image)
                sizes.add(size)
                image = load_reduced(image, fitted(size, width) if detector else (width, height))
                decoded = time.perf_counter()
                if detector:  # as `kd-edge predict` reads a frame for it
                    pixels = letterbox(image, width)[0]
                else:
                    pixels = model_pixels(image, model.input_shape, model.card.resize_filter)
            resized = time.perf_counter()
            model.logits(model.preprocess(pixels[None]))
            done = time.perf_counter()
            for name, seconds in (("decode_ms", decoded - started), ("resize_ms", resized - decoded),
                                  ("inference_ms", done - resized)):  # fmt: skip
                parts[name].append(1e3 * seconds)
    medians = {name: float(np.median(values)) for name, values in parts.items()}
    return {
        "frames": len(frames),
        "passes": passes,
        "frame_sizes": sorted(f"{w}x{h}" for w, h in sizes),
        **medians,
        "total_ms": sum(medians.values()),
    }


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark. (getrusage's ru_maxrss would carry over
    the parent's peak across the spawn's exec; VmHWM belongs to the new address space.)"""
    high_water = proc_status_kb("VmHWM")
    return (high_water if high_water is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def time_latencies(model: OnnxModel, inputs: np.ndarray, warmup: int, runs: int, duration: float | None) -> np.ndarray:
    feed = {model.input_name: inputs}
    run = model.session.run
    for _ in range(warmup):
        run(None, feed)
    times = []
    deadline = time.perf_counter() + duration if duration else None
    while (len(times) < runs) if deadline is None else (time.perf_counter() < deadline):
        start = time.perf_counter()
        run(None, feed)
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def interleaved_latency_ms(
    paths: dict[str, Path], threads: int, images: np.ndarray, runs: int, rounds: int
) -> dict[str, float]:
    """Median latency (ms) of models timed in alternating rounds in this process.

    Cheaper than a process per measurement, for comparing many candidates (the quantizer's
    latency search). One session is alive at a time, opened with default options each round
    (thread spinning on, as any other program has it), so no idle pool takes the timed one's cycles.
    """
    samples = {name: [] for name in paths}
    per_round = max(runs // rounds, 1)
    for _ in range(rounds):
        for name, path in paths.items():
            model = OnnxModel(path, threads)
            samples[name].append(time_latencies(model, model.preprocess(images), 10, per_round, None))
            del model  # its thread pool goes before the next session's starts
    return {name: float(np.median(np.concatenate(times)) * 1e3) for name, times in samples.items()}


def drone_loop(model: OnnxModel, images: np.ndarray, rate: float, seconds: float) -> dict:
    """Frames arrive at ``rate`` Hz; each is preprocessed and classified before the next is due.

    A frame whose result comes after its deadline (its arrival + 1 / rate) is a miss;
    jitter is the spread of the actual start times around the schedule.
    """
    period = 1.0 / rate
    frames = max(int(seconds * rate), 1)
    start = time.perf_counter() + period
    lateness, misses, busy = [], 0, []
    for i in range(frames):
        due = start + i * period
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.001))
        began = time.perf_counter()
        model.logits(model.preprocess(images[i % len(images)][None]))
        done = time.perf_counter()
        lateness.append(began - due)
        busy.append(done - began)
        misses += done > due + period
    return {
        "rate_hz": rate,
        "frames": frames,
        "deadline_ms": 1e3 * period,
        "deadline_misses": int(misses),
        "miss_rate": misses / frames,
        "jitter_ms": 1e3 * float(np.std(lateness)),
        "max_lateness_ms": 1e3 * float(np.max(lateness)),
        "frame_time_p99_ms": 1e3 * float(np.percentile(busy, 99)),
    }


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def single_threaded_blas():
    """Children spawned in this block start numpy's BLAS with one thread.

    A measurement child does no BLAS work worth a pool; without this, the BLAS worker
    threads numpy starts at import would be the only threads outside the pinned cores
    and would compete with ONNX Runtime's pool.
    """
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    os.environ.update({name: "1" for name in BLAS_THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def measure_in_child(context, job: Measurement) -> Reading | str:
    reading, process = in_child(context, measure, job)
    release_cgroups(process.pid)
    if reading is None:  # the child died before answering: OOM-killed under a cgroup memory cap, or a crash
        cap = f" under the {job.constraints.memory_bytes:,}-byte memory cap" if job.constraints.memory_bytes else ""
        where = f"{job.model} at batch {job.batch_size}"
        return f"the benchmark process for {where} died{cap} (exit {process.exitcode}); {ADVICE}"
    return reading


def in_child(context, target, *args):
    """``target(*args)`` in a fresh spawned process: (its result, the finished process); the result is None when
    the child died before answering. (Not a multiprocessing Pool: a pool worker killed by Ctrl-C loses its
    task, and the pool waits for it forever.)"""
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=answer, args=(sender, target, *args), daemon=True)
    with single_threaded_blas(), signals_held():
        process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = None
    process.join()
    return result, process


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM held back while a child starts, in the parent and in the child (a blocked signal
    stays blocked across exec) until the child has read its job (``answer``). Ctrl-C reaches the whole
    process group: a child killed while still reading its job from the parent's pipe left the parent writing
    to it forever (multiprocessing's spawn keeps the pipe's read end open in the parent until the write ends).
    Once started, both hear signals again: the child dies or finishes, the parent stops at its next safe
    point."""
    import signal

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def answer(sender, target, *args) -> None:
    """The child's side of ``in_child``: its job read, it hears signals again, computes, answers."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    sender.send(target(*args))
    sender.close()

"""``kd-edge bench``: latency, throughput, accuracy and memory of ONNX models under an emulated target.

Every measurement runs in its own child process (spawned, so nothing is inherited:
no thread pool, no affinity, no memory) that applies the constraints, loads the
model, and times it. Models and settings are measured in rounds, each round
visiting every (model, setting) once, so that a drift of the machine hits all of
them alike. Numpy and onnxruntime only: never torch.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kd_edge.errors import ConfigError, KdEdgeError
from kd_edge.runtime.emulate import Constraints, apply_constraints, release_cgroups, thread_count, throttling
from kd_edge.runtime.profiles import DeviceProfile, get_profile
from kd_edge.runtime.report import environment
from kd_edge.runtime.session import OnnxModel

# A figure is flagged unstable when its robust coefficient of variation (1.4826 x median
# absolute deviation / median, which a few scheduler hiccups do not dominate) exceeds this,
# or when the cgroup reports CFS throttling.
UNSTABLE_CV = 0.10
CALIBRATION_SIZE = 256  # side of the float32 matrices of the host calibration kernel


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    threads: tuple[int, ...] = (2,)
    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = 20
    runs: int = 300
    duration: float | None = None  # seconds per model and setting, instead of runs
    rounds: int = 3
    cores: tuple[int, ...] | None = None
    memory_bytes: int | None = None
    cpu_quota: float | None = None
    dataset: str | None = None
    data: str | None = None
    data_dir: str | None = None
    profile: str = "host"
    rate: float | None = None

    def __post_init__(self):
        if not self.models:
            raise ConfigError("give at least one MODEL.onnx to benchmark")
        if self.dataset and self.data:
            raise ConfigError("give --dataset or --data, not both")
        if min(self.batch_sizes) < 1 or self.runs < 1 or self.rounds < 1 or self.warmup < 0:
            raise ConfigError("--batch-size, --runs and --rounds must be at least 1, --warmup at least 0")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError(f"--rate is in frames per second and must be positive, got {self.rate}")
        get_profile(self.profile)


@dataclass
class Job:
    """One child process: one model, one setting, one round."""

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


def run_job(job: Job) -> dict:
    """Runs in the child: constrain, load, time. Returns plain data, or {'error': ...}."""
    try:
        emulation = apply_constraints(job.constraints)
        started = time.perf_counter()
        model = OnnxModel(job.model, job.threads)
        startup = time.perf_counter() - started
        batch = np.resize(job.images, (job.batch_size, *job.images.shape[1:])) if len(job.images) < job.batch_size else job.images[: job.batch_size]
        inputs = model.preprocess(batch)
        started = time.perf_counter()
        model.logits(inputs)
        first = time.perf_counter() - started
        latencies = time_latencies(model, inputs, job.warmup, job.runs, job.duration)
        result = {
            "latencies_s": latencies.tolist(),
            "startup_s": startup,
            "first_inference_s": first,
            "threads_seen": thread_count(),
            "emulation": emulation,
            "throttling": throttling(),
            "disabled_optimizers": model.disabled_optimizers,
        }
        if job.measure_accuracy and job.labels is not None:
            result["accuracy"] = model.accuracy(job.images, job.labels)
        if job.rate:
            result["drone_loop"] = drone_loop(model, job.images, job.rate, job.duration or 3.0)
        result["peak_rss_mb"] = peak_rss_mb()
        return result
    except MemoryError:
        return {"error": f"out of memory under the {job.constraints.memory_bytes or 0:,}-byte memory cap while running {job.model} at batch {job.batch_size}; raise --memory or lower --batch-size"}
    except KdEdgeError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # onnxruntime's own errors (a failed allocation under a cap, a bad input): report, do not crash the child
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"error": f"{job.model} at batch {job.batch_size} failed in ONNX Runtime: {first_line}"}


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark. (getrusage's ru_maxrss would carry over
    the parent's peak across the spawn's exec; VmHWM belongs to the new address space.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def interleaved_latency_ms(models: dict[str, OnnxModel], images: np.ndarray, runs: int, rounds: int = 5) -> dict[str, float]:
    """Median latency (ms) of sessions held in this process, timed in alternating rounds.

    Cheaper than a process per measurement, for comparing many candidates (the
    quantizer's latency search); open the sessions with ``spinning=False`` so that
    the idle ones do not take cycles from the one being timed.
    """
    samples = {name: [] for name in models}
    per_round = max(runs // rounds, 1)
    for _ in range(rounds):
        for name, model in models.items():
            samples[name].append(time_latencies(model, model.preprocess(images), 10, per_round, None))
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
        "rate_hz": rate, "frames": frames, "deadline_ms": 1e3 * period, "deadline_misses": int(misses),
        "miss_rate": misses / frames, "jitter_ms": 1e3 * float(np.std(lateness)),
        "max_lateness_ms": 1e3 * float(np.max(lateness)), "frame_time_p99_ms": 1e3 * float(np.percentile(busy, 99)),
    }


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def host_gflops_per_core() -> float:
    """Float32 matrix-multiply throughput of one core of this machine (runs in a pinned child).

    The child's BLAS must start single-threaded: pinning only the calling thread would
    leave BLAS worker threads, created when numpy is imported, on the other cores.
    """
    context = multiprocessing.get_context("spawn")
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    os.environ.update({name: "1" for name in BLAS_THREAD_VARIABLES})
    try:
        with context.Pool(1) as pool:
            return pool.apply(calibration_kernel)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def calibration_kernel() -> float:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    a = np.random.default_rng(0).standard_normal((CALIBRATION_SIZE, CALIBRATION_SIZE), dtype=np.float32)
    b = a.T.copy()
    for _ in range(5):
        a @ b
    repeats, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.5:
        a @ b
        repeats += 1
    return 2 * CALIBRATION_SIZE**3 * repeats / (time.perf_counter() - started) / 1e9


def benchmark_data(config: BenchConfig, input_shape) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Labelled images (test split or an npz), or random images when no data was given."""
    if config.dataset:
        from kd_edge.data import load_dataset

        dataset = load_dataset(config.dataset, config.data_dir, download=False)
        return dataset.test.images, dataset.test.labels, f"{dataset.name} test split"
    if config.data:
        with np.load(config.data, allow_pickle=False) as archive:
            images = archive["images"]
            labels = archive["labels"].astype(np.int64) if "labels" in archive.files else None
        images = images[:, None] if images.ndim == 3 else images
        return np.ascontiguousarray(images), labels, str(config.data)
    images = np.random.default_rng(0).integers(0, 256, size=(64, *input_shape), dtype=np.uint8)
    return images, None, "random uint8 images (no labels: accuracy is null)"


def run_benchmark(config: BenchConfig, images: np.ndarray | None = None) -> dict:
    """Measure every model at every (threads, batch size), in interleaved rounds; returns the report.

    ``images`` (unlabelled) replaces the config's data, for callers that hold their own.
    """
    profile = get_profile(config.profile)
    probes = {path: OnnxModel(path, threads=1) for path in config.models}  # fails early on a bad model
    shapes = {probe.input_shape for probe in probes.values()}
    if images is None:
        images, labels, data_source = benchmark_data(config, next(iter(shapes)))
    else:
        labels, data_source = None, "images given by the caller"
    for probe in probes.values():  # data that does not fit a model fails here, before any timing
        probe.check_images(images[:1])
    warnings = thread_warnings(config, profile)
    context = multiprocessing.get_context("spawn")
    cores = config.cores or profile_cores(profile)
    memory = config.memory_bytes or (profile.ram_mb and profile.ram_mb << 20)
    samples: dict[tuple, list[dict]] = {}
    settings = [(model, threads, batch) for threads in config.threads for batch in config.batch_sizes for model in config.models]
    for round_index in range(config.rounds):
        for model, threads, batch in settings:
            first = round_index == 0  # accuracy and the drone loop are measured once
            job = Job(model, threads, batch, Constraints(threads, cores, memory, config.cpu_quota), config.warmup, max(config.runs // config.rounds, 1),
                      config.duration and config.duration / config.rounds, images, labels, config.rate if first else None, first)
            result = run_in_child(context, job)
            if "error" in result:
                raise KdEdgeError(result["error"])
            samples.setdefault((model, threads, batch), []).append(result)
    calibration = host_gflops_per_core()
    results = [summarize(key, rounds, probes[key[0]], profile, calibration) for key, rounds in samples.items()]
    return {"results": results, "environment": environment(config, profile, calibration), "data": data_source, "warnings": warnings, "config": asdict(config)}


def run_in_child(context, job: Job) -> dict:
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=child_main, args=(job, sender), daemon=True)
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:  # the child died before answering: OOM-killed under a cgroup memory cap, or a runtime crash
        result = None
    process.join()
    release_cgroups(process.pid)
    if result is None:
        cap = f" under the {job.constraints.memory_bytes:,}-byte memory cap" if job.constraints.memory_bytes else ""
        return {"error": f"the benchmark process for {job.model} at batch {job.batch_size} died{cap} (exit code {process.exitcode}); raise --memory or lower --batch-size"}
    return result


def child_main(job: Job, sender) -> None:
    sender.send(run_job(job))
    sender.close()


def profile_cores(profile: DeviceProfile) -> tuple[int, ...] | None:
    """A board's core count becomes a pinned core set on the host, where the host has enough."""
    if profile.cores is None:
        return None
    available = sorted(os.sched_getaffinity(0))
    return tuple(available[: profile.cores]) if len(available) >= profile.cores else tuple(available)


def thread_warnings(config: BenchConfig, profile: DeviceProfile) -> list[str]:
    cores = config.cores or profile_cores(profile) or tuple(os.sched_getaffinity(0))
    warnings = []
    for threads in config.threads:
        if threads > len(cores):
            warnings.append(f"--threads {threads} is more than the {len(cores)} core(s) allowed ({','.join(map(str, cores))}): threads will share cores and latency will suffer")
        if profile.cores and threads > profile.cores:
            warnings.append(f"--threads {threads} is more than the {profile.cores} cores of {profile.name}")
    return warnings


def summarize(key: tuple, rounds: list[dict], probe: OnnxModel, profile: DeviceProfile, host_gflops: float) -> dict:
    model, threads, batch = key
    latencies = np.concatenate([r["latencies_s"] for r in rounds]) * 1e3
    mean = float(latencies.mean())
    median = float(np.median(latencies))
    cv = float(1.4826 * np.median(np.abs(latencies - median)) / median) if median else 0.0
    throttled = any((r["throttling"] or {}).get("nr_throttled", 0) > 0 for r in rounds)
    first = rounds[0]
    result = {
        "model": model,
        "threads": threads,
        "batch_size": batch,
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)), "p90": float(np.percentile(latencies, 90)), "p99": float(np.percentile(latencies, 99)),
            "mean": mean, "std": float(latencies.std()), "min": float(latencies.min()), "max": float(latencies.max()),
        },
        "runs": int(len(latencies)),
        "rounds": len(rounds),
        "throughput_ips": batch * 1e3 / mean,
        "startup_ms": 1e3 * float(np.median([r["startup_s"] for r in rounds])),
        "first_inference_ms": 1e3 * float(np.median([r["first_inference_s"] for r in rounds])),
        "accuracy": first.get("accuracy"),
        "size_bytes": Path(model).stat().st_size,
        "parameters": parameter_count(probe),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
        "threads_seen": first["threads_seen"],
        "stable": cv <= UNSTABLE_CV and not throttled,
        "coefficient_of_variation": cv,
        "throttled": throttled,
        "emulation": {**first["emulation"], "projection": projection(float(np.percentile(latencies, 50)), profile, host_gflops)},
        "ort_disabled_optimizers": first["disabled_optimizers"],
    }
    if "drone_loop" in first:
        result["drone_loop"] = first["drone_loop"]
    return result


def projection(p50_ms: float, profile: DeviceProfile, host_gflops: float) -> dict:
    if profile.peak_gflops_per_core is None:
        return {"enforced": False, "reason": "host profile: nothing to project"}
    factor = host_gflops / profile.peak_gflops_per_core
    return {
        "enforced": False,
        "projected_p50_ms": p50_ms * factor,
        "factor": factor,
        "method": (
            f"PROJECTION, not a measurement: host p50 x (host float32 matmul {host_gflops:.1f} GFLOPS per core, measured / "
            f"{profile.name} peak {profile.peak_gflops_per_core} GFLOPS per core, from: {profile.source}). Assumes the model "
            "reaches the same fraction of peak on both and that per-call overhead scales alike; verify on the board."
        ),
    }


def parameter_count(model: OnnxModel) -> int | None:
    value = model.metadata.get("kd_edge.parameters")
    return int(value) if value else None



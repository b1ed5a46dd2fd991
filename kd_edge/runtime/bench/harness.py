"""``kd-edge bench``: latency, throughput, accuracy and memory of ONNX models under an emulated target.

Every measurement runs in its own child process (spawned, so nothing is inherited:
no thread pool, no affinity, no memory) that applies the constraints, loads the
model, and times it. Models and settings are measured in rounds, each round
visiting every (model, setting) once, so that a drift of the machine hits all of
them alike. Numpy and onnxruntime only: never torch.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kd_edge.errors import ConfigError, DatasetError, KdEdgeError
from kd_edge.log import step
from kd_edge.runtime import host
from kd_edge.runtime.bench.emulate import (
    Constraints,
    apply_constraints,
    release_cgroups,
    throttling,
    throttling_delta,
    verify_pinning,
)
from kd_edge.runtime.host import proc_status_kb, thread_count
from kd_edge.runtime.bench.profiles import DeviceProfile, get_profile
from kd_edge.runtime.session import OnnxModel, model_file, session_options

# A figure is flagged unstable when its rounds (each a fresh process) disagree by more than
# this share of the median (max - min of the rounds' medians), or when CFS throttled it.
UNSTABLE_SPREAD = 0.10
CALIBRATION_SIZE = 256  # side of the matrices of the host calibration kernels (kernels/matmul_*.onnx)
KERNELS = Path(__file__).with_name("kernels")
ADVICE = "raise --memory or lower --batch-size"


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Options of ``kd-edge bench``; validated here, before any process starts."""

    models: tuple[str, ...]
    threads: tuple[int, ...] = (2,)
    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = 20
    runs: int = 300
    duration: float | None = None  # seconds per model and setting, instead of runs
    rounds: int = 3
    cores: tuple[int, ...] | None = None
    memory_bytes: int | None = None
    cpu_quota: float | None = None  # in CPUs: 0.5 = half of one core's time
    dataset: str | None = None
    data: str | None = None
    data_dir: str | None = None
    profile: str = "host"
    rate: float | None = None

    def __post_init__(self):
        check(bool(self.models), "give at least one MODEL.onnx to benchmark")
        check(not (self.dataset and self.data), "give --dataset or --data, not both")
        check(bool(self.threads) and min(self.threads) >= 1, f"--threads must be at least 1, got {list(self.threads)}")
        check(
            bool(self.batch_sizes) and min(self.batch_sizes) >= 1,
            f"--batch-size must be at least 1, got {list(self.batch_sizes)}",
        )
        check(
            self.runs >= 1 and self.rounds >= 1 and self.warmup >= 0,
            "--runs and --rounds must be at least 1, --warmup at least 0",
        )
        check(
            self.duration is None or self.duration > 0,
            f"--duration is in seconds and must be positive, got {self.duration}",
        )
        check(
            self.rate is None or self.rate > 0, f"--rate is in frames per second and must be positive, got {self.rate}"
        )
        check(
            self.cpu_quota is None or self.cpu_quota > 0,
            f"--cpu-quota is a number of CPUs and must be positive, got {self.cpu_quota}",
        )
        check(self.memory_bytes is None or self.memory_bytes > 0, f"--memory must be positive, got {self.memory_bytes}")
        if self.cores is not None:
            allowed = os.sched_getaffinity(0)
            outside = sorted(set(self.cores) - allowed)
            check(
                not outside,
                f"--cores {','.join(map(str, self.cores))}: cores {outside} are not available to this process (it "
                f"may use {sorted(allowed)})",
            )
        get_profile(self.profile)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class Latency:
    """Percentiles and moments of one result's per-call latencies, in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, samples_ms: np.ndarray) -> Latency:
        p50, p90, p99 = (float(np.percentile(samples_ms, q)) for q in (50, 90, 99))
        return cls(
            p50,
            p90,
            p99,
            float(samples_ms.mean()),
            float(samples_ms.std()),
            float(samples_ms.min()),
            float(samples_ms.max()),
        )


@dataclass(frozen=True, kw_only=True)
class BenchResult:
    """One model at one (threads, batch size): what ``kd-edge bench`` measured, and how."""

    model: str
    label: str  # the shortest unambiguous name among the models of the report
    threads: int
    batch_size: int
    latency_ms: Latency
    runs: int
    rounds: int
    throughput_ips: float
    startup_ms: float
    first_inference_ms: float
    accuracy: float | None
    size_bytes: int
    parameters: int | None
    peak_rss_mb: float
    threads_seen: int
    stable: bool  # the rounds agree within 10 % and nothing throttled: the next run should read the same
    round_p50_ms: list[float]  # the median of each round, each a fresh process
    round_spread: float  # (max - min) of those medians / the overall median
    coefficient_of_variation: float  # robust spread of the single calls (1.4826 MAD / median)
    throttled: bool
    emulation: dict  # per constraint: requested, enforced, mechanism, read_back; plus the projection
    drone_loop: dict | None = None

    @property
    def projected_p50_ms(self) -> float | None:
        return self.emulation["projection"].get("projected_p50_ms")

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.drone_loop is None:
            del data["drone_loop"]
        return data


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    results: list[BenchResult]
    environment: dict
    data: str  # where the images (and accuracy) came from
    warnings: list[str]
    config: BenchConfig

    def p50_ms(self, model: str, batch_size: int, threads: int | None = None) -> float:
        for result in self.results:
            if result.model == model and result.batch_size == batch_size and threads in (None, result.threads):
                return result.latency_ms.p50
        raise KeyError((model, batch_size, threads))

    def to_dict(self) -> dict:
        """The JSON form of ``kd-edge bench --json`` (schema in DESIGN.md)."""
        return {
            "results": [r.to_dict() for r in self.results],
            "environment": self.environment,
            "data": self.data,
            "warnings": self.warnings,
            "config": asdict(self.config),
        }


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
    models: dict[str, OnnxModel], images: np.ndarray, runs: int, rounds: int = 5
) -> dict[str, float]:
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


def host_throughput_per_core() -> dict[str, float]:
    """This machine's per-core matrix-product throughput in ONNX Runtime, G(FL)OP/s, for "fp32" and "int8".

    Measured in a spawned child pinned to one core, in single-threaded sessions: the
    same kernels (MLAS) the models' Conv, Gemm and their INT8 forms run on.
    """
    context = multiprocessing.get_context("spawn")
    with single_threaded_blas(), context.Pool(1) as pool:
        return pool.apply(gemm_throughput)


def gemm_throughput(seconds: float = 0.4) -> dict[str, float]:
    import onnxruntime as ort

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    n = CALIBRATION_SIZE
    feeds = {
        "fp32": {
            "a": rng.standard_normal((n, n), dtype=np.float32),
            "b": rng.standard_normal((n, n), dtype=np.float32),
        },
        "int8": {
            "a": rng.integers(0, 256, (n, n), dtype=np.uint8),
            "b": rng.integers(-128, 128, (n, n), dtype=np.int8),
        },
    }
    throughput = {}
    for dtype, feed in feeds.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            str(KERNELS / f"matmul_{dtype}.onnx"), options, providers=["CPUExecutionProvider"]
        )
        for _ in range(5):
            session.run(None, feed)
        repeats, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            session.run(None, feed)
            repeats += 1
        throughput[dtype] = 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9
    return throughput


def benchmark_data(
    config: BenchConfig, probes: dict[str, OnnxModel], bundles: dict
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The images to time and score, and where they came from, in this order of preference:
    --dataset (its test split), --data (an npz), a bundle's samples.npz, the test split of the
    dataset the first model's card names (when its files are here), else random images."""
    from kd_edge.data import load_data, load_dataset

    if config.dataset:
        dataset = load_dataset(config.dataset, config.data_dir, download=False)
        return dataset.test.images, dataset.test.labels, f"{dataset.name} test split"
    if config.data:
        return (*read_npz(Path(config.data)), str(config.data))
    for label, bundle in bundles.items():
        if bundle.samples_path is not None:
            return (*read_npz(bundle.samples_path), f"the samples of bundle {label}")
    first = next(iter(probes.values()))
    if first.card.data is not None:
        try:
            dataset = load_data(first.card.data, config.data_dir)
            return (
                dataset.test.images,
                dataset.test.labels,
                f"{dataset.name} test split (the dataset in the model card)",
            )
        except DatasetError as exc:
            reason = f"the model card's dataset {first.card.data.dataset!r} is not here ({str(exc)[:80]}...)"
    else:
        reason = "no --dataset or --data, and the model card names no dataset"
    images = np.random.default_rng(0).integers(0, 256, size=(64, *first.input_shape), dtype=np.uint8)
    return images, None, f"random uint8 images, so accuracy is null: {reason}"


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as archive:
        images = archive["images"]
        labels = archive["labels"].astype(np.int64) if "labels" in archive.files else None
    images = images[:, None] if images.ndim == 3 else images
    return np.ascontiguousarray(images), labels


def run_benchmark(config: BenchConfig, images: np.ndarray | None = None) -> BenchReport:
    """Measure every model at every (threads, batch size), in interleaved rounds.

    A model is an .onnx file or a bundle (folder or archive, verified and unpacked once
    here); results are labelled with the path as given. ``images`` (unlabelled) replaces
    the config's data, for callers that hold their own.
    """
    profile = get_profile(config.profile)
    with contextlib.ExitStack() as stack:
        resolved = {
            label: stack.enter_context(model_file(Path(label))) for label in config.models
        }  # archives unpacked once
        files = {label: path for label, (path, _) in resolved.items()}
        bundles = {label: bundle for label, (_, bundle) in resolved.items() if bundle is not None}
        probes = {label: OnnxModel(label, threads=1) for label in config.models}  # fails early on a bad model
        if images is None:
            images, labels, data_source = benchmark_data(config, probes, bundles)
        else:
            labels, data_source = None, "images given by the caller"
        for probe in probes.values():  # data that does not fit a model fails here, before any timing
            probe.check_images(images)
        readings = measure_in_rounds(config, profile, files, images, labels)
        names = unique_labels(config.models)
        step("bench: measuring this host's per-core matrix-product throughput (for projections)")
        host_throughput = host_throughput_per_core()
        results = [
            summarize(key, names[key[0]], rounds, probes[key[0]], files[key[0]], profile, host_throughput)
            for key, rounds in readings.items()
        ]
    return BenchReport(
        results=results,
        environment=environment(config, profile, host_throughput),
        data=data_source,
        warnings=thread_warnings(config, profile),
        config=config,
    )


def unique_labels(models: tuple[str, ...]) -> dict[str, str]:
    """Each model's shortest path suffix that no other model shares: a/student.onnx, b/student.onnx."""
    parts = {model: Path(model).parts for model in models}
    for depth in range(1, max(len(p) for p in parts.values()) + 1):
        labels = {model: "/".join(p[-depth:]) for model, p in parts.items()}
        if len(set(labels.values())) == len(set(models)):
            return labels
    return {model: model for model in models}


def measure_in_rounds(
    config: BenchConfig, profile: DeviceProfile, files: dict[str, Path], images, labels
) -> dict[tuple, list[Reading]]:
    """Every (model, threads, batch size) once per round, each in a fresh child process."""
    context = multiprocessing.get_context("spawn")
    cores = config.cores or profile_cores(profile)
    memory = config.memory_bytes or (profile.ram_mb and profile.ram_mb << 20)
    readings: dict[tuple, list[Reading]] = {}
    settings = [
        (label, threads, batch) for threads in config.threads for batch in config.batch_sizes for label in config.models
    ]
    for round_index in range(config.rounds):
        for label, threads, batch in settings:
            step(f"bench: round {round_index + 1}/{config.rounds}, {label}, {threads} thread(s), batch {batch}")
            first = round_index == 0  # accuracy and the drone loop are measured once
            job = Measurement(
                model=str(files[label]),
                threads=threads,
                batch_size=batch,
                constraints=Constraints(threads=threads, cores=cores, memory_bytes=memory, cpu_quota=config.cpu_quota),
                warmup=config.warmup,
                runs=max(config.runs // config.rounds, 1),
                duration=config.duration and config.duration / config.rounds,
                images=images,
                labels=labels,
                rate=config.rate if first else None,
                measure_accuracy=first,
            )
            reading = measure_in_child(context, job)
            if isinstance(reading, str):
                raise KdEdgeError(reading)
            readings.setdefault((label, threads, batch), []).append(reading)
    return readings


def environment(config: BenchConfig, profile: DeviceProfile, host_throughput: dict[str, float]) -> dict:
    import onnxruntime as ort

    options = session_options(config.threads[0])
    return {
        **host.describe(),
        "onnxruntime_version": ort.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "session_options": {
            "intra_op_num_threads": "per result (threads)",
            "inter_op_num_threads": options.inter_op_num_threads,
            "execution_mode": str(options.execution_mode),
            "graph_optimization_level": str(options.graph_optimization_level),
        },
        "host_gops_per_core": host_throughput,
        "profile": profile.to_dict(),
        "timing": f"{config.warmup} warm-up runs, then timed session.run calls on preprocessed input, "
        f"in {config.rounds} interleaved rounds, each in a fresh process",
    }


def measure_in_child(context, job: Measurement) -> Reading | str:
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=child_main, args=(job, sender), daemon=True)
    with single_threaded_blas():
        process.start()
    sender.close()
    try:
        reading = receiver.recv()
    except EOFError:  # the child died before answering: OOM-killed under a cgroup memory cap, or a runtime crash
        reading = None
    process.join()
    release_cgroups(process.pid)
    if reading is None:
        cap = f" under the {job.constraints.memory_bytes:,}-byte memory cap" if job.constraints.memory_bytes else ""
        where = f"{job.model} at batch {job.batch_size}"
        return f"the benchmark process for {where} died{cap} (exit {process.exitcode}); {ADVICE}"
    return reading


def child_main(job: Measurement, sender) -> None:
    sender.send(measure(job))
    sender.close()


def profile_cores(profile: DeviceProfile) -> tuple[int, ...] | None:
    """A board's core count becomes a pinned core set on the host, where the host has enough."""
    if profile.cores is None:
        return None
    available = sorted(os.sched_getaffinity(0))
    return tuple(available[: profile.cores]) if len(available) >= profile.cores else tuple(available)


def profile_cores_note(profile: DeviceProfile, cores: tuple[int, ...]) -> str:
    return (
        f"the {profile.name} profile has {profile.cores} cores but this host gives {len(cores)}: measurements are "
        f"pinned to {len(cores)} core(s) ({','.join(map(str, cores))}), fewer than the board has"
    )


def thread_warnings(config: BenchConfig, profile: DeviceProfile) -> list[str]:
    cores = config.cores or profile_cores(profile) or tuple(os.sched_getaffinity(0))
    warnings = []
    if not config.cores and profile.cores and len(cores) < profile.cores:
        warnings.append(profile_cores_note(profile, cores))
    for threads in config.threads:
        if threads > len(cores):
            warnings.append(
                f"--threads {threads} is more than the {len(cores)} core(s) allowed ({','.join(map(str, cores))}): "
                "threads will share cores and latency will suffer"
            )
        if profile.cores and threads > profile.cores:
            warnings.append(f"--threads {threads} is more than the {profile.cores} cores of {profile.name}")
    return warnings


def board_cores(profile: DeviceProfile, cores: dict) -> dict:
    """What a profile asked for against what the host could give (read back in the child)."""
    if not profile.cores:
        return {}
    pinned = tuple(cores.get("read_back") or ())
    extra = {"profile_cores": profile.cores}
    if len(pinned) < profile.cores:
        extra["note"] = profile_cores_note(profile, pinned)
    return extra


def is_repeatable(spread: float, cv: float, rounds: int, throttled: bool) -> bool:
    """Would the next run read the same? Rounds (each a fresh process) within 10 % of each other;
    with a single round, only the spread of its calls can be judged."""
    return not throttled and (spread <= UNSTABLE_SPREAD if rounds > 1 else cv <= UNSTABLE_SPREAD)


def summarize(
    key: tuple,
    label: str,
    rounds: list[Reading],
    probe: OnnxModel,
    path: Path,
    profile: DeviceProfile,
    host_throughput: dict[str, float],
) -> BenchResult:
    model, threads, batch = key
    latencies = np.concatenate([r.latencies_s for r in rounds]) * 1e3
    latency = Latency.of(latencies)
    median = float(np.median(latencies))
    cv = float(1.4826 * np.median(np.abs(latencies - median)) / median) if median else 0.0
    throttled = any((r.throttling or {}).get("nr_throttled", 0) > 0 for r in rounds)
    round_p50 = [1e3 * float(np.median(r.latencies_s)) for r in rounds]
    spread = (max(round_p50) - min(round_p50)) / median if median else 0.0
    first = rounds[0]
    cores = first.emulation.get("cores", {})
    return BenchResult(
        model=model,
        label=label,
        threads=threads,
        batch_size=batch,
        latency_ms=latency,
        runs=len(latencies),
        rounds=len(rounds),
        throughput_ips=batch * 1e3 / latency.mean,
        startup_ms=1e3 * float(np.median([r.startup_s for r in rounds])),
        first_inference_ms=1e3 * float(np.median([r.first_inference_s for r in rounds])),
        accuracy=first.accuracy,
        size_bytes=path.stat().st_size,
        parameters=probe.card.parameters,
        peak_rss_mb=max(r.peak_rss_mb for r in rounds),
        threads_seen=first.threads_seen,
        stable=is_repeatable(spread, cv, len(rounds), throttled),
        round_p50_ms=round_p50,
        round_spread=spread,
        coefficient_of_variation=cv,
        throttled=throttled,
        emulation={
            **first.emulation,
            "cores": {**cores, **board_cores(profile, cores)},
            "projection": projection(latency.p50, threads, data_type(probe), profile, host_throughput),
        },
        drone_loop=first.drone_loop,
    )


def data_type(model: OnnxModel) -> str:
    """The arithmetic most of a model's work runs in: int8 once it is quantized (the nodes kept in FP32 are few)."""
    return "int8" if model.card.quantization is not None else "fp32"


def projection(
    p50_ms: float, threads: int, dtype: str, profile: DeviceProfile, host_throughput: dict[str, float]
) -> dict:
    """The board's single-thread latency, scaled from the host's by per-core throughput of the model's data type."""
    if profile.clock_ghz is None:
        return {"enforced": False, "reason": "host profile: nothing to project"}
    if threads != 1:
        return {
            "enforced": False,
            "reason": "projected for 1 thread only (add --threads 1): how latency scales with threads depends on "
            "the board's caches and memory, which the host does not share",
        }
    board = profile.peak_gops_per_core(dtype)
    factor = host_throughput[dtype] / board
    return {
        "enforced": False,
        "projected_p50_ms": p50_ms * factor,
        "factor": factor,
        "data_type": dtype,
        "method": (
            f"PROJECTION, not a measurement: host 1-thread p50 x (host {dtype} matrix-product throughput "
            f"{host_throughput[dtype]:.1f} G(FL)OP/s per core, measured in ONNX Runtime / {profile.name} {dtype} peak "
            f"{board:.1f} G(FL)OP/s per core, from: {profile.source}). Assumes the model reaches the same fraction of "
            "peak on both and that per-call overhead scales alike; verify on the board."
        ),
    }

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
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from kd_edge.errors import ConfigError, DatasetError, KdEdgeError
from kd_edge.interrupt import stop_if_requested
from kd_edge.log import progress, step
from kd_edge.runtime import host
from kd_edge.runtime.bench.child import Measurement, Reading, measure_in_child
from kd_edge.runtime.bench.emulate import Constraints
from kd_edge.runtime.bench.profiles import DeviceProfile, get_profile
from kd_edge.runtime.bench.projection import data_type, host_throughput_per_core, projection
from kd_edge.runtime.session import OnnxModel, model_file, session_options
from kd_edge.settings.bench import BenchSettings

# A figure is flagged unstable when its rounds (each a fresh process) disagree by more than
# this share of the median (max - min of the rounds' medians), or when CFS throttled it.
UNSTABLE_SPREAD = 0.10


@dataclass(frozen=True, kw_only=True)
class BenchJob:
    """What to measure (the models, and labelled data for accuracy) and how (``settings``).

    Data for accuracy, in this order: ``dataset`` (its test split), ``data`` (an .npz), a bundle's
    samples, the test split of the dataset the first model's card names, else random images.
    """

    models: tuple[str, ...]
    settings: BenchSettings = field(default_factory=BenchSettings)
    dataset: str | None = None
    data: str | None = None
    data_dir: str | None = None
    frames: str | None = None  # a folder of camera frames: each one's decode, resize and inference is timed
    projections: bool = True  # under a board profile, also time 1 thread: the projections start from it

    def __post_init__(self):
        if not self.models:
            raise ConfigError("give at least one MODEL.onnx to benchmark")
        if self.dataset and self.data:
            raise ConfigError("give --dataset or --data, not both")
        if self.settings.profile is not None:
            get_profile(self.settings.profile)

    def to_dict(self) -> dict:
        return {"models": list(self.models), **asdict(self.settings), "dataset": self.dataset, "data": self.data,
                "data_dir": self.data_dir}  # fmt: skip


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
    frame_path: dict | None = None  # decode, resize and inference of each camera frame (--frames)

    @property
    def projected_p50_ms(self) -> float | None:
        return self.emulation["projection"].get("projected_p50_ms")

    def to_dict(self) -> dict:
        data = asdict(self)
        for optional in ("drone_loop", "frame_path"):
            if data[optional] is None:
                del data[optional]
        return data


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    results: list[BenchResult]
    environment: dict
    data: str  # where the images (and accuracy) came from
    warnings: list[str]
    job: BenchJob

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
            "config": self.job.to_dict(),
        }


def benchmark_data(
    job: BenchJob, probes: dict[str, OnnxModel], bundles: dict
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The images to time and score, and where they came from, in this order of preference:
    --dataset (its test split), --data (an npz), a bundle's samples.npz, the test split of the
    dataset the first model's card names (when its files are here), else random images."""
    from kd_edge.data import load_data, load_dataset

    first = next(iter(probes.values()))
    if first.card.task == "detect":  # a frame's cost does not depend on its content; F1 is the run's to measure
        frames = np.random.default_rng(0).integers(0, 256, size=(16, *first.input_shape), dtype=np.uint8)
        return frames, None, "random uint8 frames (a detector: its F1 is in its run's metrics.json, not timed here)"
    if job.dataset:
        dataset = load_dataset(job.dataset, job.data_dir, download=False)
        return dataset.test.images, dataset.test.labels, f"{dataset.name} test split"
    if job.data:
        return (*read_npz(Path(job.data)), str(job.data))
    for label, bundle in bundles.items():
        if bundle.samples_path is not None:
            return (*read_npz(bundle.samples_path), f"the samples of bundle {label}")
    if first.card.data is not None:
        try:
            dataset = load_data(first.card.data, job.data_dir)
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


def run_benchmark(job: BenchJob, images: np.ndarray | None = None) -> BenchReport:
    """Measure every model at every (threads, batch size), in interleaved rounds.

    A model is an .onnx file or a bundle (folder or archive, verified and unpacked once
    here); results are labelled with the path as given. ``images`` (unlabelled) replaces
    the job's data, for callers that hold their own.
    """
    settings = job.settings
    with contextlib.ExitStack() as stack:
        resolved = {
            label: stack.enter_context(model_file(Path(label))) for label in job.models
        }  # archives unpacked once
        files = {label: path for label, (path, _) in resolved.items()}
        bundles = {label: bundle for label, (_, bundle) in resolved.items() if bundle is not None}
        profile = get_profile(settings.profile or bundle_profile(bundles))
        job, added = with_one_thread(job, profile)
        probes = {label: OnnxModel(label, threads=1) for label in job.models}  # fails early on a bad model
        if images is None:
            images, labels, data_source = benchmark_data(job, probes, bundles)
        else:
            labels, data_source = None, "images given by the caller"
        for probe in probes.values():  # data that does not fit a model fails here, before any timing
            probe.check_images(images)
        readings = measure_in_rounds(job, profile, files, images, labels)
        names = unique_labels(job.models)
        host_throughput = {}  # only a board's projections need it, and it takes a second or two
        if projects(job, profile):
            step("bench: measuring this host's per-core matrix-product throughput (for projections)")
            host_throughput = host_throughput_per_core()
        one_thread = {(model, batch): median_ms(rounds) for (model, t, batch), rounds in readings.items() if t == 1}
        results = [
            summarize(key, names[key[0]], rounds, probes[key[0]], files[key[0]], profile, host_throughput,
                      one_thread.get((key[0], key[2])))
            for key, rounds in readings.items()
        ]  # fmt: skip
    return BenchReport(
        results=results,
        environment=environment(settings, profile, host_throughput),
        data=data_source,
        warnings=thread_warnings(job.settings, profile) + added,
        job=job,
    )


def projects(job: BenchJob, profile: DeviceProfile) -> bool:
    """Whether this job projects onto a board: a board profile, and projections not switched off."""
    return profile.clock_ghz is not None and job.projections


def with_one_thread(job: BenchJob, profile: DeviceProfile) -> tuple[BenchJob, list[str]]:
    """A board's projections start from the host's 1-thread latency: measure it too when it was not asked for."""
    if not projects(job, profile) or 1 in job.settings.threads:
        return job, []
    settings = replace(job.settings, threads=(1, *job.settings.threads))
    note = f"1 thread measured too: the {profile.name} projections start from the host's 1-thread latency"
    return replace(job, settings=settings), [note]


def median_ms(rounds: list[Reading]) -> float:
    return 1e3 * float(np.median(np.concatenate([r.latencies_s for r in rounds])))


def bundle_profile(bundles: dict) -> str:
    """The board the first bundle was made for (older bundles name none): the host otherwise."""
    for bundle in bundles.values():
        if bundle.info.get("profile"):
            return bundle.info["profile"]
    return "host"


def unique_labels(models: tuple[str, ...]) -> dict[str, str]:
    """Each model's shortest path suffix that no other model shares: a/student.onnx, b/student.onnx."""
    parts = {model: Path(model).parts for model in models}
    for depth in range(1, max(len(p) for p in parts.values()) + 1):
        labels = {model: "/".join(p[-depth:]) for model, p in parts.items()}
        if len(set(labels.values())) == len(set(models)):
            return labels
    return {model: model for model in models}


def measure_in_rounds(
    job: BenchJob, profile: DeviceProfile, files: dict[str, Path], images, labels
) -> dict[tuple, list[Reading]]:
    """Every (model, threads, batch size) once per round, each in a fresh child process."""
    config = job.settings
    context = multiprocessing.get_context("spawn")
    cores = config.cores or profile_cores(profile)
    memory = config.memory_bytes or (profile.ram_mb and profile.ram_mb << 20)
    readings: dict[tuple, list[Reading]] = {}
    settings = [
        (label, threads, batch) for threads in config.threads for batch in config.batch_sizes for label in job.models
    ]
    frames = read_frames(Path(job.frames)) if job.frames else ()
    total, started = config.rounds * len(settings), time.perf_counter()
    for round_index in range(config.rounds):
        for number, (label, threads, batch) in enumerate(settings, start=round_index * len(settings)):
            where = f"bench round {round_index + 1}/{config.rounds} of {label} ({threads} thread(s), batch {batch})"
            stop_if_requested(where)
            left = f", about {remaining(started, number, total):.0f} s left" if number else ""
            progress(f"bench: {where.removeprefix('bench ')}, measurement {number + 1}/{total}{left}")
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
                frames=frames if first else (),
            )
            reading = measure_in_child(context, job)
            stop_if_requested(f"the end of {where}")  # a signal to the process group stops the child too
            if isinstance(reading, str):
                raise KdEdgeError(reading)
            readings.setdefault((label, threads, batch), []).append(reading)
    return readings


def remaining(started: float, done: int, total: int) -> float:
    """Seconds the ``total - done`` measurements left should take, at the pace of the ``done`` ones."""
    return (time.perf_counter() - started) / done * (total - done)


MAX_FRAMES = 50  # enough for a median; a folder of thousands would cost minutes a setting


def read_frames(folder: Path) -> tuple[bytes, ...]:
    """The encoded bytes of up to ``MAX_FRAMES`` image files of ``folder`` (searched below it), in name order."""
    from kd_edge.data.folders import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise DatasetError(f"--frames {str(folder)!r} is not a folder; give a folder of camera frames (JPEG, PNG...)")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"--frames {str(folder)!r} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return tuple(p.read_bytes() for p in files[:MAX_FRAMES])


def environment(config: BenchSettings, profile: DeviceProfile, host_throughput: dict[str, float]) -> dict:
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


def thread_warnings(config: BenchSettings, profile: DeviceProfile) -> list[str]:
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
    one_thread_ms: float | None,
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
            "projection": projection(one_thread_ms, threads, data_type(probe), profile, host_throughput),
        },
        drone_loop=first.drone_loop,
        frame_path=first.frame_path,
    )

"""Chaining stages: the one place where one stage's output becomes the next one's input.

Stages never call each other (export does not quantize, quantize does not bundle); the
commands that run several of them come here. The full pipeline is this list:

    teacher -> student -> export -> quantize -> bundle -> bench -> report

Each stage records, in RUN_DIR/pipeline.json, a fingerprint of its settings and of its
inputs (the SHA-256 of the files the stages it needs wrote) and the SHA-256 of its own
outputs. A stage whose fingerprint is unchanged and whose outputs are still as it wrote
them is skipped: an interrupted pipeline resumes where it stopped, and a changed setting
reruns exactly the stages that depend on it.

    run_pipeline(PipelineConfig(out="runs/demo", distill=distill_config(dataset="mnist-5k")))
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from kd_edge import __version__
from kd_edge.deploy.bundle import BundleConfig, BundleResult, check_outputs, write_bundle
from kd_edge.config import DistillConfig, distill_options, write_toml
from kd_edge.training.distributed import barrier, from_main, is_main
from kd_edge.errors import ConfigError, OutputError, QuantizationError
from kd_edge.io import atomic_write_json, ensure_writable_dir

STATE_FILE = "pipeline.json"
TRAINING_STAGES = ("teacher", "student")  # the stages every torchrun rank takes part in
CONFIG_FILE = "kd-edge.toml"
# Options of `kd-edge quantize` that the pipeline passes on (the rest name files, which the pipeline chooses).
QUANTIZE_KEYS = {
    "calibration_size": "calibration_size",
    "method": "method",
    "per_channel": "per_channel",
    "max_accuracy_drop": "max_accuracy_drop",
    "exclude": "exclude",
    "reduce_range": "reduce_range",
    "optimize_latency": "optimize_latency",
    "threads": "latency_threads",
}
BENCH_KEYS = ("profile", "threads", "batch_size", "runs", "rounds", "warmup")


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Every stage's settings; ``tables()`` is the resolved kd-edge.toml that repeats the run."""

    out: str
    distill: DistillConfig
    exporter: str | None = None  # None: dynamo, falling back to torchscript (kd_edge.deploy.export)
    opset: int | None = None
    quantize: dict = field(default_factory=dict)  # QUANTIZE_KEYS -> value
    bundle_samples: int = 300
    bundle_threads: tuple[int, ...] = (1, 2)
    bundle_compare_latency: bool = True
    bench: dict = field(
        default_factory=lambda: {
            "profile": "rpi4",
            "threads": [1, 2],
            "batch_size": [1],
            "runs": 300,
            "rounds": 3,
            "warmup": 20,
        }
    )
    force: bool = False

    def __post_init__(self):
        from kd_edge.deploy.export import check_exporter

        check_exporter(self.exporter, self.opset)  # before any training, not at the export stage
        if self.distill.mode != "offline":
            raise ConfigError(
                f"the pipeline distils offline, from the teacher it trains; for --mode {self.distill.mode} run "
                f"`kd-edge distill --mode {self.distill.mode} --out RUN`, then `kd-edge bundle RUN`"
            )
        unknown = set(self.quantize) - set(QUANTIZE_KEYS)
        if unknown:
            raise ConfigError(
                f"[quantize] keys {sorted(unknown)} are not used by the pipeline; it uses {sorted(QUANTIZE_KEYS)}"
            )
        unknown = set(self.bench) - set(BENCH_KEYS)
        if unknown:
            raise ConfigError(
                f"[bench] keys {sorted(unknown)} are not used by the pipeline; it uses {list(BENCH_KEYS)}"
            )

    def tables(self) -> dict[str, dict]:
        return {
            "distill": distill_options(self.distill),
            "export": {k: v for k, v in (("exporter", self.exporter), ("opset", self.opset)) if v is not None},
            "quantize": dict(self.quantize),
            "bundle": {
                "samples": self.bundle_samples,
                "threads": list(self.bundle_threads),
                "compare_latency": self.bundle_compare_latency,
            },
            "bench": dict(self.bench),
        }


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # the stages whose outputs this one reads
    outputs: tuple[str, ...]  # files or folders in RUN_DIR (an output may be absent, as a refused INT8 model)
    settings: Callable[[PipelineConfig], dict]
    run: Callable[[PipelineConfig, Path, object], dict]  # returns sections for metrics.json


# --- the stages, in order -------------------------------------------------------------------------------------


def run_teacher(config: PipelineConfig, run_dir: Path, progress) -> dict:
    from kd_edge.config import TeacherConfig
    from kd_edge.training.distill import train_teacher

    distill = config.distill
    settings = TeacherConfig(
        data=distill.data, teacher=distill.teacher, run=replace(distill.run, out=str(run_dir), force=True)
    )
    return {"teacher": train_teacher(settings, progress=progress)["teacher"]}


def run_student(config: PipelineConfig, run_dir: Path, progress) -> dict:
    from kd_edge.training.distill import distill

    settings = replace(
        config.distill,
        teacher_paths=(str(run_dir / "teacher.pt"),),
        run=replace(config.distill.run, out=str(run_dir), force=True),
    )
    metrics = distill(settings, progress=progress)
    return {name: metrics[name] for name in ("data", "soft_labels", "student") if name in metrics}


def run_export(config: PipelineConfig, run_dir: Path, progress) -> dict:
    from kd_edge.deploy.export import ExportConfig, export_onnx

    result = export_onnx(
        ExportConfig(
            source=str(run_dir / "student.pt"),
            out_dir=str(run_dir),
            exporter=config.exporter,
            opset=config.opset,
            name="student",
            force=True,
        )
    )
    return {"export": {"path": str(result.path), "bytes": result.path.stat().st_size, "parity": asdict(result.parity)}}


def run_quantize(config: PipelineConfig, run_dir: Path, progress) -> dict:
    from kd_edge.deploy.quantize import QuantizeConfig, quantize

    options = {
        QUANTIZE_KEYS[key]: tuple(value) if key == "exclude" else value for key, value in config.quantize.items()
    }
    (run_dir / "student.int8.onnx").unlink(missing_ok=True)  # a refusal must not leave an older INT8 model behind
    try:
        result = quantize(
            QuantizeConfig(
                model=str(run_dir / "student.onnx"),
                out=str(run_dir / "student.int8.onnx"),
                data_dir=config.distill.data.data_dir,
                compare_latency=False,
                force=True,
                **options,
            )
        )
        summary = result.to_dict()
    except QuantizationError as exc:
        summary = {"refused": str(exc)}
    atomic_write_json(run_dir / "quantize.json", summary)
    return {"quantize": summary}


def run_bundle(config: PipelineConfig, run_dir: Path, progress) -> dict:
    quantized = json.loads((run_dir / "quantize.json").read_text())
    int8 = run_dir / "student.int8.onnx"
    settings = BundleConfig(
        out=str(run_dir / "bundle"),
        samples=config.bundle_samples,
        threads=config.bundle_threads,
        compare_latency=config.bundle_compare_latency,
        data_dir=config.distill.data.data_dir,
        force=True,
    )
    result = write_bundle(
        settings,
        fp32=run_dir / "student.onnx",
        int8=int8 if int8.is_file() else None,
        int8_refused=quantized.get("refused"),
    )
    return {
        "bundle": {
            "folder": str(result.folder),
            "archive": str(result.archive),
            "form": result.form,
            "reason": result.reason,
            "latency_ms": result.latency_ms,
        }
    }


def run_bench(config: PipelineConfig, run_dir: Path, progress) -> dict:
    from kd_edge.runtime.bundle_files import open_bundle
    from kd_edge.runtime.bench.harness import BenchConfig, run_benchmark

    bundle = open_bundle(run_dir / "bundle")
    bench = config.bench
    settings = BenchConfig(
        models=tuple(str(path) for path in bundle.forms().values()),
        threads=tuple(bench["threads"]),
        batch_sizes=tuple(bench["batch_size"]),
        runs=bench["runs"],
        rounds=bench["rounds"],
        warmup=bench["warmup"],
        profile=bench["profile"],
        data=str(bundle.samples_path),
    )
    report = run_benchmark(settings)
    atomic_write_json(run_dir / "bench.json", report.to_dict())
    rows = [
        {
            "model": Path(r.model).name,
            "threads": r.threads,
            "batch_size": r.batch_size,
            "p50_ms": r.latency_ms.p50,
            "accuracy": r.accuracy,
            "projected_p50_ms": r.projected_p50_ms,
        }
        for r in report.results
    ]
    return {"bench": {"profile": bench["profile"], "results": rows}}


def run_report(config: PipelineConfig, run_dir: Path, progress) -> dict:
    from kd_edge.pipeline.report import write_report

    paths = write_report(run_dir)
    return {"report": {name: str(path) for name, path in paths.items()}}


def training_settings(part: str):
    def settings(config: PipelineConfig) -> dict:
        distill = config.distill
        run = {"seed": distill.run.seed, "device": distill.run.device, "precision": distill.run.precision}
        chosen = {"teacher": distill.teacher} if part == "teacher" else {"student": distill.student, "kd": distill.kd}
        return {"data": asdict(distill.data), "run": run, **{name: asdict(value) for name, value in chosen.items()}}

    return settings


STAGES = (
    Stage("teacher", (), ("teacher.pt",), training_settings("teacher"), run_teacher),
    Stage("student", ("teacher",), ("student.pt",), training_settings("student"), run_student),
    Stage("export", ("student",), ("student.onnx",), lambda c: {"exporter": c.exporter, "opset": c.opset}, run_export),
    Stage("quantize", ("export",), ("quantize.json", "student.int8.onnx"), lambda c: c.quantize, run_quantize),
    Stage("bundle", ("export", "quantize"), ("bundle", "bundle.tar.gz"), lambda c: c.tables()["bundle"], run_bundle),
    Stage("bench", ("bundle",), ("bench.json",), lambda c: c.bench, run_bench),
    Stage(
        "report",
        ("teacher", "student", "export", "quantize", "bundle", "bench"),
        ("report.md", "report.html"),
        lambda c: {},
        run_report,
    ),
)


# --- the runner ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PipelineResult:
    run_dir: Path
    ran: list[str]
    skipped: list[str]
    metrics: dict


def run_pipeline(config: PipelineConfig, display=None, progress_factory=None) -> PipelineResult:
    """Run every stage whose fingerprint changed (or whose outputs changed since), in order.

    ``display`` is a started rich Progress for the overall bar; ``progress_factory()`` gives
    the training stages their per-step progress (both optional).
    """
    main = is_main()  # under torchrun every rank trains; rank 0 alone writes and runs the later stages
    run_dir = ensure_writable_dir(config.out) if main else Path(config.out)
    barrier()  # rank 0 has made the folder
    state = read_state(run_dir, config.force)
    barrier()  # every rank has read the record before rank 0 writes into the folder
    if main:
        write_toml(run_dir / CONFIG_FILE, config.tables())
    started = time.perf_counter()
    ran, skipped = [], []
    task = display.add_task("pipeline", total=len(STAGES)) if display is not None else None
    say = display.console.print if display is not None and main else (lambda *args, **kwargs: None)
    for number, stage in enumerate(STAGES, start=1):
        if not main and stage.name not in TRAINING_STAGES:
            break
        if display is not None:
            display.update(task, description=f"stage {number}/{len(STAGES)}: {stage.name}")
        fingerprint = stage_fingerprint(stage, config, state)
        done = is_done(run_dir, state.get(stage.name), fingerprint)
        if from_main(done) if stage.name in TRAINING_STAGES else done:  # all ranks decide as rank 0 does
            skipped.append(stage.name)
            say(f"[{number}/{len(STAGES)}] {stage.name}: unchanged, kept")
        else:
            stage_started = time.perf_counter()
            sections = stage.run(config, run_dir, progress_factory() if progress_factory else None)
            seconds = time.perf_counter() - stage_started
            ran.append(stage.name)
            if main:
                state[stage.name] = {
                    "fingerprint": fingerprint,
                    "outputs": output_hashes(run_dir, stage.outputs),
                    "seconds": round(seconds, 3),
                    "sections": sections,
                }
                write_state(run_dir, state)
            say(f"[{number}/{len(STAGES)}] {stage.name}: done in {seconds:.1f} s")
        if main:
            merge_metrics(run_dir, state, time.perf_counter() - started)
        if display is not None:
            display.advance(task)
    # The ranks leave the process group together: a rank that tore gloo down while rank 0 was
    # still exporting and quantizing aborted ("terminate called without an active exception").
    barrier()
    if not main:
        return PipelineResult(run_dir=run_dir, ran=ran, skipped=skipped, metrics={})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return PipelineResult(run_dir=run_dir, ran=ran, skipped=skipped, metrics=metrics)


def read_state(run_dir: Path, force: bool) -> dict:
    path = run_dir / STATE_FILE
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # an unreadable record only costs a rerun
    others = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")]
    if others and not force:
        raise OutputError(
            f"{str(run_dir)!r} holds {', '.join(sorted(others)[:5])} but no {STATE_FILE}: it is not a pipeline run "
            "folder. "
            "Choose another --out, or pass --force to run the pipeline there."
        )
    return {}


def write_state(run_dir: Path, state: dict) -> None:
    atomic_write_json(run_dir / STATE_FILE, state)


def stage_fingerprint(stage: Stage, config: PipelineConfig, state: dict) -> str:
    inputs = {name: state.get(name, {}).get("outputs") for name in stage.needs}
    text = json.dumps(
        {"stage": stage.name, "kd_edge": __version__, "settings": stage.settings(config), "inputs": inputs},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def is_done(run_dir: Path, record: dict | None, fingerprint: str) -> bool:
    return (
        bool(record)
        and record["fingerprint"] == fingerprint
        and output_hashes(run_dir, tuple(record["outputs"])) == record["outputs"]
    )


def output_hashes(run_dir: Path, names: tuple[str, ...]) -> dict[str, str]:
    """SHA-256 of each output that exists (a folder: of its files' names and digests)."""
    from kd_edge.runtime.bundle_files import file_sha256

    hashes = {}
    for name in names:
        path = run_dir / name
        if path.is_file():
            hashes[name] = file_sha256(path)
        elif path.is_dir():
            listing = "".join(
                f"{p.relative_to(path)} {file_sha256(p)}\n" for p in sorted(path.rglob("*")) if p.is_file()
            )
            hashes[name] = hashlib.sha256(listing.encode()).hexdigest()
    return hashes


def merge_metrics(run_dir: Path, state: dict, total_seconds: float) -> None:
    """metrics.json: every finished stage's sections, in pipeline order, and the wall time of each."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    for stage in STAGES:
        metrics.update(state.get(stage.name, {}).get("sections", {}))
    metrics["wall_time_s"] = {stage.name: state[stage.name]["seconds"] for stage in STAGES if stage.name in state}
    metrics["wall_time_s"]["total"] = round(sum(metrics["wall_time_s"].values()), 3)
    metrics["wall_time_s"]["this_invocation"] = round(total_seconds, 3)
    atomic_write_json(path, metrics)


# --- from a run folder, a checkpoint or an ONNX model to a bundle (`kd-edge bundle`) --------------------------


@dataclass(frozen=True, kw_only=True)
class DeployConfig:
    """From a run folder, a checkpoint or an ONNX model to a bundle: export, quantize, bundle."""

    source: str
    bundle: BundleConfig
    int8: bool = True
    quantize_options: dict = field(default_factory=dict)  # QuantizeConfig fields other than model, out, force


def deploy(config: DeployConfig) -> BundleResult:
    """Export (unless the source is ONNX already), quantize (unless told not to, or it is INT8 already), bundle."""
    from kd_edge.runtime.session import read_card

    source = Path(config.source)
    check_outputs(config.bundle)  # before the export and the quantization, not after them
    with tempfile.TemporaryDirectory(prefix="kd-edge-deploy-") as scratch:
        if source.suffix == ".onnx":
            if read_card(source).quantization is not None:
                return write_bundle(config.bundle, fp32=None, int8=source, int8_refused=None)
            fp32 = source
        else:
            fp32 = export_for_deployment(source, Path(scratch), config.bundle.data_dir)
        int8, refused = (
            quantize_for_deployment(fp32, Path(scratch), config) if config.int8 else (None, "--no-int8 was given")
        )
        return write_bundle(config.bundle, fp32=fp32, int8=int8, int8_refused=refused)


def export_for_deployment(source: Path, folder: Path, data_dir: str | None) -> Path:
    from kd_edge.deploy.export import ExportConfig, export_onnx

    return export_onnx(ExportConfig(source=str(source), out_dir=str(folder), data_dir=data_dir)).path


def quantize_for_deployment(fp32: Path, folder: Path, config: DeployConfig) -> tuple[Path | None, str | None]:
    """(the INT8 model, None), or (None, why there is none) when no INT8 model meets the accuracy budget."""
    from kd_edge.deploy.quantize import QuantizeConfig, quantize

    options = {"data_dir": config.bundle.data_dir, "compare_latency": False, **config.quantize_options}
    try:
        result = quantize(
            QuantizeConfig(model=str(fp32), out=str(folder / f"{fp32.stem}.int8.onnx"), force=True, **options)
        )
    except QuantizationError as exc:
        return None, f"no INT8 model met the accuracy budget: {exc}"
    return result.path, None

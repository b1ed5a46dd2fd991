"""The pipeline's stages, in order: what each reads, writes, and depends on.

    teacher -> student -> export -> quantize -> bundle -> bench -> report
    detect (a yolo: dataset: teacher and student detectors) -> export -> ... -> report

Each stage runs one stage function of the packages below (``kd_edge.training``,
``kd_edge.deploy``, ``kd_edge.runtime.bench``) in the run folder and returns the sections
it adds to ``metrics.json``. Its ``settings`` are what its fingerprint covers: changing
one reruns the stage and every stage after it that reads its outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from kd_edge.errors import QuantizationError
from kd_edge.io import atomic_write_json
from kd_edge.settings.pipeline import PipelineSettings
from kd_edge.settings.training import TeacherSettings


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # the stages whose outputs this one reads
    outputs: tuple[str, ...]  # files or folders in RUN_DIR (an output may be absent, as a refused INT8 model)
    settings: Callable[[PipelineSettings], dict]
    run: Callable[[PipelineSettings, Path, object], dict]  # returns sections for metrics.json


def teacher_settings(settings: PipelineSettings) -> TeacherSettings:
    distill = settings.distill
    return TeacherSettings(data=distill.data, run=distill.run, teacher=distill.teacher, optim=distill.optim)


def run_teacher(settings: PipelineSettings, run_dir: Path, progress) -> dict:
    from kd_edge.training.distill import train_teacher

    metrics = train_teacher(teacher_settings(settings), run_dir, force=True, progress=progress, then=settings.distill)
    return {"teacher": metrics["teacher"]}


def run_student(settings: PipelineSettings, run_dir: Path, progress) -> dict:
    from kd_edge.training.distill import distill

    teachers = (str(run_dir / "teacher.pt"),)
    metrics = distill(settings.distill, run_dir, teachers=teachers, force=True, progress=progress)
    return {name: metrics[name] for name in ("data", "soft_labels", "student") if name in metrics}


def run_detect(settings: PipelineSettings, run_dir: Path, progress) -> dict:
    from kd_edge.training.detect_run import train_detectors

    metrics = train_detectors(settings.detection(), run_dir, force=True)
    return {name: metrics[name] for name in ("data", "teacher", "student") if name in metrics}


def run_export(settings: PipelineSettings, run_dir: Path, progress) -> dict:
    from kd_edge.deploy.export import export_onnx

    result = export_onnx(run_dir / "student.pt", run_dir, settings.export, name="student", force=True)
    return {"export": {"path": str(result.path), "bytes": result.path.stat().st_size, "parity": asdict(result.parity)}}


def run_quantize(settings: PipelineSettings, run_dir: Path, progress) -> dict:
    from kd_edge.deploy.quantize import quantize

    out = run_dir / "student.int8.onnx"
    out.unlink(missing_ok=True)  # a refusal must not leave an older INT8 model behind
    quantizer = replace(settings.quantize, compare_latency=False)  # the bundle stage times both forms
    try:
        result = quantize(run_dir / "student.onnx", quantizer, out=out, data_dir=data_dir(settings), force=True)
        summary = result.to_dict()
    except QuantizationError as exc:
        summary = {"refused": str(exc)}
    atomic_write_json(run_dir / "quantize.json", summary)
    return {"quantize": summary}


def run_bundle(settings: PipelineSettings, run_dir: Path, progress) -> dict:
    from kd_edge.deploy.bundle import write_bundle

    quantized = json.loads((run_dir / "quantize.json").read_text())
    int8 = run_dir / "student.int8.onnx"
    result = write_bundle(
        run_dir / "bundle",
        settings.bundle,
        fp32=run_dir / "student.onnx",
        int8=int8 if int8.is_file() else None,
        int8_refused=quantized.get("refused"),
        data_dir=data_dir(settings),
        force=True,
    )
    return {
        "bundle": {
            "folder": str(result.folder),
            "archive": str(result.archive),
            "form": result.form,
            "reason": result.reason,
            "decision": result.decision.to_dict(),
            **({"timings": str(result.timings)} if result.timings else {}),
        }
    }


def run_bench(settings: PipelineSettings, run_dir: Path, progress) -> dict:
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark
    from kd_edge.runtime.bundle_files import open_bundle

    bundle = open_bundle(run_dir / "bundle")
    models = tuple(str(path) for path in bundle.forms().values())
    # Under the board the bundle was made for, unless --profile says otherwise (the forms are timed as files,
    # which do not carry the bundle's profile as `kd-edge bench BUNDLE` reads it).
    bench = settings.bench if settings.bench.profile else replace(settings.bench, profile=settings.bundle.profile)
    report = run_benchmark(BenchJob(models=models, settings=bench, data=str(bundle.samples_path)))
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
    return {"bench": {"profile": report.environment["profile"]["name"], "results": rows}}


def run_report(settings: PipelineSettings, run_dir: Path, progress) -> dict:
    from kd_edge.pipeline.report import write_report

    paths = write_report(run_dir)
    return {"report": {name: str(path) for name, path in paths.items()}}


def data_dir(settings: PipelineSettings) -> str | None:
    return settings.distill.data.data_dir


def teacher_fingerprint(settings: PipelineSettings) -> dict:
    return what_training_computes(asdict(teacher_settings(settings)))


def student_fingerprint(settings: PipelineSettings) -> dict:
    # The teacher's settings reach the student through teacher.pt, whose digest is an input of this stage.
    return what_training_computes({k: v for k, v in asdict(settings.distill).items() if k != "teacher"})


def what_training_computes(settings: dict) -> dict:
    """Training settings without the thread count, which changes how fast a run goes, not what it computes."""
    return {**settings, "run": {k: v for k, v in settings["run"].items() if k != "threads"}}


def detect_fingerprint(settings: PipelineSettings) -> dict:
    return what_training_computes(asdict(settings.detection()))


def deployment(trained: str) -> tuple[Stage, ...]:
    """The stages from the trained student (the output of stage ``trained``) to the report."""
    stages = (
        Stage("export", (trained,), ("student.onnx",), lambda s: asdict(s.export), run_export),
        Stage("quantize", ("export",), ("quantize.json", "student.int8.onnx"), lambda s: asdict(s.quantize),
              run_quantize),
        Stage("bundle", ("export", "quantize"), ("bundle", "bundle.tar.gz"), lambda s: asdict(s.bundle), run_bundle),
        Stage("bench", ("bundle",), ("bench.json",), lambda s: asdict(s.bench), run_bench),
    )  # fmt: skip
    report_needs = (*(() if trained == "detect" else ("teacher",)), trained, *(stage.name for stage in stages))
    return (*stages, Stage("report", report_needs, ("report.md", "report.html"), lambda s: {}, run_report))


STAGES = (
    Stage("teacher", (), ("teacher.pt",), teacher_fingerprint, run_teacher),
    Stage("student", ("teacher",), ("student.pt",), student_fingerprint, run_student),
    *deployment("student"),
)
DETECTION_STAGES = (
    Stage("detect", (), ("teacher.pt", "student.pt", "split.json"), detect_fingerprint, run_detect),
    *deployment("detect"),
)
TRAINING_STAGES = ("teacher", "student")  # the stages every torchrun rank takes part in (detectors train on one)


def stages_of(settings: PipelineSettings) -> tuple[Stage, ...]:
    return DETECTION_STAGES if settings.detects else STAGES

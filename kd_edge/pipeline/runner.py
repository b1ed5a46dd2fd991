"""Running the pipeline in one run folder: each stage once, resumed where it stopped, rerun where it changed.

    run_pipeline(PipelineSettings(), "runs/demo")

Each stage records, in RUN_DIR/pipeline.json, a fingerprint of its settings and of its
inputs (the SHA-256 of the files the stages it needs wrote) and the SHA-256 of its own
outputs. A stage whose fingerprint is unchanged and whose outputs are still as it wrote
them is skipped: an interrupted pipeline resumes where it stopped, and a changed setting
reruns exactly the stages that depend on it. The stages are ``kd_edge.pipeline.stages``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from kd_edge import __version__
from kd_edge.errors import OutputError
from kd_edge.interrupt import stop_if_requested
from kd_edge.io import atomic_write_json, ensure_writable_dir
from kd_edge.pipeline.stages import TRAINING_STAGES, Stage, stages_of
from kd_edge.settings.commands import PIPELINE_TABLES
from kd_edge.settings.files import toml_tables, write_toml
from kd_edge.settings.pipeline import PipelineSettings
from kd_edge.training.distributed import barrier, from_main, is_main

STATE_FILE = "pipeline.json"
CONFIG_FILE = "kd-edge.toml"
VERSIONED = ("kd-edge", "torch", "torchvision", "onnx", "onnxruntime", "numpy")  # recorded per stage, as run
CONFIG_HEADER = "kd-edge's resolved configuration: `kd-edge pipeline --config THIS --out NEW` repeats the run."


@dataclass(frozen=True, kw_only=True)
class PipelineResult:
    run_dir: Path
    ran: list[str]
    skipped: list[str]
    metrics: dict


def run_pipeline(
    settings: PipelineSettings, out, *, force: bool = False, display=None, progress_factory=None
) -> PipelineResult:
    """Run every stage whose fingerprint changed (or whose outputs changed since), in order, in ``out``.

    ``force`` runs in a folder that holds something else than a pipeline run. ``display`` is a
    started rich Progress for the overall bar; ``progress_factory()`` gives the training stages
    their per-step progress (both optional).
    """
    main = is_main()  # under torchrun every rank trains; rank 0 alone writes and runs the later stages
    run_dir = ensure_writable_dir(out) if main else Path(out)
    barrier()  # rank 0 has made the folder
    state = read_state(run_dir, force)
    barrier()  # every rank has read the record before rank 0 writes into the folder
    if main:
        tables = {name: options for name, options in PIPELINE_TABLES.items() if name != "detect" or settings.detects}
        write_toml(run_dir / CONFIG_FILE, toml_tables(settings, tables), CONFIG_HEADER)
    started = time.perf_counter()
    ran, skipped = [], []
    stages = stages_of(settings)
    task = display.add_task("pipeline", total=len(stages)) if display is not None else None
    say = display.console.print if display is not None and main else (lambda *args, **kwargs: None)
    for number, stage in enumerate(stages, start=1):
        if not main and stage.name not in TRAINING_STAGES:
            break
        if stage.name not in TRAINING_STAGES:  # training stops itself, at a step all ranks agree on
            stop_if_requested(f"stage {number}/{len(stages)}, {stage.name}")
        if display is not None:
            display.update(task, description=f"stage {number}/{len(stages)}: {stage.name}")
        fingerprint = stage_fingerprint(stage, settings, state)
        done = is_done(run_dir, state.get(stage.name), fingerprint)
        if from_main(done) if stage.name in TRAINING_STAGES else done:  # all ranks decide as rank 0 does
            skipped.append(stage.name)
            say(f"[{number}/{len(stages)}] {stage.name}: unchanged, kept")
        else:
            stage_started = time.perf_counter()
            sections = stage.run(settings, run_dir, progress_factory() if progress_factory else None)
            seconds = time.perf_counter() - stage_started
            ran.append(stage.name)
            if main:
                state[stage.name] = {
                    "fingerprint": fingerprint,
                    "outputs": output_hashes(run_dir, stage.outputs),
                    "seconds": round(seconds, 3),
                    "sections": sections,
                    "versions": installed_versions(),
                }
                write_state(run_dir, state)
            say(f"[{number}/{len(stages)}] {stage.name}: done in {seconds:.1f} s")
        if main:
            merge_metrics(run_dir, state, stages, time.perf_counter() - started)
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
    # The pipeline's kd-edge.toml: a first attempt that stopped before its first stage finished (bad data, a typo,
    # a teacher that diverged), whatever that stage had written by then; the stage runs again from its start.
    others = [p.name for p in run_dir.iterdir() if not p.name.startswith(".") and p.name != CONFIG_FILE]
    if others and not force and not written_by_pipeline(run_dir / CONFIG_FILE):
        raise OutputError(
            f"{str(run_dir)!r} holds {', '.join(sorted(others)[:5])} but no {STATE_FILE}: it is not a pipeline run "
            "folder. "
            "Choose another --out, or pass --force to run the pipeline there."
        )
    return {}


def written_by_pipeline(config: Path) -> bool:
    try:
        return config.read_text().startswith(f"# {CONFIG_HEADER}\n")
    except (OSError, UnicodeDecodeError):
        return False


def write_state(run_dir: Path, state: dict) -> None:
    atomic_write_json(run_dir / STATE_FILE, state)


def stage_fingerprint(stage: Stage, settings: PipelineSettings, state: dict) -> str:
    inputs = {name: state.get(name, {}).get("outputs") for name in stage.needs}
    text = json.dumps(
        {"stage": stage.name, "kd_edge": __version__, "settings": stage.settings(settings), "inputs": inputs},
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


def installed_versions() -> dict[str, str]:
    """What a stage ran with, read from the installed packages' metadata (nothing is imported)."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def merge_metrics(run_dir: Path, state: dict, stages: tuple[Stage, ...], total_seconds: float) -> None:
    """metrics.json: every finished stage's sections, in pipeline order, and the wall time of each."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    for stage in stages:
        metrics.update(state.get(stage.name, {}).get("sections", {}))
    metrics["wall_time_s"] = {stage.name: state[stage.name]["seconds"] for stage in stages if stage.name in state}
    metrics["versions"] = {stage.name: state[stage.name].get("versions", {}) for stage in stages if stage.name in state}
    metrics["wall_time_s"]["total"] = round(sum(metrics["wall_time_s"].values()), 3)
    metrics["wall_time_s"]["this_invocation"] = round(total_seconds, 3)
    atomic_write_json(path, metrics)

"""kd-edge pipeline: end to end, resumable, reruns what a change affects, config files, and the report."""

import base64
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser

import onnxruntime
import pytest
from typer.testing import CliRunner

from kd_edge.cli import app

# Slow (every stage, real training); one xdist worker runs the module, its pipeline runs once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]

FAST = """
[distill]
teacher-model = "cnn-tiny"
student-model = "cnn-tiny"
epochs = 1
batch-size = 32

[quantize]
optimize-latency = false
calibration-size = 50

[bundle]
samples = 15
form = "int8"

[bench]
threads = [1]
runs = 20
rounds = 1
warmup = 2
"""


def pipeline(*args, ok=True):
    result = CliRunner().invoke(app, ["pipeline", *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def fast_config(tmp_path, extra: str = ""):
    path = tmp_path / "fast.toml"
    path.write_text(FAST + extra)
    return path


@pytest.fixture(scope="module")
def easy_run(tmp_path_factory, easy_npz):
    """A finished pipeline on the easy dataset (shared: copy it before changing it)."""
    folder = tmp_path_factory.mktemp("pipeline")
    config = fast_config(folder)
    pipeline("--dataset", f"npz:{easy_npz}", "--config", config, "--out", folder / "run")
    return folder / "run"


def test_end_to_end_on_the_built_in_dataset(tmp_path):
    out = tmp_path / "run"
    result = pipeline("--config", fast_config(tmp_path), "--out", out)
    for name in (
        "teacher.pt",
        "student.pt",
        "student.onnx",
        "student.int8.onnx",
        "bundle.tar.gz",
        "bench.json",
        "report.md",
        "report.html",
        "kd-edge.toml",
    ):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"teacher", "student", "export", "quantize", "bundle", "bench", "report"} <= metrics.keys()
    assert 0 < metrics["teacher"]["test_accuracy"] <= 1 and 0 < metrics["student"]["test_accuracy"] <= 1
    assert set(metrics["wall_time_s"]) >= {
        "teacher",
        "student",
        "export",
        "quantize",
        "bundle",
        "bench",
        "report",
        "total",
    }
    assert "report.html" in result.output and "mnist-5k" in (out / "kd-edge.toml").read_text()
    # Benchmarked under the board the bundle was made for, with its projection, as the docs say.
    assert metrics["bench"]["profile"] == "rpi4" and all(r["projected_p50_ms"] for r in metrics["bench"]["results"])
    # The bundle runs with the base install alone: torch made unimportable.
    code = (
        "import sys; sys.modules['torch'] = None\nfrom kd_edge.cli import app\n"
        f"app(['bench', {str(out / 'bundle')!r}, '--runs', '5', '--rounds', '1'])"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def mtimes(folder, names):
    return {name: (folder / name).stat().st_mtime_ns for name in names}


def test_an_interrupted_pipeline_resumes_without_redoing_finished_stages(tmp_path, easy_npz, monkeypatch):
    from kd_edge.deploy import quantize as quantizer

    out, config = tmp_path / "run", fast_config(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantizer, "quantize", interrupted)
    result = pipeline("--dataset", f"npz:{easy_npz}", "--config", config, "--out", out, ok=False)
    assert result.exit_code == 130 and (out / "student.onnx").is_file() and not (out / "bundle").exists()
    before = mtimes(out, ["teacher.pt", "student.pt", "student.onnx"])
    monkeypatch.undo()
    result = pipeline("--dataset", f"npz:{easy_npz}", "--config", config, "--out", out)
    assert mtimes(out, before) == before  # the finished stages were not run again
    assert "[1/7] teacher: unchanged, kept" in result.output and "[4/7] quantize: done" in result.output
    assert (out / "report.html").is_file()


def signal_during(monkeypatch, module, name: str, signum=signal.SIGTERM):
    """SIGTERM this process while ``module.name`` runs, as `kill` from another shell would."""
    original = getattr(module, name)

    def with_signal(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, with_signal)


@pytest.mark.parametrize(
    "module, function, stopped_before",
    [
        ("kd_edge.deploy.export", "export_onnx", "stage 4/7, quantize"),
        ("kd_edge.deploy.quantize", "preprocess_model", "quantizing student.int8.onnx"),
        ("kd_edge.runtime.bench.harness", "measure_in_child", "the end of bench round 1/1"),
    ],
)
def test_a_sigterm_in_a_stage_that_does_not_train_stops_it_cleanly_and_a_rerun_finishes(
    tmp_path, easy_run, easy_npz, monkeypatch, module, function, stopped_before
):
    out = tmp_path / "run"
    shutil.copytree(easy_run, out)
    record = json.loads((out / "pipeline.json").read_text())
    for stage in ("export", "quantize", "bundle", "bench", "report"):
        record.pop(stage)  # as if training had just finished
    (out / "pipeline.json").write_text(json.dumps(record))
    args = ["--dataset", f"npz:{easy_npz}", "--config", fast_config(tmp_path), "--out", out]
    signal_during(monkeypatch, importlib.import_module(module), function)
    stopped = pipeline(*args, ok=False)
    assert stopped.exit_code == 143, stopped.output
    assert f"stopped by SIGTERM before {stopped_before}" in stopped.output
    assert "To continue, run the same command again" in stopped.output and "Traceback" not in stopped.output
    monkeypatch.undo()
    resumed = pipeline(*args)
    assert "[2/7] student: unchanged, kept" in resumed.output and "[7/7] report: done" in resumed.output
    finished = json.loads((out / "metrics.json").read_text())
    earlier = json.loads((easy_run / "metrics.json").read_text())
    assert finished["quantize"]["int8_test_accuracy"] == earlier["quantize"]["int8_test_accuracy"]  # the same result


def test_a_changed_setting_reruns_exactly_the_stages_that_depend_on_it(tmp_path, easy_run, easy_npz):
    out = shutil.copytree(easy_run, tmp_path / "run")
    kept = mtimes(out, ["teacher.pt", "student.pt", "student.onnx"])
    config = fast_config(tmp_path, "")
    config.write_text(FAST.replace("calibration-size = 50", 'calibration-size = 50\nmethod = "percentile"'))
    result = pipeline("--dataset", f"npz:{easy_npz}", "--config", config, "--out", out)
    ran = [line.split(":")[0][6:] for line in result.output.splitlines() if line.startswith("[") and ": done" in line]
    assert ran == ["quantize", "bundle", "bench", "report"]
    assert mtimes(out, kept) == kept
    assert json.loads((out / "quantize.json").read_text())["calibration"]["method"] == "percentile"


def test_config_precedence_preset_then_file_then_flag(tmp_path, easy_run, easy_npz):
    out = shutil.copytree(easy_run, tmp_path / "run")
    config = tmp_path / "precedence.toml"
    config.write_text(FAST.replace("epochs = 1\n", "epochs = 1\nlr = 0.01\n"))
    pipeline("--dataset", f"npz:{easy_npz}", "--config", config, "--epochs", "2", "--out", out)
    resolved = (out / "kd-edge.toml").read_text()
    assert "epochs = 2" in resolved  # the flag wins over the file
    assert "lr = 0.01" in resolved  # the file wins over the preset
    assert 'optimizer = "adamw"' in resolved and 'temperature = "2|4"' in resolved  # the preset fills the rest


@pytest.mark.parametrize(
    "text, message",
    [
        ('[quantize]\nmehtod = "entropy"\n', "unknown key 'mehtod' in [quantize]; did you mean 'method'?"),
        ("[distil]\nepochs = 1\n", "unknown table [distil]; did you mean 'distill'?"),
        ('[distill]\nepochs = "two"\n', "config key 'epochs' must be int"),
        ("[bench\n", "is not valid TOML"),
        ("[export]\nopset = 17\n", "or --exporter torchscript for opset 17"),
        ('[export]\nexporter = "jit"\n', "--exporter must be one of dynamo, torchscript"),
    ],
)
def test_bad_config_files_are_refused_before_any_work(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = pipeline("--config", config, "--out", tmp_path / "run", ok=False)
    assert result.exit_code == 1 and message in result.output and not (tmp_path / "run").exists()


def test_the_resolved_config_repeats_the_run(tmp_path, easy_run):
    result = pipeline("--config", easy_run / "kd-edge.toml", "--out", tmp_path / "again")
    assert result.exit_code == 0
    assert (tmp_path / "again" / "kd-edge.toml").read_text() == (easy_run / "kd-edge.toml").read_text()
    first, second = (json.loads((folder / "metrics.json").read_text()) for folder in (easy_run, tmp_path / "again"))
    assert first["teacher"]["history"] == second["teacher"]["history"]  # the same training, step for step
    assert first["student"]["test_accuracy"] == second["student"]["test_accuracy"]


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_report_holds_the_measured_figures_and_embeds_every_image(easy_run):
    metrics = json.loads((easy_run / "metrics.json").read_text())
    bench = json.loads((easy_run / "bench.json").read_text())
    markdown, page = (easy_run / "report.md").read_text(), (easy_run / "report.html").read_text()
    student = f"{100 * metrics['student']['test_accuracy']:.2f} %"
    deployable = next(r for r in bench["results"] if r["model"].endswith("model.onnx") and r["threads"] == 1)
    latency = f"{deployable['latency_ms']['p50'] * 1e3:.1f} us (1 thr)"
    for text in (markdown, page):
        assert student in text and latency in text and metrics["data"]["sha256"] in text
        assert metrics["bundle"]["reason"].split(" (")[0] in text
    parser = Images()
    parser.feed(page)
    if importlib.util.find_spec("matplotlib") is None:  # installed without the plot extra: the tables, and why
        assert "matplotlib is not installed" in markdown and parser.sources == []
        return
    perfect = "Test accuracy 100.00%" in markdown
    assert perfect == ("No test image is misclassified" in markdown)
    # training curves, accuracy-latency, confusion matrix, and the mistakes where there are some
    assert len(parser.sources) == (3 if perfect else 4)
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http" not in page.split("<body>")[1].replace("https://", "").replace("http://", "")  # nothing to fetch


def test_report_command_rebuilds_the_report(tmp_path, easy_run):
    out = shutil.copytree(easy_run, tmp_path / "run")
    (out / "report.md").unlink()
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0 and (out / "report.md").is_file()
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "no metrics.json" in result.output


def test_report_states_the_versions_the_run_used_and_what_the_quantizer_did(tmp_path, easy_run):
    """Rebuilt later, by another install, the report still names the run's own versions."""
    out = shutil.copytree(easy_run, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["versions"]["quantize"]["onnxruntime"] == onnxruntime.__version__  # recorded as run
    metrics["versions"]["bench"]["onnxruntime"] = "1.16.3"  # as if the bench stage had run elsewhere
    (out / "metrics.json").write_text(json.dumps(metrics))
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "1.16.3 (bench)" in text and f"{onnxruntime.__version__} (" in text
    assert "No latency search ran" in text and "confirmed 10 %" not in text  # the fast config turns it off


def test_report_without_matplotlib_still_writes_the_tables(tmp_path, easy_run, monkeypatch):
    from kd_edge.pipeline import report

    out = shutil.copytree(easy_run, tmp_path / "run")
    monkeypatch.setattr(report, "pyplot", lambda: None)
    report.write_report(out)
    markdown = (out / "report.md").read_text()
    assert "matplotlib is not installed" in markdown and "| teacher (PyTorch) |" in markdown and "![" not in markdown


def test_a_long_training_is_listed_in_about_twenty_rows_with_the_kept_epoch(tmp_path, easy_run, monkeypatch):
    """A small folder's default is 200 epochs a network: the report lists about 20 of them, always the kept one."""
    from kd_edge.pipeline import report

    out = shutil.copytree(easy_run, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["teacher"]["history"] = [
        {"epoch": e, "loss": 1 / e, "train_accuracy": 0.5, "val_accuracy": 0.5 + (e == 33) / 4} for e in range(1, 201)
    ]
    metrics["teacher"]["best_epoch"] = 33
    (out / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setattr(report, "pyplot", lambda: None)
    report.write_report(out)
    text = (out / "report.md").read_text()
    listed = re.findall(r"^\| teacher \| (\d+)( \(kept\))? \|", text, re.MULTILINE)
    epochs = [int(epoch) for epoch, _ in listed]
    assert 18 <= len(epochs) <= 22 and epochs[0] == 1 and epochs[-1] == 200 and epochs == sorted(epochs)
    assert [int(epoch) for epoch, kept in listed if kept] == [33]
    student_rows = re.findall(r"^\| student \| \d+( \(kept\))? \|", text, re.MULTILINE)
    assert len(student_rows) == len(metrics["student"]["history"])  # a short history, listed whole


def test_a_folder_of_something_else_is_not_taken_over(tmp_path, easy_npz):
    (tmp_path / "notes.txt").write_text("mine")
    result = pipeline("--dataset", f"npz:{easy_npz}", "--out", tmp_path, ok=False)
    assert (
        result.exit_code == 1
        and "not a pipeline run folder" in result.output
        and (tmp_path / "notes.txt").read_text() == "mine"
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda d: replace(d, init="teacher-weights.pt"),
        lambda d: replace(d, run=replace(d.run, deterministic=not d.run.deterministic)),
    ],
    ids=["init", "deterministic"],
)
def test_the_student_stage_reruns_when_its_start_or_its_kernels_change(change):
    """Both change the student computed: a new start, or other (deterministic) kernels."""
    from kd_edge.pipeline.stages import student_fingerprint
    from kd_edge.settings import PipelineSettings

    base = PipelineSettings()
    changed = replace(base, distill=change(base.distill))
    assert student_fingerprint(changed) != student_fingerprint(base)
    threads = replace(base, distill=replace(base.distill, run=replace(base.distill.run, threads=1)))
    assert student_fingerprint(threads) == student_fingerprint(base)  # speed only: the same student


def test_a_first_attempt_that_failed_does_not_lock_its_folder(tmp_path, easy_npz):
    """A typo in the first attempt leaves only kd-edge.toml behind: the corrected command runs there."""
    out = tmp_path / "run"
    first = pipeline("--dataset", f"npz:{tmp_path / 'typo.npz'}", "--out", out, ok=False)
    assert first.exit_code == 1 and "typo.npz" in first.output
    assert [p.name for p in out.iterdir()] == ["kd-edge.toml"]
    again = pipeline("--dataset", f"npz:{tmp_path / 'other-typo.npz'}", "--out", out, ok=False)
    assert "other-typo.npz" in again.output and "not a pipeline run folder" not in again.output


def test_a_first_stage_that_failed_midway_does_not_lock_its_folder(tmp_path, easy_npz):
    """A teacher that diverged leaves its files beside the pipeline's kd-edge.toml: the same command runs there
    again (and stops at the same point), where a folder of something else is refused."""
    out, config = tmp_path / "run", tmp_path / "diverging.toml"
    config.write_text(FAST.replace("epochs = 1", "epochs = 1\nlr = 1e9"))
    first = pipeline("--dataset", f"npz:{easy_npz}", "--config", config, "--out", out, ok=False)
    assert first.exit_code == 1 and "teacher" in first.output and not (out / "pipeline.json").exists()
    assert {"kd-edge.toml", "config.json"} <= {p.name for p in out.iterdir()}
    again = pipeline("--dataset", f"npz:{easy_npz}", "--config", config, "--out", out, ok=False)
    assert again.exit_code == 1 and "not a pipeline run folder" not in again.output
    assert again.output.splitlines()[-1] == first.output.splitlines()[-1]
    (out / "kd-edge.toml").write_text("[distill]\n")  # a config of the user's own, not the pipeline's record
    third = pipeline("--dataset", f"npz:{easy_npz}", "--config", config, "--out", out, ok=False)
    assert third.exit_code == 1 and "not a pipeline run folder" in third.output


def test_bundling_a_pipeline_run_reuses_its_exports_when_they_match(tmp_path, easy_run, monkeypatch):
    """`kd-edge bundle RUN` of a pipeline run: its student.onnx and student.int8.onnx, made from its student.pt
    with the same settings, are bundled as they are; other quantizer settings quantize again."""
    from kd_edge.pipeline import chains
    from kd_edge.settings import BundleSettings, DeploySettings, QuantizeSettings

    settings = DeploySettings(
        quantize=QuantizeSettings(optimize_latency=False, calibration_size=50),  # the run's FAST table
        bundle=BundleSettings(samples=15, form="int8"),
    )
    made = []
    for name in ("export_to", "quantize_to"):
        original = getattr(chains, name)
        monkeypatch.setattr(
            chains, name, lambda *a, name=name, original=original, **k: made.append(name) or original(*a, **k)
        )
    bundled = chains.deploy(easy_run, tmp_path / "same", settings)
    assert made == [] and bundled.form == "int8"
    assert (tmp_path / "same" / "model.onnx").read_bytes() == (easy_run / "student.int8.onnx").read_bytes()
    other = replace(settings, quantize=replace(settings.quantize, method="percentile"))
    chains.deploy(easy_run, tmp_path / "other", other)
    assert made == ["export_to", "quantize_to"]

"""Bundles: the folder and its archive, one card schema, checksums verified before loading, unsafe archives refused."""

import io
import json
import os
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

from kd_edge import __version__
from kd_edge.cli import app
from kd_edge.deploy import bundle as bundle_stage
from kd_edge.deploy.bundle import write_bundle
from kd_edge.deploy.form_choice import RULE, decision_threads, lower_bound, rule_verdict
from kd_edge.errors import BundleError, ConfigError, OutputError
from kd_edge.pipeline.document import form_sentence
from kd_edge.runtime import OnnxModel
from kd_edge.runtime.bundle_files import open_bundle
from kd_edge.settings import BundleSettings


@pytest.fixture(scope="module")
def int8_student(tmp_path_factory, exported_student):
    from kd_edge.deploy.quantize import quantize
    from kd_edge.settings import QuantizeSettings

    out = tmp_path_factory.mktemp("int8") / "student.int8.onnx"
    settings = QuantizeSettings(calibration_size=60, optimize_latency=False, compare_latency=False)
    return quantize(exported_student, settings, out=out).path


@pytest.fixture
def fp32_bundle(tmp_path, exported_student):
    return write_bundle(tmp_path / "bundle", BundleSettings(samples=9), fp32=exported_student, int8=None)


def test_fp32_bundle_round_trip(fp32_bundle, exported_student):
    folder = fp32_bundle.folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "SHA256SUMS",
        "consumer.c",
        f"kd_edge-{__version__}-py3-none-any.whl",
        "model.json",
        "model.onnx",
        "samples.npz",
    ]
    assert fp32_bundle.form == "fp32" and fp32_bundle.reason == "no INT8 model was given"
    card = json.loads((folder / "model.json").read_text())
    original = OnnxModel(exported_student)
    assert (
        card["classes"] == original.classes
        and card["input_shape"] == [1, 16, 16]
        and card["bundle"]["deployable"]["form"] == "fp32"
    )
    samples = np.load(folder / "samples.npz")
    assert np.bincount(samples["labels"]).tolist() == [3, 3, 3]  # 9 samples, stratified by class
    for source in (folder, fp32_bundle.archive):  # the folder and the archive load the same model
        model = OnnxModel(source)
        assert model.card == original.card and model.bundle is not None
        assert np.array_equal(model.predict(samples["images"]), original.predict(samples["images"]))
    if shutil.which("sha256sum"):
        assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder).returncode == 0


def test_bundle_with_both_forms_records_the_decision(tmp_path, exported_student, int8_student, monkeypatch):
    seen = {}

    def timed(fp32, int8, images, settings):
        seen.update(threads=decision_threads(settings), batch=settings.batch_size, profile=settings.profile)
        return rule_verdict([0.10, 0.11, 0.10], [0.09, 0.10, 0.095], profile=settings.profile, threads=2, batch_size=1)

    monkeypatch.setattr(bundle_stage, "decide_form", timed)
    result = write_bundle(tmp_path / "b", BundleSettings(samples=30), fp32=exported_student, int8=int8_student)
    assert result.form == "int8" and "not slower than FP32 beyond the noise" in result.reason
    assert "the noise floor is 1.05x" in result.reason  # a lower bound over 1 still ships INT8 under 1.05x
    assert seen == {"threads": 4, "batch": 1, "profile": "rpi4"}  # the board's own cores (projected)
    opened = open_bundle(result.folder)
    assert set(opened.forms()) == {"int8", "fp32"} and opened.forms()["fp32"].name == "model.fp32.onnx"
    decision = opened.info["form_decision"]
    assert opened.info["profile"] == "rpi4" and decision["rule"] == RULE and decision["form"] == "int8"
    assert decision["timings"] == "b.form-timing.json" and result.timings == tmp_path / "b.form-timing.json"
    timings = json.loads(result.timings.read_text())  # the measurements, beside the bundle
    assert timings["round_ratios"] == pytest.approx([0.9, 0.10 / 0.11, 0.95]) and timings["rule"] == RULE
    assert timings["lower_bound"] < timings["ratio"] < 1 and timings["noise"] == pytest.approx(0.025)
    assert "model.fp32.onnx" in (result.folder / "README.md").read_text()


def test_a_timed_bundle_made_twice_is_one_archive_and_its_timings_sit_beside_it(
    tmp_path, exported_student, int8_student, monkeypatch
):
    """The rounds' timings differ at every run; the form they decide does not. Only the decision goes into the
    bundle, so the same models make the same archive, byte for byte; each run's timings are in OUT.form-timing.json."""
    rounds = iter([([0.10, 0.11, 0.10], [0.09, 0.10, 0.095]), ([0.20, 0.18, 0.21], [0.15, 0.17, 0.16])])
    monkeypatch.setattr(bundle_stage, "decide_form", lambda *args: rule_verdict(*next(rounds), threads=2))
    made = []
    for _ in range(2):
        result = write_bundle(tmp_path / "b", BundleSettings(samples=9), fp32=exported_student, int8=int8_student,
                              force=True)  # fmt: skip
        made.append((result.archive.read_bytes(), json.loads(result.timings.read_text())["int8_p50_ms"]))
    assert made[0][0] == made[1][0]
    assert made[0][1] == [0.09, 0.10, 0.095] and made[1][1] == [0.15, 0.17, 0.16]
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        assert "b/b.form-timing.json" not in tar.getnames()
    card = json.loads((tmp_path / "b" / "model.json").read_text())["bundle"]
    assert "p50_ms" not in card["form_decision"]
    # the pipeline's report still says what the timing was, from the file beside the bundle
    assert form_sentence(tmp_path, card) == f"Deployable form: INT8. Why: {result.reason}"
    assert "over 3 rounds" in result.reason
    untimed = write_bundle(tmp_path / "b", BundleSettings(samples=9, form="fp32"), fp32=exported_student,
                           int8=int8_student, force=True)  # fmt: skip
    assert untimed.timings is None and not (tmp_path / "b.form-timing.json").exists()  # none left from the last


@pytest.mark.parametrize(
    "int8_ms, form",
    [
        ([0.97, 1.01, 0.99, 1.02, 0.98], "int8"),  # the same speed
        ([1.04, 1.06, 1.03, 1.05, 1.04], "int8"),  # 4 % slower: inside the 5 % noise floor
        ([1.30, 1.25, 1.32, 1.28, 1.29], "fp32"),  # clearly slower
        ([0.80, 1.50, 1.15, 1.20, 1.10], "int8"),  # 15 % slower by the median, but the rounds spread +-35 %
        ([1.30, 0.95, 1.32, 1.28, 1.29, 1.27, 1.31], "fp32"),  # one odd round of 7 does not decide
        ([1.30, 0.85, 1.32, 0.90, 1.29, 1.27, 1.31], "int8"),  # two far-off rounds widen the bound below 1.05
    ],
)
def test_the_rule_ships_fp32_only_when_int8_is_slower_beyond_the_noise(int8_ms, form):
    decision = rule_verdict([1.0] * len(int8_ms), int8_ms, threads=2, batch_size=1)
    assert decision.form == form and decision.ratio == pytest.approx(float(np.exp(np.log(int8_ms).mean())))
    assert "2 thread(s), batch 1" in decision.measured


@pytest.mark.parametrize(
    "true_ratio, noise, form", [(0.98, 0.10, "int8"), (1.02, 0.05, "int8"), (1.3, 0.05, "fp32"), (1.6, 0.15, "fp32")]
)
def test_the_rule_does_not_flip_with_timing_noise(true_ratio, noise, form):
    """Two hundred repeats of a 7-round timing, each reading off by up to ``noise``, all decide alike."""
    rng = np.random.default_rng(0)
    forms = set()
    for _ in range(200):
        fp32 = 1.0 + rng.uniform(-noise, noise, 7)
        int8 = true_ratio * (1.0 + rng.uniform(-noise, noise, 7))
        forms.add(rule_verdict(list(fp32), list(int8)).form)
    assert forms == {form}


@pytest.mark.parametrize("profile", ["rpi4", "host"])
def test_on_a_board_the_forms_are_compared_as_projected_there(monkeypatch, profile):
    """INT8 0.8x FP32 on this host's AVX2 can be twice as slow on a Cortex-A72 without the dot product: on a board
    profile the rule reads the projected ratio (host 1-thread ratio x the board's INT8/FP32 cost scale, the
    host's throughput measured each round), on the host profile the host's own."""
    from kd_edge.deploy import form_choice
    from kd_edge.runtime.bench import projection
    from kd_edge.runtime.bench.profiles import get_profile

    timed_at = []

    def time_both(fp32, int8, images, settings, threads):
        timed_at.append(threads)
        return [1.0, 1.1, 0.9, 1.0, 1.05], [0.8, 0.88, 0.72, 0.8, 0.84]  # INT8 0.8x here, every round

    throughput = {"fp32": 75.0, "int8": 240.0}  # this host: int8 products 3.2x faster than float32
    monkeypatch.setattr(form_choice, "time_both", time_both)
    monkeypatch.setattr(projection, "host_throughput_rounds", lambda rounds: [throughput] * rounds)
    decision = form_choice.decide_form("a.onnx", "b.onnx", np.zeros((8, 4)), BundleSettings(profile=profile, rounds=5))
    if profile == "host":
        assert timed_at == [len(os.sched_getaffinity(0))] and decision.board_scales is None
        assert decision.form == "int8" and decision.ratio == pytest.approx(0.8)
        return
    board = get_profile("rpi4")  # 4 cores; per core fp32 8 FLOP/cycle, int8 16 ops/cycle at 1.5 GHz

    def cost(dtype, per_cycle):
        serial = board.serial_fraction[dtype]
        return throughput[dtype] / (per_cycle * 1.5 * board.efficiency[dtype]) * (serial + (1 - serial) / 4)

    scale = cost("int8", 16) / cost("fp32", 8)
    assert timed_at == [1] and decision.threads == 4 and decision.board_scales == pytest.approx([scale] * 5)
    assert decision.ratio == pytest.approx(0.8 * scale) and scale > 1.5
    assert decision.form == "fp32" and "projected on rpi4 at 4 thread(s)" in decision.measured


def test_the_host_throughput_is_measured_once_a_round():
    from kd_edge.runtime.bench.projection import host_throughput_rounds

    rounds = host_throughput_rounds(3, seconds=0.05)
    assert len(rounds) == 3 and all(set(r) == {"fp32", "int8"} and min(r.values()) > 0 for r in rounds)
    assert len({r["fp32"] for r in rounds}) == 3  # three measurements, not one repeated


def test_the_bound_is_a_paired_t_interval_on_log_ratios():
    assert lower_bound([1.2] * 6) == pytest.approx(1.2)  # no spread: the bound is the ratio
    logs = np.log([1.1, 1.3, 1.2, 1.25, 1.15])
    expected = np.exp(logs.mean() - 2.132 * logs.std(ddof=1) / np.sqrt(5))  # t(0.95, 4 degrees of freedom)
    assert lower_bound([1.1, 1.3, 1.2, 1.25, 1.15]) == pytest.approx(expected)
    with pytest.raises(ConfigError, match="at least 5"):
        BundleSettings(rounds=3)


def test_form_option_decides_without_timing(tmp_path, exported_student, int8_student, monkeypatch):
    monkeypatch.setattr(bundle_stage, "decide_form", lambda *args: pytest.fail("--form fp32 must not time"))
    settings = BundleSettings(samples=9, form="fp32")
    result = write_bundle(tmp_path / "b", settings, fp32=exported_student, int8=int8_student)
    assert result.form == "fp32" and result.reason == "--form fp32 was given (not timed)"
    assert open_bundle(result.folder).info["form_decision"]["form"] == "fp32"


@pytest.mark.slow
def test_a_bundle_is_benchmarked_under_the_board_it_was_made_for(fp32_bundle, tmp_path):
    out = tmp_path / "bench.json"
    quick = ["--threads", "1", "--runs", "10", "--rounds", "1", "--warmup", "1", "--json", str(out)]
    result = CliRunner().invoke(app, ["bench", str(fp32_bundle.folder), *quick])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["environment"]["profile"]["name"] == "rpi4"  # model.json's board


def test_changed_file_is_refused_before_loading(fp32_bundle):
    model = fp32_bundle.folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx does not match"):
        OnnxModel(fp32_bundle.folder)
    result = CliRunner().invoke(app, ["bench", str(fp32_bundle.folder)])
    assert result.exit_code == 1 and "fails its checksums" in result.output


def test_missing_and_unlisted_files_are_refused(fp32_bundle):
    (fp32_bundle.folder / "samples.npz").rename(fp32_bundle.folder / "extra.npz")
    with pytest.raises(BundleError, match=r"samples\.npz is missing; extra\.npz is not listed"):
        open_bundle(fp32_bundle.folder)


def archive_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"") -> "Path":  # noqa: F821
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("bundle/model.json")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"{}"))
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def evil_members():
    absolute = tarfile.TarInfo("/tmp/kd-edge-evil")
    absolute.size = 4
    climbing = tarfile.TarInfo("bundle/../../kd-edge-evil")
    climbing.size = 4
    link = tarfile.TarInfo("bundle/model.onnx")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("bundle/samples.npz")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    device = tarfile.TarInfo("bundle/null")
    device.type = tarfile.CHRTYPE
    return [
        (absolute, "outside the folder"),
        (climbing, "outside the folder"),
        (link, "a link"),
        (hard, "a link"),
        (device, "a device"),
    ]


@pytest.mark.parametrize("member, message", evil_members(), ids=["absolute", "dotdot", "symlink", "hardlink", "device"])
def test_unsafe_archive_is_refused_before_anything_is_written(tmp_path, member, message):
    archive = archive_with(tmp_path, member, b"evil")
    target = tmp_path / "unpacked"
    with pytest.raises(BundleError, match=message):
        open_bundle(archive, unpack_to=target)
    assert not target.exists()  # not even the harmless member was written
    assert not (tmp_path.parent / "kd-edge-evil").exists()


def test_damaged_archive_is_a_clear_error(tmp_path, fp32_bundle):
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(fp32_bundle.archive.read_bytes()[:300])
    with pytest.raises(BundleError, match="cannot read"):
        OnnxModel(damaged)


def test_an_archive_of_the_same_files_is_the_same_bytes(tmp_path, fp32_bundle):
    """A bundle made twice is one artifact: the archive carries no time, owner or permission of the machine."""
    import os
    import tarfile

    from kd_edge.runtime.bundle_files import write_archive

    first = fp32_bundle.archive.read_bytes()
    for path in fp32_bundle.folder.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))  # the files touched again, years apart
        path.chmod(0o600)
    write_archive(fp32_bundle.folder, tmp_path / "again.tar.gz")
    assert (tmp_path / "again.tar.gz").read_bytes() == first
    with tarfile.open(tmp_path / "again.tar.gz") as tar:
        assert {m.name for m in tar.getmembers()} == {f"bundle/{p.name}" for p in fp32_bundle.folder.iterdir()}
        assert all(m.isfile() and m.mtime == 0 and m.mode == 0o644 for m in tar.getmembers())


def test_existing_bundle_needs_force(fp32_bundle, exported_student):
    settings = BundleSettings(samples=30)
    with pytest.raises(OutputError, match="--force"):
        write_bundle(fp32_bundle.folder, settings, fp32=exported_student, int8=None)
    write_bundle(fp32_bundle.folder, settings, fp32=exported_student, int8=None, force=True)


@pytest.mark.slow
def test_bench_of_a_bundle_scores_its_samples(tmp_path, fp32_bundle):
    out = tmp_path / "b.json"
    for source in (fp32_bundle.folder, fp32_bundle.archive):
        result = CliRunner().invoke(app, ["bench", str(source), "--runs", "10", "--rounds", "1", "--json", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        samples = np.load(fp32_bundle.folder / "samples.npz")
        expected = (OnnxModel(fp32_bundle.folder).predict(samples["images"]) == samples["labels"]).mean()
        assert report["results"][0]["accuracy"] == pytest.approx(expected) and "samples of bundle" in report["data"]
        assert report["results"][0]["model"] == str(source)


@pytest.mark.slow
def test_cli_bundle_of_a_run_folder(tmp_path, student_checkpoint):
    out = tmp_path / "deploy"
    result = CliRunner().invoke(
        app, ["bundle", str(student_checkpoint.parent), "--form", "fp32", "--samples", "30", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "model.onnx is FP32" in result.output and "--form fp32 was given" in result.output
    assert (tmp_path / "deploy.tar.gz").is_file() and OnnxModel(out).card.model == "cnn-tiny"

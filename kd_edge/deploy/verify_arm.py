"""``kd-edge verify-arm``: run a bundle on aarch64 ONNX Runtime under QEMU and compare with the host.

    result = verify_arm("bundle", ArmSettings(cpus=("cortex-a53", "cortex-a72")))

1. Build, once, an aarch64 userland in the cache (``~/.cache/kd-edge/arm/...``,
   ``kd_edge.deploy.arm_userland``): Debian's arm64 Python 3.11 and QEMU's user-mode
   ``qemu-aarch64-static``, and the aarch64 wheels of each ONNX Runtime release asked for
   (``--onnxruntime``, default the host's) and numpy. Facts and pitfalls: ``shared/notes/arm.md``.
2. Install kd-edge's own wheel (built from this installation) into it, so that what runs
   is what ``pip install kd-edge`` puts on a board.
3. For each release and emulated CPU, run ``python -m kd_edge.runtime.check`` on the samples
   there, and the same code on the host; compare per sample: top-1 agreement, max |logit
   difference|, accuracy. Emulated time is never reported as latency. A bundle that passes
   everywhere records it in its model.json (``bundle.verified``: the releases, the oldest, the CPUs).

Needs no torch. Needs apt-get and pip to reach Debian's and PyPI's registries the first
time (or a system ``qemu-user-static``); says what to install when it cannot.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kd_edge.deploy.arm_userland import cache_root, install_kd_edge, prepare_userland, run_emulated
from kd_edge.deploy.host_runtimes import parse_version
from kd_edge.errors import ConfigError
from kd_edge.runtime.bundle_files import CARD_FILE, amend_card, write_archive
from kd_edge.settings.deploy import ArmSettings

# What each emulated CPU stands for.
BOARDS = {
    "cortex-a53": "Raspberry Pi Zero 2 W / Pi 3, NEON only",
    "cortex-a72": "Raspberry Pi 4 (Jetson Nano's A57 has the same features)",
    "cortex-a76": "Raspberry Pi 5",
    "neoverse-n1": "Arm servers and newer SoCs, with int8 dot product",
}
FP32_MIN_AGREEMENT = 1.0
INT8_MIN_AGREEMENT = 0.999
# The export's own parity tolerance: float32 sums in another order differ by 1e-6 to 1e-5 at these magnitudes.
FP32_MAX_LOGIT_DIFF = 1e-4
# A detector's INT8 objects may differ where a cell's probability sits on the threshold and kernels round differently.
INT8_MIN_OBJECT_AGREEMENT = 0.99


@dataclass(frozen=True, kw_only=True)
class FormCheck:
    """One model form on one emulated CPU and ONNX Runtime release, against the host."""

    cpu: str
    onnxruntime: str
    form: str
    samples: int
    machine: str  # as the emulated Python reported it: aarch64, or the check did not run where it should
    top1_agreement: float  # a detector's: per cell
    max_abs_logit_diff: float
    host_accuracy: float | None  # a detector's: F1 on the samples' objects
    arm_accuracy: float | None
    disagreements: list[dict]  # sample index, host class, aarch64 class, host's top-2 margin; a detector's: "what"
    passed: bool
    object_agreement: float | None = None  # a detector's decoded objects found alike on both, over all found on either


@dataclass(frozen=True, kw_only=True)
class ArmResult:
    checks: list[FormCheck]
    host: dict  # machine, onnxruntime, numpy, python
    emulated: dict  # "CPU, ONNX Runtime VERSION" -> the same facts, as each emulated run reported them
    userland: str
    seconds: float
    recorded_in: str | None = None  # the bundle's model.json that now names what was verified
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {**asdict(self), "passed": self.passed}


def verify_arm(
    source,
    settings: ArmSettings | None = None,
    *,
    cache_dir: str | None = None,
    data_dir: str | None = None,
    progress=print,
) -> ArmResult:
    """Compare ``source`` (a bundle, or an .onnx model) on the host and on each emulated CPU, for each ONNX Runtime
    release asked for (default: the host's); the userland is kept in ``cache_dir`` (default ~/.cache/kd-edge/arm);
    ``data_dir`` finds a bare model's dataset. When every check passes on a bundle folder, its model.json records
    what was verified (``bundle.verified``) and its checksums and archive are written again."""
    import onnxruntime as ort

    from kd_edge.runtime.check import forms_of, runtime_facts, sample_logits
    from kd_edge.runtime.session import read_card

    config = settings or ArmSettings()
    releases = sorted(config.onnxruntime or (ort.__version__,), key=parse_version)
    for release in releases:
        parse_version(release)  # an unsupported release fails before anything is built
    started = time.perf_counter()
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="kd-edge-arm-") as scratch:
        scratch = Path(scratch)
        local, forms = local_forms(source, scratch / "bundle", forms_of)
        samples = check_samples(local, config.samples, data_dir, scratch / "samples.npz")
        images = samples["images"]
        progress(f"host: {len(images)} samples through {', '.join(forms)}")
        host_logits = sample_logits(forms, images)
        card = read_card(next(iter(forms.values())))  # the forms share the task and its decoding rule
        site = install_kd_edge(scratch / "kd-edge-site")
        checks, emulated = [], {}
        for release in releases:
            userland = prepare_userland(cache_root(cache_dir), release, progress)
            for cpu in config.cpus:
                progress(f"aarch64 under QEMU as {cpu} ({BOARDS[cpu]}), ONNX Runtime {release}")
                out = scratch / f"{cpu}-{release}.npz"
                arm_logits, facts = run_emulated(userland, site, cpu, local, scratch / "samples.npz", out)
                emulated[f"{cpu}, ONNX Runtime {release}"] = facts
                checks += [
                    compare_form(card, (cpu, release, form, facts["machine"]), host_logits[form], arm_logits[form],
                                 samples)
                    for form in forms
                ]  # fmt: skip
    result = ArmResult(
        checks=checks,
        host=runtime_facts(),
        emulated=emulated,
        userland=str(cache_root(cache_dir)),
        seconds=time.perf_counter() - started,
        notes=["timings under emulation are not latencies and are not reported"],
    )
    if result.passed and source.is_dir():
        verified = {"onnxruntime": releases, "oldest_onnxruntime": releases[0], "cpus": list(config.cpus),
                    "samples": len(images), "host": result.host}  # fmt: skip
        amend_card(source, "verified", verified)
        archive = source.with_name(source.name + ".tar.gz")
        if archive.is_file():
            write_archive(source, archive)
        result = replace(result, recorded_in=str(source / CARD_FILE))
    return result


def local_forms(source: Path, unpack_to: Path, forms_of) -> tuple[Path, dict[str, Path]]:
    """A folder or file QEMU's Python can read, and its forms; an archive is verified and unpacked first."""
    from kd_edge.runtime.bundle_files import is_archive, open_bundle

    if is_archive(source):
        source = open_bundle(source, unpack_to=unpack_to).folder
    return source, forms_of(source)


def check_samples(source: Path, count: int, data_dir: str | None, target: Path) -> dict[str, np.ndarray]:
    """The bundle's samples, or a bare model's (as ``kd-edge bundle`` would take them), at most ``count``
    images or frames; written to ``target`` for the emulated run."""
    from kd_edge.runtime.samples import labelled_samples
    from kd_edge.runtime.session import OnnxModel

    model = OnnxModel(source)
    if model.bundle is not None and model.bundle.samples_path is not None:
        with np.load(model.bundle.samples_path) as archive:
            samples = {name: archive[name] for name in archive.files}
    elif model.card.data is not None:
        samples = labelled_samples(model, count, data_dir)
    else:
        raise ConfigError(
            f"{str(source)!r} has no samples and its card names no dataset; bundle it with `kd-edge bundle`"
        )
    if "boxes" in samples:  # a detector's frames: keep the objects of the frames kept
        samples["boxes"] = samples["boxes"][samples["boxes"][:, 0] < count]
        samples["sizes"] = samples["sizes"][:count]
    samples = {name: values[:count] if name in ("images", "labels") else values for name, values in samples.items()}
    np.savez(target, **samples)
    return samples


def compare_form(card, where: tuple[str, str, str, str], host: np.ndarray, arm: np.ndarray, samples) -> FormCheck:
    """The verdict on one form, a classifier's or a detector's; ``where`` is (cpu, release, form, machine)."""
    if card.task == "detect":
        return compare_detections(*where, host, arm, samples, card)
    return compare(*where, host, arm, samples.get("labels"))


def compare(
    cpu: str, release: str, form: str, machine: str, host: np.ndarray, arm: np.ndarray, labels: np.ndarray | None
) -> FormCheck:
    """The verdict on one form: run on aarch64; the same top-1 class (FP32: every sample, INT8: 99.9 %); and for
    FP32, logits within float32's reordering error (INT8 may differ by a quantisation step where kernels round
    differently, which the class agreement bounds)."""
    host_top, arm_top = host.argmax(1), arm.argmax(1)
    differ = np.flatnonzero(host_top != arm_top)
    ordered = np.sort(host, axis=1)
    margins = ordered[:, -1] - ordered[:, -2]
    agreement = float((host_top == arm_top).mean())
    difference = float(np.abs(host - arm).max())
    minimum = INT8_MIN_AGREEMENT if form == "int8" else FP32_MIN_AGREEMENT
    close = form == "int8" or difference <= FP32_MAX_LOGIT_DIFF
    return FormCheck(
        cpu=cpu,
        onnxruntime=release,
        form=form,
        samples=len(host),
        machine=machine,
        top1_agreement=agreement,
        max_abs_logit_diff=difference,
        host_accuracy=None if labels is None else float((host_top == labels).mean()),
        arm_accuracy=None if labels is None else float((arm_top == labels).mean()),
        disagreements=[
            {
                "sample": int(i),
                "host_class": int(host_top[i]),
                "aarch64_class": int(arm_top[i]),
                "host_margin": float(margins[i]),
            }
            for i in differ
        ],
        passed=machine == "aarch64" and agreement >= minimum and close,
    )


def compare_detections(cpu, release, form, machine, host, arm, samples, card) -> FormCheck:
    """A detector's verdict: run on aarch64; the same class in every cell (INT8: 99.9 % of cells) and the same
    decoded objects (INT8: 99 % of those found on either side); FP32 logits within float32's reordering error."""
    from kd_edge.runtime.detections import decode, score_samples

    rule, sizes = card.detection, samples["sizes"]
    found = [
        [{(d.label, d.x, d.y) for d in decode(frame, rule["stride"], rule["threshold"], size=tuple(size))}
         for frame, size in zip(logits, sizes, strict=True)]
        for logits in (host, arm)
    ]  # fmt: skip
    alike = sum(len(h & a) for h, a in zip(*found, strict=True))
    either = sum(len(h | a) for h, a in zip(*found, strict=True))
    objects = alike / either if either else 1.0
    cells = float((host.argmax(1) == arm.argmax(1)).mean())
    difference = float(np.abs(host - arm).max())
    fp32 = form != "int8"
    passed = (cells == 1.0 and objects == 1.0 and difference <= FP32_MAX_LOGIT_DIFF) if fp32 else (
        cells >= INT8_MIN_AGREEMENT and objects >= INT8_MIN_OBJECT_AGREEMENT)  # fmt: skip
    f1 = [score_samples(logits, samples, card.classes, rule).overall["f1"] for logits in (host, arm)]
    return FormCheck(
        cpu=cpu, onnxruntime=release, form=form, samples=len(host), machine=machine, top1_agreement=cells,
        max_abs_logit_diff=difference, host_accuracy=f1[0], arm_accuracy=f1[1], object_agreement=objects,
        disagreements=[
            {"sample": i, "what": f"frame {i}: {len(h - a)} object(s) found only on the host, {len(a - h)} only on "
             "aarch64"}
            for i, (h, a) in enumerate(zip(*found, strict=True)) if h != a
        ],
        passed=machine == "aarch64" and passed,
    )  # fmt: skip

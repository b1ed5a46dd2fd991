"""``kd-edge verify-arm``: run a bundle on aarch64 ONNX Runtime under QEMU and compare with the host.

    result = verify_arm("bundle", ArmSettings(cpus=("cortex-a53", "cortex-a72")))

1. Build, once, an aarch64 userland in the cache (``~/.cache/kd-edge/arm/...``): Debian's
   arm64 Python 3.11 unpacked with ``dpkg-deb -x`` (no root, no binfmt), QEMU's user-mode
   ``qemu-aarch64-static``, and the aarch64 wheels of ONNX Runtime (the host's version) and
   numpy. Facts and pitfalls: ``shared/notes/arm.md``.
2. Install kd-edge's own wheel (built from this installation) into it, so that what runs
   is what ``pip install kd-edge`` puts on a board.
3. For each emulated CPU, run ``python -m kd_edge.runtime.check`` on the samples there,
   and the same code on the host; compare per sample: top-1 agreement, max |logit
   difference|, accuracy. Emulated time is never reported as latency.

Needs no torch. Needs apt-get and pip to reach Debian's and PyPI's registries the first
time (or a system ``qemu-user-static``); says what to install when it cannot.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kd_edge.deploy.arm_userland import cache_root, install_kd_edge, prepare_userland, run_emulated
from kd_edge.errors import ConfigError
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


@dataclass(frozen=True, kw_only=True)
class FormCheck:
    """One model form on one emulated CPU, against the host."""

    cpu: str
    form: str
    samples: int
    top1_agreement: float
    max_abs_logit_diff: float
    host_accuracy: float | None
    arm_accuracy: float | None
    disagreements: list[dict]  # sample index, host class, aarch64 class, host's top-2 margin
    passed: bool


@dataclass(frozen=True, kw_only=True)
class ArmResult:
    checks: list[FormCheck]
    host: dict  # machine, onnxruntime, numpy, python
    emulated: dict  # the same, as aarch64 reported them
    userland: str
    seconds: float
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
    """Compare ``source`` (a bundle, or an .onnx model) on the host and on each emulated CPU; the userland
    is kept in ``cache_dir`` (default ~/.cache/kd-edge/arm); ``data_dir`` finds a bare model's dataset."""
    from kd_edge.runtime.check import forms_of, runtime_facts, sample_logits

    config = settings or ArmSettings()
    started = time.perf_counter()
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="kd-edge-arm-") as scratch:
        scratch = Path(scratch)
        local, forms = local_forms(source, scratch / "bundle", forms_of)
        images, labels = check_samples(local, config.samples, data_dir, scratch / "samples.npz")
        progress(f"host: {len(images)} samples through {', '.join(forms)}")
        host_logits = sample_logits(forms, images)
        userland = prepare_userland(cache_root(cache_dir), progress)
        site = install_kd_edge(userland, scratch / "kd-edge-site")
        checks, emulated = [], {}
        for cpu in config.cpus:
            progress(f"aarch64 under QEMU as {cpu} ({BOARDS[cpu]})")
            arm_logits, emulated = run_emulated(
                userland, site, cpu, local, scratch / "samples.npz", scratch / f"{cpu}.npz"
            )
            checks += [compare(cpu, form, host_logits[form], arm_logits[form], labels) for form in forms]
    notes = ["timings under emulation are not latencies and are not reported"]
    return ArmResult(
        checks=checks,
        host=runtime_facts(),
        emulated=emulated,
        userland=str(userland),
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def local_forms(source: Path, unpack_to: Path, forms_of) -> tuple[Path, dict[str, Path]]:
    """A folder or file QEMU's Python can read, and its forms; an archive is verified and unpacked first."""
    from kd_edge.runtime.bundle_files import is_archive, open_bundle

    if is_archive(source):
        source = open_bundle(source, unpack_to=unpack_to).folder
    return source, forms_of(source)


def check_samples(source: Path, count: int, data_dir: str | None, target: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The bundle's samples, or a bare model's class-stratified test sample of its dataset; written to ``target``."""
    from kd_edge.runtime.session import OnnxModel

    model = OnnxModel(source)
    if model.bundle is not None and model.bundle.samples_path is not None:
        with np.load(model.bundle.samples_path) as archive:
            images, labels = archive["images"], archive["labels"]
    elif model.card.data is not None:
        from kd_edge.data import load_data

        test = load_data(model.card.data, data_dir).test
        per_class = max(count // len(model.classes), 1)
        picks = np.sort(
            np.concatenate([np.flatnonzero(test.labels == c)[:per_class] for c in range(len(model.classes))])
        )
        images, labels = test.images[picks], test.labels[picks]
    else:
        raise ConfigError(
            f"{str(source)!r} has no samples and its card names no dataset; bundle it with `kd-edge bundle`"
        )
    images, labels = images[:count], labels[:count]
    np.savez(target, images=images, labels=labels)
    return images, labels


def compare(cpu: str, form: str, host: np.ndarray, arm: np.ndarray, labels: np.ndarray | None) -> FormCheck:
    host_top, arm_top = host.argmax(1), arm.argmax(1)
    differ = np.flatnonzero(host_top != arm_top)
    ordered = np.sort(host, axis=1)
    margins = ordered[:, -1] - ordered[:, -2]
    agreement = float((host_top == arm_top).mean())
    minimum = INT8_MIN_AGREEMENT if form == "int8" else FP32_MIN_AGREEMENT
    return FormCheck(
        cpu=cpu,
        form=form,
        samples=len(host),
        top1_agreement=agreement,
        max_abs_logit_diff=float(np.abs(host - arm).max()),
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
        passed=agreement >= minimum,
    )

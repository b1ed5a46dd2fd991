"""The aarch64 userland ``kd-edge verify-arm`` runs in: built once, without root, kept in a cache.

Debian's arm64 Python 3.11 unpacked with ``dpkg-deb -x`` (no root, no binfmt) and QEMU's user-mode
``qemu-aarch64-static``, shared; the aarch64 wheels of each ONNX Runtime release asked for, and numpy,
one folder per release; kd-edge's own files. Facts and pitfalls: ``shared/notes/arm.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd_edge.errors import ArmSetupError

SYSROOT_PACKAGES = (
    "libc6", "libgcc-s1", "libstdc++6", "gcc-12-base", "zlib1g", "libbz2-1.0", "liblzma5", "libcrypt1", "libexpat1",
    "libffi8", "libssl3", "libuuid1", "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8", "libdb5.3",
    "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11-minimal",
)  # fmt: skip
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
INSTALL_HINT = (
    "verify-arm needs QEMU's user-mode emulator and Debian's and PyPI's package registries the first time. "
    "Install the emulator with `apt-get install qemu-user-static` (or make the registries reachable), then run again."
)


# --- the aarch64 userland ----------------------------------------------------------------------------------


def cache_root(cache_dir: str | None) -> Path:
    from kd_edge.deploy.host_runtimes import cache_base

    return cache_base(cache_dir) / "arm"


@dataclass(frozen=True)
class Userland:
    """An aarch64 Python (``sysroot`` and QEMU, shared) and one ONNX Runtime release's packages (``site``)."""

    root: Path  # holds sysroot/ and qemu-aarch64-static
    site: Path
    onnxruntime: str


def prepare_userland(root: Path, onnxruntime: str, progress=print) -> Userland:
    """The cached userland for ONNX Runtime ``onnxruntime``; each part built when missing (in a temporary folder,
    then renamed): the sysroot once, the packages once per release."""
    from kd_edge.deploy.host_runtimes import requirements

    base = built(root / "py3.11-sysroot", "the aarch64 Python 3.11 sysroot and QEMU", build_sysroot, progress)
    wheels = [*requirements(onnxruntime), "protobuf", "flatbuffers", "packaging"]
    packages = built(
        root / f"py3.11-onnxruntime{onnxruntime}",
        f"ONNX Runtime {onnxruntime} for aarch64",
        lambda folder: pip_install_aarch64(wheels, folder / "site"),
        progress,
    )
    return Userland(root=base, site=packages / "site", onnxruntime=onnxruntime)


def built(folder: Path, what: str, build, progress) -> Path:
    """``folder``, made by ``build(temporary folder)`` unless an earlier build finished it."""
    if (folder / "ready").is_file():
        return folder
    progress(f"building {what} in {folder} (once)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".building-") as building:
        building = Path(building)
        build(building)
        (building / "ready").write_text(f"{what}\n")
        if folder.exists():
            shutil.rmtree(folder)
        building.rename(folder)
    return folder


def build_sysroot(building: Path) -> None:
    debs = download_debs(building / "debs")
    for deb in debs.glob("*_arm64.deb"):
        run(["dpkg-deb", "-x", str(deb), str(building / "sysroot")])
    install_emulator(debs, building)
    shutil.rmtree(debs)


def apt_options(folder: Path) -> list[str]:
    """apt-get options that fetch arm64 (and amd64) packages into ``folder`` without touching the host's dpkg."""
    sources = folder / "sources.list"
    return [
        "-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={folder / 'lists'}", "-o", f"Dir::Cache::Archives={folder}",
        "-o", "Dir::State::status=/dev/null", "-o", "APT::Architectures::=amd64", "-o", "APT::Architectures::=arm64",
    ]  # fmt: skip


def download_debs(folder: Path) -> Path:
    (folder / "lists" / "partial").mkdir(parents=True)
    (folder / "partial").mkdir()
    (folder / "sources.list").write_text(arm_sources())
    options = apt_options(folder)
    run(["apt-get", *options, "update"], cwd=folder)
    packages = [f"{name}:arm64" for name in SYSROOT_PACKAGES]
    if shutil.which("qemu-aarch64-static") is None:
        packages.append("qemu-user-static:amd64")
    run(["apt-get", *options, "download", *packages], cwd=folder)
    return folder


def arm_sources() -> str:
    """The host's own Debian mirrors (deb822 or one-line form), restricted to amd64 and arm64."""
    lines = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]:
        text = path.read_text() if path.is_file() else ""
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields = dict(
                    line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
                )
                uris, suites = fields.get("URIs", "").split(), fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and "debian" in " ".join(uris):
                    lines += [f"deb [arch=amd64,arm64] {uri} {suite} main" for uri in uris for suite in suites]
        else:
            lines += [
                f"deb [arch=amd64,arm64] {parts[1]} {parts[2]} main"
                for parts in (line.split() for line in text.splitlines())
                if len(parts) >= 3 and parts[0] == "deb" and "debian" in parts[1]
            ]
    if not lines:
        raise ArmSetupError(f"no Debian mirror found in /etc/apt. {INSTALL_HINT}")
    return "\n".join(dict.fromkeys(lines)) + "\n"


def install_emulator(debs: Path, userland: Path) -> None:
    target = userland / "qemu-aarch64-static"
    system = shutil.which("qemu-aarch64-static")
    if system:
        shutil.copy(system, target)
        return
    package = next(debs.glob("qemu-user-static_*_amd64.deb"), None)
    if package is None:
        raise ArmSetupError(f"qemu-user-static could not be downloaded. {INSTALL_HINT}")
    run(["dpkg-deb", "-x", str(package), str(debs / "qemu")])
    shutil.copy(debs / "qemu" / "usr" / "bin" / "qemu-aarch64-static", target)


# Arm's part numbers (the MIDR's bits 4-15) of the CPUs verify-arm emulates.
PART_NUMBERS = {"cortex-a53": 0xD03, "cortex-a72": 0xD08, "cortex-a76": 0xD0B, "neoverse-n1": 0xD0C}


def write_fake_cpuinfo(path: Path, cpu: str, count: int = 4) -> None:
    """QEMU 7 passes the host's x86 /proc/cpuinfo through, and ONNX Runtime's cpuinfo crashes parsing it.

    The fake names the emulated CPU's own part number, so that what ONNX Runtime reads of the CPU
    agrees with what QEMU emulates (a Neoverse-N1's part on an emulated Cortex-A72 turns on dot-product
    kernels the A72 lacks); the features themselves come from HWCAP, that is from QEMU.
    """
    block = "BogoMIPS\t: 100.00\nFeatures\t: fp asimd evtstrm cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
    block += f"CPU variant\t: 0x1\nCPU part\t: 0x{PART_NUMBERS[cpu]:03x}\nCPU revision\t: 4\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"processor\t: {i}\n{block}\n" for i in range(count)))


def pip_install_aarch64(requirements: list[str], site: Path) -> None:
    platforms = [option for name in WHEEL_PLATFORMS for option in ("--platform", name)]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:"]
    run(
        [
            *command,
            *platforms,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--target",
            str(site),
            *requirements,
        ]
    )


def install_kd_edge(site: Path) -> Path:
    """This installation of kd-edge as its wheel would install it (from its source tree when there is one)."""
    import kd_edge

    package = Path(kd_edge.__file__).parent
    project = package.parent
    site.mkdir(parents=True)
    if (project / "pyproject.toml").is_file():
        wheels = site.parent / "wheel"
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                str(wheels),
                str(project),
            ]
        )
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(site),
                *map(str, wheels.glob("*.whl")),
            ]
        )
    else:  # an installed kd-edge: its files are the wheel's
        shutil.copytree(package, site / "kd_edge", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def run_emulated(userland: Userland, site: Path, cpu: str, model: Path, samples: Path, out: Path) -> tuple[dict, dict]:
    """Every form's logits on ``samples`` and the runtime's facts, from the check run under QEMU as ``cpu``."""
    import fcntl

    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))},
        "QEMU_CPU": cpu,
        "PYTHONPATH": f"{site}{os.pathsep}{userland.site}",
        "PYTHONNOUSERSITE": "1",
        "HOME": str(out.parent),  # onnxruntime persists a device ID there
    }
    sysroot = userland.root / "sysroot"
    command = [
        str(userland.root / "qemu-aarch64-static"), "-L", str(sysroot), str(sysroot / "usr" / "bin" / "python3.11"),
        "-m", "kd_edge.runtime.check", str(model), "--images", str(samples), "--out", str(out),
    ]  # fmt: skip
    with open(userland.root / "cpuinfo.lock", "w") as lock:  # the sysroot's one cpuinfo names this CPU meanwhile
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_fake_cpuinfo(sysroot / "proc" / "cpuinfo", cpu)
        run(command, env=environment, what=f"the check on aarch64 ({cpu}, ONNX Runtime {userland.onnxruntime})")
    with np.load(out) as archive:
        facts = json.loads(str(archive["facts"]))
        return {name: archive[name] for name in archive.files if name != "facts"}, {**facts, "qemu_cpu": cpu}


def run(command: list[str], cwd: Path | None = None, env: dict | None = None, what: str | None = None) -> None:
    try:
        completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    except OSError as exc:
        raise ArmSetupError(f"cannot run {command[0]} ({exc.strerror}). {INSTALL_HINT}") from exc
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise ArmSetupError(
            f"{what or ' '.join(command[:3])} failed (exit {completed.returncode}): {' | '.join(tail)}. {INSTALL_HINT}"
        )

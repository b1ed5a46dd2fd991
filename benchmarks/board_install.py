"""A bundle installed on a "board" offline, as its README says, and its footprint (issue 22).

    .venv/bin/python benchmarks/board_install.py BUNDLE    # writes benchmarks/results/board-install.md, ~2 min

For the oldest supported ONNX Runtime (1.16.3) and this host's release: the board's numpy and
ONNX Runtime are fetched once as wheels (what a board image holds), a fresh virtual environment
installs kd-edge from the bundle with no package index, and `kd-edge predict`, `check` and
`bench` run from there. The footprint is the installed size of each distribution.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "board-install"
RESULTS = HERE / "results"


def run(command, cwd=None) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "PYTHON"))}
    completed = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed.stdout


def wheelhouse(version: str) -> Path:
    from kd_edge.deploy.host_runtimes import requirements

    folder = WORK / f"wheels-onnxruntime{version}"
    if not folder.is_dir():
        run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", folder,
             *requirements(version)])  # fmt: skip
    return folder


def sizes(site: Path) -> dict[str, int]:
    """Installed bytes per distribution, from each one's RECORD (pip and setuptools left out: every venv has them)."""
    totals = {}
    for info in sorted(site.glob("*.dist-info")):
        name = info.name.split("-")[0].lower()
        if name in ("pip", "setuptools"):
            continue
        files = [site / line.split(",")[0] for line in (info / "RECORD").read_text().splitlines() if line]
        totals[name] = sum(f.stat().st_size for f in files if f.is_file() and site in f.resolve().parents)
    return totals


def install(bundle: Path, version: str) -> dict:
    venv = WORK / f"board-onnxruntime{version}"
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", venv])
    started = time.perf_counter()
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheelhouse(version),
         "--find-links", bundle, "kd-edge"])  # fmt: skip
    seconds = time.perf_counter() - started
    site = next((venv / "lib").glob("python3*/site-packages"))
    kd_edge = venv / "bin" / "kd-edge"
    outputs = {
        "predict": run([kd_edge, "predict", bundle, bundle / "samples.npz", "--top-k", "1"], WORK).splitlines()[:3],
        "check": run([kd_edge, "check", bundle], WORK).splitlines(),
        "bench": run([kd_edge, "bench", bundle, "--threads", "1", "--runs", "100", "--rounds", "2"], WORK).splitlines(),
    }
    return {"version": version, "install_s": seconds, "sizes": sizes(site), "outputs": outputs}


def markdown(bundle: Path, installs: list[dict]) -> str:
    bundle_bytes = sum(f.stat().st_size for f in bundle.iterdir())
    wheel = next(bundle.glob("kd_edge-*.whl"))
    lines = [
        "# A bundle installed on a board, offline",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `.venv/bin/python benchmarks/board_install.py {bundle}`: a fresh "
        "virtual environment per ONNX Runtime release, `pip install --no-index` from the board's wheels and the "
        "bundle; installed sizes from each distribution's RECORD, pip and setuptools not counted.",
        "",
        f"Bundle `{bundle.name}`: {bundle_bytes / 1e6:.2f} MB in all, of which kd-edge's wheel "
        f"{wheel.stat().st_size / 1e6:.2f} MB.",
        "",
        "| ONNX Runtime on the board | install time (offline) | installed MB | largest distributions (MB) |",
        "| --- | --- | --- | --- |",
    ]  # fmt: skip
    for item in installs:
        total = sum(item["sizes"].values()) / 1e6
        largest = ", ".join(f"{name} {size / 1e6:.1f}" for name, size in
                            sorted(item["sizes"].items(), key=lambda pair: -pair[1])[:6])  # fmt: skip
        lines.append(f"| {item['version']} | {item['install_s']:.0f} s | {total:.1f} | {largest} |")
    for item in installs:
        lines += ["", f"From the board's environment with ONNX Runtime {item['version']}:", "", "```"]
        for command, output in item["outputs"].items():
            lines += [f"$ kd-edge {command} ...", *output[-12:]]
        lines += ["```"]
    return "\n".join(lines) + "\n"


def main():
    bundle = Path(sys.argv[1]).resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    installs = [install(bundle, version) for version in ("1.16.3", metadata.version("onnxruntime"))]
    RESULTS.mkdir(exist_ok=True)
    text = markdown(bundle, installs)
    (RESULTS / "board-install.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())

"""Does a bundle's figure hold in a board's own C program? The bundle's consumer.c (kd_edge/runtime/consumer.c),
built against ONNX Runtime's C library, runs each model of a bundle on its samples one frame at a time, as the
bundle's README says (default session options, the uint8 frames as they are); this compares what it computes with
a plain Python InferenceSession and, for a classifier, its accuracy with the model card's.

    .venv/bin/python benchmarks/c_consumer.py BUNDLE [BUNDLE ...] [--markdown FILE]

It needs a C compiler (`cc`, or --cc) and uses the libonnxruntime.so that the onnxruntime wheel carries (ONNX
Runtime's Linux wheels from 1.20 do), or --library's. With --arm CPU it cross-compiles (Debian's
gcc-aarch64-linux-gnu) and runs the program under QEMU as that CPU, with the aarch64 runtime of kd-edge verify-arm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from markdown_out import show

from kd_edge.runtime.bundle_files import CONSUMER_SOURCE as SOURCE  # what every bundle carries


def wheel_library() -> Path:
    """The libonnxruntime.so that the installed onnxruntime wheel carries next to its Python module."""
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    libraries = sorted(capi.glob("libonnxruntime.so.*"))
    if not libraries:
        raise SystemExit(f"no libonnxruntime.so.* in {capi}: give one with --library")
    return libraries[-1]


def build(compiler: str, library: Path, out: Path) -> Path:
    """The C consumer, linked to ``library`` (a libonnxruntime.so.X.Y.Z)."""
    # The library's own name (SONAME) is libonnxruntime.so.1, which a wheel does not carry: a link of that name
    # next to the program, where it looks first (rpath), is what a board's install puts in /usr/lib.
    (out / "libonnxruntime.so.1").symlink_to(library.resolve())
    binary = out / "consumer"
    command = [compiler, "-O2", "-std=c11", str(SOURCE), "-o", str(binary), f"-L{out}", "-l:libonnxruntime.so.1",
               f"-Wl,-rpath,{out}"]  # fmt: skip
    subprocess.run(command, check=True)
    return binary


def emulated_aarch64(cpu: str, onnxruntime: str):
    """(the aarch64 libonnxruntime.so, the QEMU command to run under as ``cpu``, a lock held while it runs) from
    kd-edge verify-arm's userland (built on first use). The sysroot's /proc/cpuinfo must name ``cpu``: ONNX
    Runtime picks its kernels from it (shared/notes/arm.md)."""
    import fcntl

    from kd_edge.deploy.arm_userland import cache_root, prepare_userland, write_fake_cpuinfo

    userland = prepare_userland(cache_root(None), onnxruntime)
    libraries = sorted((userland.site / "onnxruntime" / "capi").glob("libonnxruntime.so.*"))
    if not libraries:
        raise SystemExit(f"ONNX Runtime {onnxruntime}'s aarch64 wheel carries no libonnxruntime.so")
    sysroot = userland.root / "sysroot"

    @contextlib.contextmanager
    def cpuinfo_naming_cpu():
        with open(userland.root / "cpuinfo.lock", "w") as lock:  # verify-arm takes the same lock
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_fake_cpuinfo(sysroot / "proc" / "cpuinfo", cpu)
            yield

    return (
        libraries[-1],
        [str(userland.root / "qemu-aarch64-static"), "-L", str(sysroot), "-cpu", cpu],
        cpuinfo_naming_cpu(),
    )


def card_accuracy(card: dict, file: str) -> float | None:
    """The test accuracy the card states for ``file``: the deployable form's, or another form's of the bundle."""
    bundle = card.get("bundle") or {}
    if bundle.get("deployable", {}).get("file", "model.onnx") == file:
        return card.get("test_accuracy")
    return next((form.get("test_accuracy") for form in bundle.get("other_forms", []) if form["file"] == file), None)


def c_p50(stderr: str) -> float:
    """The C program's own median Run time (ms), from its last stderr line."""
    return float(stderr.strip().splitlines()[-1].split("p50 ")[1].split(" ms")[0])


def bench_p50(model: Path, threads: int, work: Path) -> float:
    """``kd-edge bench``'s p50 (ms) of ``model`` at batch 1 and ``threads`` on this host."""
    report = work / "bench.json"
    kd_edge = Path(sys.executable).with_name("kd-edge")
    subprocess.run([str(kd_edge), "bench", str(model), "--threads", str(threads), "--batch-size", "1", "--json",
                    str(report)], check=True, capture_output=True)  # fmt: skip
    return json.loads(report.read_text())["results"][0]["latency_ms"]["p50"]


def compare(binary: Path, bundle: Path, work: Path, run_with: list[str], timing: tuple[int, int] | None) -> list[dict]:
    """Each ONNX file of ``bundle`` run by the C program and by a plain Python session on the bundle's samples."""
    import onnxruntime

    card = json.loads((bundle / "model.json").read_text())
    samples = np.load(bundle / "samples.npz")
    frames = np.ascontiguousarray(samples["images"], dtype=np.uint8)  # (N, H, W, C): what the camera gives
    frames_file = work / f"{bundle.name}.u8"
    frames.tofile(frames_file)
    rows = []
    for model in sorted(bundle.glob("*.onnx")):
        python = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        expected = np.concatenate([python.run(None, {"input": frame[None]})[0] for frame in frames])
        command = [*run_with, str(binary), str(model), str(frames_file), str(len(frames)), *map(str, frames.shape[1:]),
                   *([str(timing[0])] if timing else [])]  # fmt: skip
        lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
        from_c = np.array([[float(v) for v in line.split()[1:]] for line in lines], dtype=np.float32)
        row = {"bundle": bundle.name, "model": model.name, "frames": len(frames),
               "max_abs_diff": float(np.abs(from_c - expected.reshape(len(frames), -1)).max())}  # fmt: skip
        if card.get("task", "classify") == "classify":
            predicted = np.array([int(line.split()[0]) for line in lines])
            row["c_accuracy"] = float((predicted == samples["labels"]).mean())
            row["python_accuracy"] = float((expected.argmax(1) == samples["labels"]).mean())
            row["card_accuracy"] = card_accuracy(card, model.name)
        if timing:  # alternating rounds: the C program's own clock, then kd-edge bench's, on a quiet host
            threads, rounds = timing
            pairs = [(c_p50(subprocess.run(command, check=True, capture_output=True, text=True).stderr),
                      bench_p50(model, threads, work)) for _ in range(rounds)]  # fmt: skip
            row["c_p50_ms"], row["bench_p50_ms"] = (float(np.median(column)) for column in zip(*pairs, strict=True))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--cc", default="cc", help="the C compiler")
    parser.add_argument("--library", type=Path, help="a libonnxruntime.so.X.Y.Z (default: the onnxruntime wheel's)")
    parser.add_argument(
        "--arm",
        metavar="CPU",
        help="build for aarch64 (--cc aarch64-linux-gnu-gcc) and run under QEMU as CPU "
        "(cortex-a53, cortex-a72, cortex-a76), in the userland `kd-edge verify-arm` keeps, with its ONNX Runtime",
    )
    parser.add_argument(
        "--onnxruntime", help="with --arm: the aarch64 ONNX Runtime release (default: this host's, as verify-arm's)"
    )
    parser.add_argument(
        "--time", type=int, nargs=2, metavar=("THREADS", "ROUNDS"), help="also time a frame at THREADS intra-op "
        "threads, the C program's clock against `kd-edge bench`'s, ROUNDS alternating rounds (not with --arm)",
    )  # fmt: skip
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    if args.arm and args.time:
        parser.error("--time measures this host; under QEMU a frame's time is the emulator's, not a board's")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.arm:
            import onnxruntime

            args.onnxruntime = args.onnxruntime or onnxruntime.__version__
            library, run_with, lock = emulated_aarch64(args.arm, args.onnxruntime)
            binary = build(args.cc if args.cc != "cc" else "aarch64-linux-gnu-gcc", library, work)
        else:
            binary, run_with, lock = build(args.cc, args.library or wheel_library(), work), [], contextlib.nullcontext()
        with lock:
            version = subprocess.run([*run_with, str(binary)], capture_output=True, text=True).stderr.splitlines()[0]
            rows = [row for bundle in args.bundles for row in compare(binary, bundle, work, run_with, args.time)]
    show(table(rows, args, version.removeprefix("consumer: ")), args.markdown)


def table(rows: list[dict], args: argparse.Namespace, runtime: str) -> list[str]:
    """The comparison as Markdown, with the command that gives it."""
    percent = lambda value: "n/a" if value is None else f"{value:.2%}"  # noqa: E731
    lines = ["| bundle | model | samples | C program's accuracy | Python session's | the card's (whole test split) | "
             "largest output difference |", "| --- " * 7 + "|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['bundle']} | {row['model']} | {row['frames']} | {percent(row.get('c_accuracy'))} | "
            f"{percent(row.get('python_accuracy'))} | {percent(row.get('card_accuracy'))} | {row['max_abs_diff']:.2g} |"
        )
    if args.time:
        lines += ["", f"A frame at batch 1, {args.time[0]} intra-op thread(s), medians of {args.time[1]} alternating "
                  "rounds:", "", "| bundle | model | C program's clock, p50 ms | kd-edge bench p50 ms | ratio |",
                  "| --- " * 5 + "|"]  # fmt: skip
        lines += [f"| {r['bundle']} | {r['model']} | {r['c_p50_ms']:.4f} | {r['bench_p50_ms']:.4f} | "
                  f"{r['c_p50_ms'] / r['bench_p50_ms']:.3f} |" for r in rows]  # fmt: skip
    options = f" --library {args.library}" if args.library else ""
    options += f" --time {args.time[0]} {args.time[1]}" if args.time else ""
    options += f" --arm {args.arm} --onnxruntime {args.onnxruntime}" if args.arm else ""
    where = f"aarch64 under QEMU as {args.arm}" if args.arm else "this host"
    lines += ["", f"{runtime} on {where} (the Python session: this host's onnxruntime): `.venv/bin/python "
              f"benchmarks/c_consumer.py {' '.join(map(str, args.bundles))}{options}`", ""]  # fmt: skip
    return lines


if __name__ == "__main__":
    main()

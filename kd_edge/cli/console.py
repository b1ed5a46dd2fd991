"""What the commands print: one console for every message, and a table or a line per result."""

from __future__ import annotations

import functools
from pathlib import Path


def print_quantize_result(result) -> None:
    from rich.table import Table

    table = Table(title=f"INT8 model {result.path}")
    batches = list(result.latency.fp32_ms) if result.latency else []
    f1 = result.metric == "f1"
    score = "F1" if f1 else "acc"
    for column in ["model", "size (bytes)", f"val {score}", f"test {score}", *(f"batch {b} (ms)" for b in batches)]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ("fp32", "int8"):
        latency = (
            [] if result.latency is None else [f"{ms:.4f}" for ms in getattr(result.latency, f"{name}_ms").values()]
        )
        sizes, val, test = (
            getattr(result, f"{name}_bytes"),
            getattr(result, f"{name}_val_accuracy"),
            getattr(result, f"{name}_test_accuracy"),
        )
        table.add_row(name, f"{sizes:,}", *(f"{v:.3f}" if f1 else f"{v:.2%}" for v in (val, test)), *latency)
    out = console()
    out.print(table)
    if f1:
        out.print(
            f"F1 drop {result.val_drop_points / 100:.3f} on the validation frames (the budget's), "
            f"{result.test_drop_points / 100:.3f} on test; "
            f"calibration: {result.calibration['size']} training frames ({result.calibration['method']}); time a "
            "frame of each with `kd-edge bench`"
        )
        return
    out.print(
        f"accuracy drop {result.val_drop_points:.2f} points on the validation split (the budget's), "
        f"{result.test_drop_points:.2f} on test; nodes kept in FP32: {', '.join(result.excluded_nodes) or 'none'}; "
        f"calibration: {result.calibration['size']} validation images ({result.calibration['method']})"
    )
    if result.latency is not None:
        print_latency_comparison(result.latency, "INT8")


def print_arm_result(result) -> None:
    from rich.table import Table

    table = Table(title=f"aarch64 (QEMU user mode) against {result.host['machine']} (ONNX Runtime "
                        f"{result.host['onnxruntime']})")  # fmt: skip
    detector = any(check.object_agreement is not None for check in result.checks)
    score = "F1" if detector else "accuracy"  # a detector's agreement is per cell, and on its decoded objects
    columns = ("emulated CPU", "ONNX Runtime", "form", "samples", "cells alike" if detector else "top-1 agreement",
               *(("objects alike",) if detector else ()), "max |logit diff|", f"{score} host", f"{score} aarch64",
               "verdict")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("emulated CPU", "form", "verdict") else "right")
    for check in result.checks:
        shown = "{:.3f}" if detector else "{:.2%}"
        accuracy = ["n/a" if a is None else shown.format(a) for a in (check.host_accuracy, check.arm_accuracy)]
        objects = () if not detector else (f"{check.object_agreement:.2%}",)
        verdict = (
            "agrees"
            if check.passed
            else f"[bold red]DIFFERS[/]{'' if check.machine == 'aarch64' else ' (not aarch64)'}"
        )
        table.add_row(
            check.cpu,
            check.onnxruntime,
            check.form,
            str(check.samples),
            f"{check.top1_agreement:.2%}",
            *objects,
            f"{check.max_abs_logit_diff:.2e}",
            *accuracy,
            verdict,
        )
    out = console()
    out.print(table)
    for check in result.checks:
        for item in check.disagreements:
            if "what" in item:  # a detector's frame
                out.print(f"{check.cpu} {check.form}: {item['what']}")
                continue
            out.print(
                f"{check.cpu} {check.form}: sample {item['sample']} is class {item['aarch64_class']} on aarch64, "
                f"{item['host_class']} on the host (host's top-2 margin {item['host_margin']:.3g})"
            )
    out.print(
        f"{'all agree' if result.passed else 'NOT all agree'} (FP32 must agree on every sample within 1e-4, INT8 on "
        f"99.9 %{' of cells and 99 % of objects' if detector else ''}); emulated timings are not latencies and are "
        f"not shown. Userland: {result.userland}"
    )
    if result.recorded_in:
        out.print(f"recorded in {result.recorded_in} (bundle.verified), its SHA256SUMS and archive written again")


def print_bundle_result(result) -> None:
    out = console()
    out.print(f"wrote {result.folder}/ and {result.archive}: model.onnx is {result.form.upper()}. Why: {result.reason}")
    if result.timings is not None:  # kept out of the bundle, so that the same models give the same archive
        out.print(f"the timings behind the choice: {result.timings}")
    out.print(
        f"next: copy {result.archive.name} to the board and run `kd-edge bench {result.archive.name} --threads 2`; "
        f"check it under aarch64 emulation here with `kd-edge verify-arm {result.folder}`"
    )


def print_latency_comparison(latency, name: str) -> None:
    ratios = ", ".join(
        f"batch {b} {latency.int8_ms[b] / latency.fp32_ms[b]:.2f}x (rounds within {100 * latency.spread[b]:.0f} %)"
        for b in latency.fp32_ms
    )
    console().print(
        f"{name}/FP32 latency with {latency.threads} threads, `kd-edge bench`'s harness and defaults: {ratios}"
    )
    slower = latency.slower_batches()
    if slower:
        batches = " and ".join(f"batch {b}" for b in slower)
        console().print(
            f"[bold yellow]warning:[/] the {name} model is slower than FP32 at {batches} on this machine, beyond the "
            "spread of the rounds; `kd-edge bundle` ships FP32 in that case"
        )


def print_bench_table(report) -> None:
    from rich.table import Table

    from kd_edge.runtime.bench.render import projection_lines, verdict_lines

    table = Table(title=f"kd-edge bench (profile {report.environment['profile']['name']}; data: {report.data})")
    columns = (
        "model",
        "thr",
        "batch",
        "p50 ms",
        "p99 ms",
        "rounds' spread",
        "img/s",
        "accuracy",
        "size",
        "RSS MB",
        "stable",
        "projected p50 ms",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
    for r in report.results:
        projected = r.projected_p50_ms
        table.add_row(
            r.label,
            str(r.threads),
            str(r.batch_size),
            f"{r.latency_ms.p50:.4f}",
            f"{r.latency_ms.p99:.4f}",
            f"{100 * r.round_spread:.1f} %",
            f"{r.throughput_ips:,.0f}",
            "n/a" if r.accuracy is None else f"{r.accuracy:.2%}",
            f"{r.size_bytes:,}",
            f"{r.peak_rss_mb:.0f}",
            "yes" if r.stable else "[bold red]NO[/]",
            "n/a" if projected is None else f"{projected:.4f}",
        )
    out = console()
    out.print(table)
    for r in report.results:
        for name, item in r.emulation.items():
            if name != "projection" and item.get("requested") is not None and not item.get("enforced"):
                out.print(f"[bold yellow]not enforced:[/] {name} for {r.label}: {item.get('reason')}")
        if r.drone_loop is not None:
            loop = r.drone_loop
            out.print(
                f"drone loop {r.label} at {r.threads} thread(s), {loop['rate_hz']:g} Hz: "
                f"{loop['deadline_misses']}/{loop['frames']} deadlines missed, jitter {loop['jitter_ms']:.3f} ms"
            )
        if r.frame_path is not None:
            frame = r.frame_path
            camera = (frame["decode_ms"] + frame["resize_ms"]) / frame["total_ms"]
            out.print(
                f"frame path {r.label} at {r.threads} thread(s), {frame['frames']} frames "
                f"({', '.join(frame['frame_sizes'][:3])}): decode {frame['decode_ms']:.3f} ms + resize "
                f"{frame['resize_ms']:.3f} ms + inference {frame['inference_ms']:.3f} ms = {frame['total_ms']:.3f} ms "
                f"p50 a frame; the camera path is {camera:.0%} of it, on this host",
                highlight=False,
            )
    for line in [*projection_lines(report), *verdict_lines(report)]:
        out.print(line, highlight=False)
    if not all(r.stable for r in report.results):
        out.print(
            "[bold yellow]unstable:[/] a result whose rounds (each a fresh process) differ by more than 10 % may "
            "not repeat; add --rounds"
        )
    if any(r.projected_p50_ms is not None for r in report.results):
        out.print(
            "projected latencies are estimates (host 1-thread latency x host/board per-core throughput of the model's "
            "data type x the board's calibrated efficiency, then Amdahl's law for threads), not measurements; see the "
            "JSON's emulation.projection.method"
        )


def print_pipeline_summary(result) -> None:
    from rich.table import Table

    metrics = result.metrics
    export = metrics.get("export", {})
    table = Table(title=f"kd-edge pipeline in {result.run_dir}")
    for column in ("stage", "this run", "seconds", "result"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    quantized = metrics.get("quantize", {})
    detector = "detect" in metrics["wall_time_s"]
    int8_test = quantized.get("int8_test_accuracy", 0)
    outcome = {
        "detect": "test F1 "
        + ", ".join(
            f"{n} {metrics.get(n, {}).get('test', {}).get('overall', {}).get('f1', 0):.3f}"
            for n in ("teacher", "student")
            if n in metrics
        ),
        "teacher": f"test accuracy {metrics.get('teacher', {}).get('test_accuracy', 0):.2%}",
        "student": f"test accuracy {metrics.get('student', {}).get('test_accuracy', 0):.2%}",
        "export": f"{export.get('bytes', 0):,} bytes, parity {export.get('parity', {}).get('max_abs_diff', 0):.1e}",
        "quantize": "refused: " + metrics["quantize"]["refused"][:60]
        if "refused" in metrics.get("quantize", {})
        else f"INT8 test {f'F1 {int8_test:.3f}' if detector else f'accuracy {int8_test:.2%}'}",
        "bundle": f"deployable: {metrics.get('bundle', {}).get('form', '?').upper()}",
        "bench": ", ".join(
            f"{r['model']} t{r['threads']} {1e3 * r['p50_ms']:.1f} us"
            for r in metrics.get("bench", {}).get("results", [])
            if r["batch_size"] == 1
        ),
        "report": "report.md, report.html",
    }
    for name, seconds in metrics["wall_time_s"].items():
        if name in outcome:
            table.add_row(name, "ran" if name in result.ran else "kept (unchanged)", f"{seconds:.1f}", outcome[name])
    out = console()
    out.print(table)
    out.print(
        f"report: {result.run_dir / 'report.html'} (and report.md); bundle: {result.run_dir / 'bundle'} and "
        "bundle.tar.gz"
    )
    out.print(
        f"next: `kd-edge bench {result.run_dir / 'bundle'} --threads 2` here or on the board; `kd-edge verify-arm "
        f"{result.run_dir / 'bundle'}`"
    )


def next_step(command: str) -> None:
    from kd_edge.training.distributed import is_main

    if is_main():
        console().print(f"next: {command}", soft_wrap=True)


@functools.cache
def console():
    """One console for every message, so that lines printed during a live progress display land above it."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=160)  # logs and pipes: wide enough for the tables


def print_summary(metrics: dict, out: Path) -> None:
    from rich.table import Table

    from kd_edge.training.distributed import is_main

    if not is_main():
        return

    table = Table(title=f"kd-edge results in {out}")
    for column in ("stage", "model", "parameters", "MACs", "val acc", "test acc", "time (s)"):
        table.add_column(column, justify="left" if column in ("stage", "model") else "right")
    rows = []
    for stage in ("teacher", "student"):
        info = metrics.get(stage)
        if info:
            members = info.get("members", [])
            rows += [(f"teacher {number}", member, None) for number, member in enumerate(members, start=1)]
            rows.append(("ensemble" if members else stage, info, metrics["wall_time_s"].get(stage, 0.0)))
    for stage, info, seconds in rows:
        table.add_row(
            stage,
            info["model"],
            f"{info['parameters']:,}" if "parameters" in info else "",
            f"{info['macs']:,}" if "macs" in info else "",
            f"{info['val_accuracy']:.2%}",
            f"{info['test_accuracy']:.2%}",
            "" if seconds is None else f"{seconds:.1f}",
        )
    console().print(table)
    init = metrics.get("student", {}).get("init")
    if init:
        console().print(
            f"student started from {init['source']}: {len(init['loaded'])} tensors loaded, "
            f"{len(init['shape_mismatch'])} of another shape and {len(init['not_in_source'])} absent there kept as "
            "initialised (the names are in metrics.json)"
        )
    console().print(f"total wall time {metrics['wall_time_s']['total']:.1f}s; metrics in {out / 'metrics.json'}")


def make_progress():
    from kd_edge.cli.progress_bar import RichProgress
    from kd_edge.training.distributed import is_main
    from kd_edge.training.progress import SilentProgress

    return RichProgress(console=console()) if is_main() else SilentProgress()  # one bar, rank 0's

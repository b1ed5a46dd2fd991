"""The Markdown and PNG forms of a benchmark report (the harness measures, this module renders)."""

from __future__ import annotations

from pathlib import Path

from kd_edge.io import atomic_save_figure
from kd_edge.runtime.bench.harness import BenchReport


def markdown_table(report: BenchReport) -> str:
    profile = report.environment["profile"]["name"]
    lines = [
        f"Profile: {profile}; data: {report.data}.",
        "",
        "| model | threads | batch | p50 ms | p90 ms | p99 ms | mean ms | rounds' p50 spread | throughput/s | "
        "accuracy | "
        "size bytes | peak RSS MB | stable | projected p50 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.results:
        lat = r.latency_ms
        accuracy = "n/a" if r.accuracy is None else f"{100 * r.accuracy:.2f} %"
        projected = r.projected_p50_ms
        lines.append(
            f"| {r.label} | {r.threads} | {r.batch_size} | {lat.p50:.4f} | {lat.p90:.4f} | {lat.p99:.4f} | "
            f"{lat.mean:.4f} | {100 * r.round_spread:.1f} % | {r.throughput_ips:,.0f} | {accuracy} | "
            f"{r.size_bytes:,} | "
            f"{r.peak_rss_mb:.0f} | {'yes' if r.stable else 'NO'} | "
            f"{'n/a' if projected is None else f'{projected:.4f}'} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: BenchReport, path: Path) -> bool:
    """Accuracy against per-image latency (measured, and projected where the profile projects), and the
    latency distributions; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = report.results
    profile = report.environment["profile"]["name"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in results:
        if r.accuracy is None:
            continue
        label = f"{r.label} t{r.threads} b{r.batch_size}"
        points = left.scatter(r.latency_ms.p50 / r.batch_size, 100 * r.accuracy, label=f"{label}, host")
        if r.projected_p50_ms is not None:
            left.scatter(
                r.projected_p50_ms / r.batch_size,
                100 * r.accuracy,
                marker="x",
                color=points.get_facecolor(),
                label=f"{label}, projected ({profile})",
            )
    left.set_xlabel("p50 latency per image (ms)")
    left.set_ylabel("accuracy (%)")
    left.set_xscale("log")
    left.set_title(f"accuracy against latency, profile {profile}")
    if any(r.accuracy is not None for r in results):
        left.legend(fontsize=7)
    else:
        left.text(0.5, 0.5, "no labelled data: no accuracy", ha="center", transform=left.transAxes)
    labels = [f"{r.label}\nt{r.threads} b{r.batch_size}" for r in results]
    positions = range(len(results))
    right.vlines(
        positions,
        [r.latency_ms.min for r in results],
        [r.latency_ms.max for r in results],
        color="grey",
        label="min to max",
    )
    for quantile, marker in (("p50", "o"), ("p90", "^"), ("p99", "s")):
        right.scatter(
            positions, [getattr(r.latency_ms, quantile) for r in results], marker=marker, label=quantile, zorder=3
        )
    right.set_xticks(list(positions), labels, fontsize=7)
    right.set_ylabel("latency per call (ms)")
    right.legend(fontsize=7)
    right.set_yscale("log")
    right.set_title("latency distribution (host)")
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=100)
    plt.close(figure)
    return True


def projection_lines(report: BenchReport) -> list[str]:
    """Per model and batch size: the board's projected p50 at 1, 2 and 4 threads (as far as it has cores)."""
    profile = report.environment["profile"]["name"]
    lines = []
    for r in report.results:
        by_threads = r.emulation["projection"].get("by_threads")
        if r.threads == 1 and by_threads:
            shown = ", ".join(f"{n} thread{'s' if n > 1 else ''} {ms:.4g} ms" for n, ms in by_threads.items())
            lines.append(f"{r.label}, batch {r.batch_size}, projected on {profile} (PROJECTION, p50): {shown}")
    return lines


def verdict_lines(report: BenchReport) -> list[str]:
    """The drone loop's verdict for each result that ran it: measured on this host, and projected on the board."""
    profile = report.environment["profile"]["name"]
    lines = []
    for r in report.results:
        loop = r.drone_loop
        if not loop:
            continue
        deadline, fps = loop["deadline_ms"], f"{loop['rate_hz']:g} fps"
        where = f"{r.label} at {r.threads} thread(s)"
        if loop["deadline_misses"] == 0:
            spare = deadline - loop["frame_time_p99_ms"]
            lines.append(f"{where}: fits {fps} on this host with {spare:.1f} ms to spare (p99 frame; {deadline:.1f} ms "
                         "deadline)")  # fmt: skip
        else:
            lines.append(
                f"{where}: misses {loop['miss_rate']:.0%} of {fps} deadlines on this host "
                f"({loop['deadline_misses']} of {loop['frames']} frames)"
            )
        projected = r.projected_p50_ms
        if projected is None:
            continue
        if projected <= deadline:
            lines.append(f"{where}: projected to fit {fps} on {profile} with {deadline - projected:.1f} ms to spare "
                         f"(projected p50 {projected:.3g} ms; a PROJECTION)")  # fmt: skip
        else:
            lines.append(f"{where}: projected to miss {fps} on {profile}: p50 {projected:.3g} ms against a "
                         f"{deadline:.1f} ms deadline (a PROJECTION)")  # fmt: skip
    return lines

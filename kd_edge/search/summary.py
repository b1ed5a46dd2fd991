"""The search's results as Markdown (search.md) and a plot of the front (search.png)."""

from __future__ import annotations

from pathlib import Path

from kd_edge.io import atomic_save_figure
from kd_edge.settings.search import SearchSettings


def markdown(result: dict) -> str:
    budget = f"{result['latency_budget_ms']:g} ms"
    if result["memory_budget_mb"]:
        budget += f", {result['memory_budget_mb']:g} MB"
    fits = sum(c["fits_untrained"] for c in result["candidates"])
    lines = [
        f"Search under profile {result['profile']}, budget {budget}, batch {result['batch_size']}: "
        f"{fits} of {len(result['candidates'])} candidates fit untrained; {len(result['finalists'])} finalists "
        f"({result['seconds']:.0f} s).",
        "",
        "| finalist | validation accuracy % | board latency ms | source | forms | Pareto front |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in sorted(result["finalists"], key=lambda f: f["board_ms"]):
        source = "/".join(sorted({entry["source"] for entry in f["latency"].values()}))
        lines.append(
            f"| {f['name']} | {100 * f['val_accuracy']:.2f} | {f['board_ms']:.4f} | {source} | "
            f"{', '.join(f['latency'])} | {'yes' if f['on_front'] else ''} |"
        )
    chosen = result["chosen"]
    if chosen:
        lines += [
            "",
            f"Chosen: **{chosen['name']}**, {100 * chosen['val_accuracy']:.2f} % validation, "
            f"{100 * chosen['test_accuracy']:.2f} % test, {chosen['board_ms']:.4f} ms ({chosen['latency_source']}, "
            f"{chosen['fastest_form']}); bundle {chosen['bundle']} ({chosen['bundle_form']}).",
        ]
    else:
        lines += ["", "No finalist fits the budget: loosen it, or widen the student space."]
    if result["stopped"]:
        lines += [
            "",
            "Left behind by successive halving (accuracy after fewer steps; latency untrained):",
            "",
            "| candidate | rungs trained | validation accuracy % | board latency ms |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {s['name']} | {s['rungs']} | {100 * s['val_accuracy']:.2f} | {s['board_ms']:.4f} |"
            for s in sorted(result["stopped"], key=lambda s: s["board_ms"])
        ]
    return "\n".join(lines) + "\n"


def plot(result: dict, config: SearchSettings, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    finalists = result["finalists"]
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    for s in result["stopped"]:
        axes.scatter(s["board_ms"], 100 * s["val_accuracy"], color="tab:gray", marker="x", alpha=0.6)
        axes.annotate(s["name"], (s["board_ms"], 100 * s["val_accuracy"]), fontsize=6, color="tab:gray",
                      xytext=(3, -8), textcoords="offset points")  # fmt: skip
    for f in finalists:
        axes.scatter(f["board_ms"], 100 * f["val_accuracy"], color="tab:blue" if f["on_front"] else "tab:gray")
        axes.annotate(
            f["name"], (f["board_ms"], 100 * f["val_accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    front = sorted((f for f in finalists if f["on_front"]), key=lambda f: f["board_ms"])
    axes.plot([f["board_ms"] for f in front], [100 * f["val_accuracy"] for f in front], color="tab:blue")
    axes.axvline(config.latency_budget_ms, color="tab:red", linestyle="--", label="latency budget")
    if result["chosen"]:
        chosen = result["chosen"]
        axes.scatter(
            chosen["board_ms"],
            100 * chosen["val_accuracy"],
            s=120,
            facecolors="none",
            edgecolors="tab:red",
            label=f"chosen: {chosen['name']}",
        )
    sources = {e["source"] for f in finalists for e in f["latency"].values()}
    axes.set_xlabel(f"latency at batch {config.batch_size}, ms ({'/'.join(sorted(sources))}, {config.profile})")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title("finalists: accuracy against board latency (grey x: stopped by halving)", fontsize=10)
    axes.legend(fontsize=7)
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=100)
    plt.close(figure)
    return True

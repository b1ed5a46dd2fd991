"""The run report: RUN_DIR/report.md and a self-contained RUN_DIR/report.html, built from the run folder's files.

    write_report(Path("runs/demo"))        # also `kd-edge report runs/demo`

Every figure comes from a file the stages wrote (metrics.json, bench.json, quantize.json,
the bundle's model.json, kd-edge.toml), or is measured here on the test split with the
deployable model (the confusion matrix); nothing is typed by hand. Plots need matplotlib
(the `plot` extra); without it the report says so and keeps its tables. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kd_edge.pipeline.document import (
    NO_PLOT,
    Document,
    bundled_forms,
    deployable_on_test,
    form_sentence,
    pyplot,
    read_json,
    save,
)

FIGURES = "report"  # PNGs for report.md live in RUN_DIR/report/; report.html embeds them


def write_report(run_dir: Path) -> dict[str, Path]:
    """Build the report from ``run_dir`` and write report.md, report.html and the PNGs; returns their paths."""
    from kd_edge.io import atomic_write

    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    figures = run_dir / FIGURES
    figures.mkdir(exist_ok=True)
    document = Document(title=f"kd-edge report: {run_dir.name}")
    if read_json(run_dir / "bundle" / "model.json").get("task") == "detect":
        from kd_edge.pipeline.detection_report import add_detection_sections

        add_detection_sections(document, run_dir, metrics, figures)
    else:
        add_summary(document, run_dir, metrics)
        add_training(document, metrics, figures)
        add_latency(document, run_dir, figures)
        add_errors(document, run_dir, figures)
        add_quantization(document, run_dir)
    add_reproduction(document, run_dir, metrics)
    paths = {"markdown": run_dir / "report.md", "html": run_dir / "report.html"}
    markdown, page = document.markdown(run_dir), document.html()
    atomic_write(paths["markdown"], lambda handle: handle.write(markdown.encode()))
    atomic_write(paths["html"], lambda handle: handle.write(page.encode()))
    return paths


def percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


# --- sections ------------------------------------------------------------------------------------------------


def add_summary(document: Document, run_dir: Path, metrics: dict) -> None:
    card = read_json(run_dir / "bundle" / "model.json")
    bundle = card.get("bundle", {})
    student = metrics.get("student", {})
    document.heading("Models")
    rows = []
    for stage in ("teacher", "student"):
        info = metrics.get(stage, {})
        if info:
            rows.append(
                [
                    f"{stage} (PyTorch)",
                    info.get("model"),
                    percent(info.get("test_accuracy")),
                    percent(info.get("val_accuracy")),
                    "",
                    f"{info.get('parameters', 0):,}",
                    f"{info.get('macs', 0):,}",
                    "",
                    "",
                ]
            )
    for form in bundled_forms(run_dir, card, card.get("test_accuracy"), "test_accuracy"):
        latency = ", ".join(f"{r['latency_ms']['p50'] * 1e3:.1f} us ({r['threads']} thr)" for r in form.timings)
        projections = [r["emulation"]["projection"].get("projected_p50_ms") for r in form.timings]
        projected = ", ".join(f"{p:.3f} ms" for p in projections if p is not None) or "n/a"
        accuracy = next((r["accuracy"] for r in form.timings if r["accuracy"] is not None), None)
        rows.append(
            [
                form.label,
                form.file,
                percent(form.test_score),
                percent(accuracy),
                f"{form.size:,}",
                f"{student.get('parameters', 0):,}",
                f"{student.get('macs', 0):,}",
                latency,
                projected,
            ]
        )
    headers = [
        "model",
        "file",
        "test accuracy",
        "validation (PyTorch) or bundle-sample (ONNX) accuracy",
        "size (bytes)",
        "parameters",
        "MACs",
        "p50 batch 1, host",
        "projected p50, 1 thread",
    ]
    document.table(headers, rows)
    if bundle:
        document.text(form_sentence(run_dir, bundle))
    profile = read_json(run_dir / "bench.json").get("environment", {}).get("profile", {})
    if profile:
        document.text(
            f"Latency measured on this host under the {profile.get('name')} profile "
            f"({profile.get('description')}); projections are estimates, not measurements."
        )


# A network's epochs listed in full up to this many; beyond, about this many of them (the plot shows every one).
EPOCH_ROWS = 20


def epochs_listed(history: list[dict], kept: int | None) -> list[dict]:
    """Every epoch of a short history; of a long one (a small folder's 200 epochs), evenly spaced epochs, the
    first and the last, and the kept one (the best on validation)."""
    if len(history) <= EPOCH_ROWS:
        return history
    stride = -(-len(history) // EPOCH_ROWS)
    return [e for i, e in enumerate(history) if i % stride == 0 or i == len(history) - 1 or e["epoch"] == kept]


def add_training(document: Document, metrics: dict, figures: Path) -> None:
    document.heading("Training")
    rows, thinned = [], False
    for stage in ("teacher", "student"):
        history, kept = metrics.get(stage, {}).get("history", []), metrics.get(stage, {}).get("best_epoch")
        listed = epochs_listed(history, kept)
        thinned |= len(listed) < len(history)
        for epoch in listed:
            rows.append(
                [
                    stage,
                    f"{epoch['epoch']} (kept)" if epoch["epoch"] == kept else str(epoch["epoch"]),
                    f"{epoch['loss']:.4f}",
                    percent(epoch.get("train_accuracy")),
                    percent(epoch["val_accuracy"]),
                ]
            )
    if thinned:
        document.text(
            f"Over {EPOCH_ROWS} epochs, about {EPOCH_ROWS} of a network's are listed, with the one kept (the best on "
            "validation); the plot shows every epoch, metrics.json holds them."
        )
    document.table(["network", "epoch", "loss", "train accuracy", "validation accuracy"], rows)
    plt = pyplot()
    if plt is None or not rows:
        document.image(None, "", NO_PLOT if plt is None else "(No training history in metrics.json.)")
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for stage in ("teacher", "student"):
        history = metrics.get(stage, {}).get("history", [])
        if history:
            epochs = [e["epoch"] for e in history]
            left.plot(epochs, [e["loss"] for e in history], marker="o", label=stage)
            right.plot(epochs, [100 * e["val_accuracy"] for e in history], marker="o", label=stage)
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    for axis in (left, right):
        axis.legend()
    document.image(
        save(figure, plt, figures / "training.png"), "training loss and validation accuracy per epoch", NO_PLOT
    )


def add_latency(document: Document, run_dir: Path, figures: Path) -> None:
    bench = read_json(run_dir / "bench.json")
    if not bench:
        return
    document.heading("Accuracy against latency")
    plt = pyplot()
    if plt is None:
        document.image(None, "", NO_PLOT)
        return
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for result in bench["results"]:
        if result["accuracy"] is None:
            continue
        per_image = 1e3 * result["latency_ms"]["p50"] / result["batch_size"]
        label = f"{Path(result['model']).name}, {result['threads']} thr, batch {result['batch_size']}"
        axis.scatter(per_image, 100 * result["accuracy"], label=label)
        projected = result["emulation"]["projection"].get("projected_p50_ms")
        if projected is not None:
            axis.scatter(
                1e3 * projected / result["batch_size"],
                100 * result["accuracy"],
                marker="x",
                label=f"{label}, projected",
            )
    profile = bench["environment"]["profile"]["name"]
    axis.set(
        xlabel="p50 latency per image (us)", ylabel="accuracy on the bundle samples (%)", title=f"profile {profile}"
    )
    axis.set_xscale("log")
    axis.legend(fontsize=7)
    document.image(
        save(figure, plt, figures / "latency.png"), "accuracy against per-image latency (x: projected)", NO_PLOT
    )


def add_errors(document: Document, run_dir: Path, figures: Path) -> None:
    """Confusion matrix of the deployable model on the test split, its most confused pairs, some mistakes."""
    from kd_edge.data import load_data

    found = deployable_on_test(
        document, run_dir, "Errors of the deployable model", lambda card: load_data(card.data).test
    )
    if found is None:
        return
    model, test = found
    predicted = model.predict(test.images)
    classes = model.classes
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (test.labels, predicted), 1)
    document.text(
        f"Test accuracy {np.trace(confusion) / confusion.sum():.2%} on {len(test)} images ({model.card.data.dataset})."
    )
    off = [
        (confusion[i, j], i, j) for i in range(len(classes)) for j in range(len(classes)) if i != j and confusion[i, j]
    ]
    pairs = sorted(off, reverse=True)[:5]
    document.table(
        ["true class", "predicted as", "images", "share of the class"],
        [[classes[i], classes[j], n, f"{n / confusion[i].sum():.1%}"] for n, i, j in pairs],
    )
    plt = pyplot()
    if plt is None:
        document.image(None, "", NO_PLOT)
        return
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.imshow(confusion, cmap="Blues")
    axis.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix (test)",
    )
    axis.set_xticklabels(classes, rotation=90, fontsize=7)
    axis.set_yticklabels(classes, fontsize=7)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if confusion[i, j]:
                axis.text(
                    j,
                    i,
                    confusion[i, j],
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if confusion[i, j] > confusion.max() / 2 else "black",
                )
    document.image(
        save(figure, plt, figures / "confusion.png"),
        "confusion matrix of the deployable model on the test split",
        NO_PLOT,
    )
    wrong = np.flatnonzero(predicted != test.labels)
    wrong = wrong[np.unique(np.linspace(0, len(wrong) - 1, min(12, len(wrong))).astype(int))] if len(wrong) else wrong
    if len(wrong):
        figure, axes = plt.subplots(1, len(wrong), figsize=(1.3 * len(wrong), 1.8), squeeze=False)
        for axis, index in zip(axes[0], wrong, strict=True):
            image = test.images[index]
            axis.imshow(
                image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0),
                cmap="gray" if image.shape[0] == 1 else None,
            )
            axis.set_title(f"{classes[test.labels[index]]}\n-> {classes[predicted[index]]}", fontsize=6)
            axis.axis("off")
        document.image(
            save(figure, plt, figures / "mistakes.png"), "misclassified test images: true -> predicted", NO_PLOT
        )
    else:
        document.text("No test image is misclassified, so there are no mistakes to show.")


def add_quantization(document: Document, run_dir: Path) -> None:
    summary = read_json(run_dir / "quantize.json")
    if not summary:
        return
    document.heading("Quantization")
    if "refused" in summary:
        document.text(f"No INT8 model: {summary['refused']}")
        return
    calibration = summary["calibration"]
    document.table(
        ["", "FP32", "INT8"],
        [
            [
                "validation accuracy (the budget's)",
                percent(summary["fp32_val_accuracy"]),
                percent(summary["int8_val_accuracy"]),
            ],
            [
                "test accuracy (reported only)",
                percent(summary["fp32_test_accuracy"]),
                percent(summary["int8_test_accuracy"]),
            ],
            ["size (bytes)", f"{summary['fp32_bytes']:,}", f"{summary['int8_bytes']:,}"],
        ],
    )
    kept = ", ".join(summary["excluded_nodes"]) or "none"
    searched = summary["latency_search"]
    search = (
        f"The latency search timed {len(searched)} configurations against FP32 in default ONNX Runtime sessions and "
        "kept a node in FP32 only for a 10 % gain measured twice."
        if searched
        else "No latency search ran (--optimize-latency is off by default): the nodes kept in FP32 are the accuracy "
        "budget's alone."
    )
    document.text(
        f"Nodes kept in FP32: {kept}. {search} Calibration: {calibration['size']} validation images "
        f"({calibration['method']}), index hash {calibration['indices_sha256'][:12]}."
    )
    rows = [
        [", ".join(e["fp32_nodes"]) or "(all INT8)", f"{e['batch1']:.2f}x", f"{e['batch64']:.2f}x", f"{e['score']:.2f}"]
        for e in summary["latency_search"]
    ]
    if rows:
        document.table(["nodes in FP32", "INT8/FP32 batch 1", "INT8/FP32 batch 64", "score"], rows)


def run_versions(metrics: dict) -> list[list[str]]:
    """Each component's version as the run's stages recorded it (not this process's): where stages ran with
    different versions (a later rerun of some), each version with its stages."""
    by_component: dict[str, dict[str, list[str]]] = {}
    for stage, versions in metrics.get("versions", {}).items():
        for component, version in versions.items():
            by_component.setdefault(component, {}).setdefault(version, []).append(stage)
    rows = []
    for component, versions in by_component.items():
        shown = [version if len(versions) == 1 else f"{version} ({', '.join(stages)})"
                 for version, stages in versions.items()]  # fmt: skip
        rows.append([component, "; ".join(shown)])
    return rows or [["(not recorded)", "this run predates per-stage versions"]]


def add_reproduction(document: Document, run_dir: Path, metrics: dict) -> None:
    document.heading("How to repeat this run")
    data = metrics.get("data", {})
    versions = run_versions(metrics)
    if "dataset" in data:  # a detection run's data section gives its split's groups and files instead
        versions.append(["data", f"{data['dataset']} sha256 {data.get('sha256', 'n/a')}"])
    document.table(["component", "version (the stages that ran with it)"], versions)
    document.text(f"kd-edge pipeline --config {run_dir / 'kd-edge.toml'} --out NEW_RUN_DIR")
    config = run_dir / "kd-edge.toml"
    if config.is_file():
        document.preformatted(config.read_text())
    stages = read_json(run_dir / "pipeline.json")
    if stages:
        document.table(
            ["stage", "seconds", "fingerprint"],
            [[name, f"{record['seconds']:.1f}", record["fingerprint"][:16]] for name, record in stages.items()],
        )

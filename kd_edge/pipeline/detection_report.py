"""The report's sections for a detection run (``kd-edge pipeline --dataset yolo:...``).

    add_detection_sections(document, run_dir, metrics, figures)

F1 per class and the counting error are measured here with the deployable model on the test
split the run recorded; a few test frames are drawn with their labelled boxes and what the model
found; latency per frame comes from bench.json. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

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
from kd_edge.runtime.detections import MIN_DISTANCE

DRAWN_FRAMES = 4


def add_detection_sections(document: Document, run_dir: Path, metrics: dict, figures: Path) -> None:
    add_models(document, run_dir, metrics)
    add_training(document, metrics, figures)
    add_test_frames(document, run_dir, figures)
    add_quantization(document, run_dir)


def f1(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def add_models(document: Document, run_dir: Path, metrics: dict) -> None:
    card = read_json(run_dir / "bundle" / "model.json")
    bundle = card.get("bundle", {})
    bench = read_json(run_dir / "bench.json")
    document.heading("Detectors")
    rows = []
    for stage in ("teacher", "student"):
        info = metrics.get(stage)
        if info:
            kind = "distilled" if info.get("distilled") else "labels only"
            rows.append([f"{stage} (PyTorch, {kind})", info["model"], f1(info["test"]["overall"]["f1"]),
                         f1(info["val_f1"]), info["threshold"], f"{info['parameters']:,}", f"{info['macs']:,}", "",
                         ""])  # fmt: skip
    for form in bundled_forms(run_dir, card, card.get("detection", {}).get("test_f1"), "test_f1"):
        latency = ", ".join(f"{r['latency_ms']['p50']:.1f} ms ({r['threads']} thr)" for r in form.timings) or "n/a"
        projected = [r["emulation"]["projection"].get("projected_p50_ms") for r in form.timings if r["threads"] == 1]
        shown = next((f"{p:.1f} ms" for p in projected if p is not None), "n/a")
        rows.append([form.label, f"{form.file}, {form.size:,} bytes", f1(form.test_score), "",
                     card["detection"]["threshold"], "", "", latency, shown])  # fmt: skip
    document.table(["model", "architecture or file", "test F1", "validation F1", "threshold", "parameters",
                    "MACs a frame", "p50 a frame, host", "projected p50, 1 thread"], rows)  # fmt: skip
    side = card.get("input_shape", [0, 0, 0])[1]
    profile = bench.get("environment", {}).get("profile", {})
    document.text(
        f"A frame is {side}x{side} pixels. Weights and threshold were chosen on the validation split; the test split "
        "is reported only. A detection is correct when its centre lies inside a labelled box of its class (or within "
        f"{MIN_DISTANCE:g} px along a side shorter than {2 * MIN_DISTANCE:g} px). Latency: this host under the "
        f"{profile.get('name')} profile; projections are estimates, not measurements."
    )
    if bundle:
        document.text(form_sentence(run_dir, bundle))


def add_training(document: Document, metrics: dict, figures: Path) -> None:
    document.heading("Training")
    histories = {stage: metrics.get(stage, {}).get("history", []) for stage in ("teacher", "student")}
    rows = [[stage, e["step"], f"{e['loss']:.4f}", f1(e["val_f1"]), e["threshold"]]
            for stage, history in histories.items() for e in history]  # fmt: skip
    document.table(["network", "step", "loss", "validation F1", "its best threshold"], rows)
    plt = pyplot()
    if plt is None or not rows:
        document.image(None, "", NO_PLOT if plt is None else "(No training history in metrics.json.)")
        return
    figure, axis = plt.subplots(figsize=(6.5, 3.8))
    for stage, history in histories.items():
        if history:
            axis.plot([e["step"] for e in history], [e["val_f1"] for e in history], marker="o", label=stage)
    axis.set(xlabel="step", ylabel="validation F1", title="validation F1 while training")
    axis.legend()
    document.image(save(figure, plt, figures / "training.png"), "validation F1 per evaluation", NO_PLOT)


def add_test_frames(document: Document, run_dir: Path, figures: Path) -> None:
    """F1 per class of the deployable model on the test split, and a few test frames drawn."""
    from kd_edge.data.yolo import card_splits
    from kd_edge.runtime.detections import pad_square, score_frames

    heading = "The deployable model on the test split"
    found = deployable_on_test(document, run_dir, heading, lambda card: card_splits(card)["test"])
    if found is None:
        return
    model, test = found
    rule, side = model.card.detection, model.input_shape[1]
    logits = [model.logits(model.preprocess(pad_square(scene.image, side)[None]))[0] for scene in test]
    summary = score_frames(logits, test, model.classes, rule["threshold"], rule["stride"])
    every = [*summary.per_class.items(), ("all classes", summary.overall)]
    rows = [[name, f1(r["precision"]), f1(r["recall"]), f1(r["f1"]), r["true_positives"], r["false_positives"],
             r["false_negatives"]] for name, r in every]  # fmt: skip
    document.table(["class", "precision", "recall", "F1", "found", "false", "missed"], rows)
    document.text(
        f"{len(test)} test frames ({model.card.data.dataset}); counting error {summary.counting_error:.1f} objects a "
        "frame. Classes never present nor predicted are left out."
    )
    draw_frames(document, test, logits, model, figures)


def draw_frames(document: Document, scenes, logits, model, figures: Path) -> None:
    from kd_edge.runtime.detections import decode

    plt = pyplot()
    if plt is None:
        document.image(None, "", NO_PLOT)
        return
    rule = model.card.detection
    picks = sorted({round(i * (len(scenes) - 1) / max(DRAWN_FRAMES - 1, 1)) for i in range(DRAWN_FRAMES)})
    columns = 2 if len(picks) > 1 else 1  # two frames a row: drone frames are often wide
    rows = -(-len(picks) // columns)
    aspect = max(scene.image.shape[0] / scene.image.shape[1] for scene in scenes)  # height over width
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, (6 * aspect + 0.4) * rows), squeeze=False)
    for axis in axes.flat[len(picks) :]:
        axis.axis("off")
    for axis, index in zip(axes.flat, picks, strict=False):
        scene = scenes[index]
        axis.imshow(scene.image)
        for _, x, y, w, h in scene.truths():
            axis.add_patch(plt.Rectangle((x - w / 2, y - h / 2), w, h, fill=False, edgecolor="lime", linewidth=0.8))
        height, width = scene.image.shape[:2]
        found = decode(logits[index], rule["stride"], rule["threshold"], size=(width, height))
        axis.scatter([d.x for d in found], [d.y for d in found], s=40, c="yellow", marker="+", linewidths=1.5)
        axis.set_title(f"{scene.file}: {len(scene.labels)} labelled, {len(found)} found", fontsize=7)
        axis.axis("off")
    document.image(
        save(figure, plt, figures / "detections.png"),
        "test frames: labelled boxes (green) and the deployable model's detections (yellow crosses)",
        NO_PLOT,
    )


def add_quantization(document: Document, run_dir: Path) -> None:
    summary = read_json(run_dir / "quantize.json")
    if not summary:
        return
    document.heading("Quantization")
    if "refused" in summary:
        document.text(f"No INT8 model: {summary['refused']}")
        return
    document.table(
        ["", "FP32", "INT8"],
        [
            ["validation F1 (the budget's)", f1(summary["fp32_val_accuracy"]), f1(summary["int8_val_accuracy"])],
            ["test F1 (reported only)", f1(summary["fp32_test_accuracy"]), f1(summary["int8_test_accuracy"])],
            ["size (bytes)", f"{summary['fp32_bytes']:,}", f"{summary['int8_bytes']:,}"],
        ],
    )
    calibration = summary["calibration"]
    document.text(f"Calibration: {calibration['size']} training frames ({calibration['method']}).")

"""INT8 of a centroid detector: the classifiers' quantizer (``kd_edge.deploy.quantize``: pre-processing,
``quantize_static`` with the frame's nodes kept FP32, portable output), judged by F1 instead of accuracy.

1. calibrate on training frames (the validation frames choose and judge, the test frames are reported);
2. quantize, keeping ``--exclude`` nodes in FP32;
3. refuse (keeping the FP32 model) when INT8's F1 on validation, at the threshold in the card, is more than
   ``max_f1_drop`` below FP32's; score test once, for the report.

Whole frames are large (512x512): the per-node latency search and the closing latency comparison of
the classifiers' path are not run here; `kd-edge bench` times a frame of each form.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from kd_edge.errors import QuantizationError
from kd_edge.log import step
from kd_edge.runtime.card import write_card
from kd_edge.runtime.detections import pad_square
from kd_edge.runtime.session import OnnxModel
from kd_edge.settings.deploy import QuantizeSettings

CALIBRATION_FRAMES = 32  # whole frames: each holds 4,096 cells, so a few dozen cover the activations' ranges


def quantize_detector(source: Path, fp32: OnnxModel, config: QuantizeSettings, out: Path, data_dir: str | None):
    """Quantize the detector ``fp32`` (loaded from ``source``) to ``out``; the figures as a ``QuantizeResult``
    whose scores are F1 (``metric`` "f1")."""
    from kd_edge.deploy.quantize import QuantizeResult, preprocess_model, quantize_file
    from kd_edge.training.detect_run import detection_splits

    card, side = fp32.card, fp32.input_shape[1]
    step(f"quantize: reading the frames of {card.data.dataset}")
    root = Path(data_dir or card.data.dataset.removeprefix("yolo:"))
    splits = detection_splits(root, side, card.data.split, card.detection["seed"])
    train = splits["train"]
    picks = np.linspace(0, len(train) - 1, min(CALIBRATION_FRAMES, config.calibration_size, len(train))).astype(int)
    calibration = np.stack([pad_square(train[i].image, side) for i in sorted(set(picks))])
    excluded = list(config.exclude)
    fp32_val, fp32_test = (frames_f1(fp32, splits[name]) for name in ("val", "test"))
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize-") as scratch:
        prepared = preprocess_model(source, Path(scratch) / "prepared.onnx")
        candidate = Path(scratch) / out.name
        step(f"quantize: calibrating on {len(calibration)} training frames ({config.method})")
        quantize_file(prepared, candidate, config, fp32, calibration, excluded)
        int8 = OnnxModel(candidate)
        int8_val = frames_f1(int8, splits["val"])
        if fp32_val - int8_val > config.max_f1_drop:
            raise QuantizationError(
                f"INT8 loses {fp32_val - int8_val:.3f} F1 on the validation frames ({fp32_val:.3f} to {int8_val:.3f}), "
                f"more than --max-f1-drop {config.max_f1_drop}; the FP32 model is kept. Try --method entropy or "
                "--per-tensor, or keep nodes in FP32 with --exclude"
            )
        step("quantize: scoring FP32 and INT8 on the test frames (reported only)")
        int8_test = frames_f1(int8, splits["test"])
        quantization = {
            "mode": "static", "format": config.format, "per_channel": config.per_channel, "activation_type": "int8",
            "weight_type": "int8", "excluded_nodes": excluded,
            "f1_budget": {"split": "val", "max_drop": config.max_f1_drop, "drop": fp32_val - int8_val},
        }  # fmt: skip
        info = {"dataset": card.data.dataset, "split": "train", "size": len(calibration), "method": config.method}
        detection = {**card.detection, "test_f1": int8_test, "fp32_test_f1": fp32_test}
        write_card(candidate, replace(card, quantization=quantization, calibration=info, detection=detection))
        candidate.replace(out)
    return QuantizeResult(
        path=out, fp32_val_accuracy=fp32_val, int8_val_accuracy=int8_val, fp32_test_accuracy=fp32_test,
        int8_test_accuracy=int8_test, excluded_nodes=excluded, calibration=info, fp32_bytes=source.stat().st_size,
        int8_bytes=out.stat().st_size, metric="f1",
    )  # fmt: skip


def frames_f1(model: OnnxModel, scenes) -> float:
    """F1 over all objects of ``scenes``' whole frames, decoded at the card's threshold."""
    from kd_edge.training.detection_fit import score_scenes

    side = model.input_shape[1]
    logits = [model.logits(model.preprocess(pad_square(scene.image, side)[None]))[0] for scene in scenes]
    return score_scenes(logits, scenes, len(model.classes), model.card.detection["threshold"]).overall["f1"]

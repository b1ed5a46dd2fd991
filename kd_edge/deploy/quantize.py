"""INT8 post-training quantization with ONNX Runtime's quantizer: within an accuracy budget, fast in any ONNX Runtime.

    result = quantize("exports/student.onnx", QuantizeSettings(method="entropy"))

1. pre-process (shape inference and graph optimisation, ``quant_pre_process``);
2. calibrate on a class-stratified sample of the validation split (never test);
3. ``quantize_static`` (or ``quantize_dynamic``), the graph arranged so that it is fast in a
   plain ONNX Runtime session (``pool_before_relu``): nothing depends on options only kd-edge sets;
4. keep in FP32 the nodes whose INT8 form is measured to be slower (``search_latency``);
5. while the INT8 model's accuracy on the validation split is more than ``max_accuracy_drop``
   points below FP32's, keep in FP32 the node whose exclusion helps most; if nothing fits,
   refuse and keep the FP32 model. The test split is scored once, at the end, and only reported;
6. time FP32 and INT8 with `kd-edge bench`'s harness, so a slower INT8 model is never shipped unknowingly.

A detector (card task ``detect``) takes the same quantizer, calibrated on training frames and judged by F1
(``quantize_detector``, at the end of this file).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from kd_edge.data.dataset import Split
from kd_edge.deploy.portable import make_file_portable
from kd_edge.deploy.quantize_latency import LatencyComparison, compare_latency, search_latency
from kd_edge.errors import ConfigError, DatasetError, OutputError, QuantizationError
from kd_edge.interrupt import stop_if_requested
from kd_edge.io import ensure_writable_dir
from kd_edge.log import progress, quiet_third_party, step
from kd_edge.runtime.card import write_card
from kd_edge.runtime.detections import pad_square, score_frames
from kd_edge.runtime.session import OnnxModel
from kd_edge.settings.deploy import METHODS, QuantizeSettings

QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
MIN_CALIBRATION_PER_CLASS = 5


@dataclass(frozen=True, kw_only=True)
class QuantizeResult:
    path: Path
    fp32_val_accuracy: float  # the budget is kept on the validation split...
    int8_val_accuracy: float
    fp32_test_accuracy: float  # ...and the test split is only reported
    int8_test_accuracy: float
    excluded_nodes: list[str]
    calibration: dict
    latency_search: list[dict] = field(default_factory=list)  # every configuration timed, with its INT8/FP32 ratios
    latency: LatencyComparison | None = None  # None when compare_latency is off
    fp32_bytes: int
    int8_bytes: int
    metric: str = "accuracy"  # what the *_accuracy fields hold: top-1 accuracy, or F1 for a detector

    @property
    def val_drop_points(self) -> float:
        return 100 * (self.fp32_val_accuracy - self.int8_val_accuracy)

    @property
    def test_drop_points(self) -> float:
        return 100 * (self.fp32_test_accuracy - self.int8_test_accuracy)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "path": str(self.path),
            "val_drop_points": self.val_drop_points,
            "test_drop_points": self.test_drop_points,
        }


def default_output(model: Path) -> Path:
    return model.with_name(f"{model.stem}.int8.onnx")


def quantize(
    model,
    settings: QuantizeSettings | None = None,
    *,
    out=None,
    calibration: str | None = None,
    data_dir: str | None = None,
    force: bool = False,
) -> QuantizeResult:
    """Quantize ``model`` (an FP32 .onnx) to ``out`` (default: MODEL.int8.onnx), calibrated on the validation
    split of ``calibration`` (a dataset name; default: the one the model's card names)."""
    config = settings or QuantizeSettings()
    source = Path(model)
    fp32 = OnnxModel(source)  # proves it is a loadable, kd-edge-described model
    check_onnx(source)
    out = Path(out) if out else default_output(source)
    if out.exists() and not force:
        raise OutputError(f"{str(out)!r} already exists; pass --force to replace it or choose another --out")
    ensure_writable_dir(out.parent)
    if fp32.card.task == "detect":
        return quantize_detector(source, fp32, config, out, data_dir)
    step(f"quantize: loading the data of {source.name}")
    dataset = calibration_dataset(fp32, calibration, data_dir)
    calib_images, calib_info, val = calibration_sample(dataset, config.calibration_size, config.method_for("classify"))
    test = dataset.test
    fp32_val = fp32.accuracy(val.images, val.labels)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize-") as scratch:
        scratch = Path(scratch)
        step("quantize: pre-processing the graph (shape inference, ONNX Runtime's optimisations)")
        prepared = preprocess_model(source, scratch / "prepared.onnx")
        candidate = scratch / out.name

        def build(excluded: list[str]) -> OnnxModel:
            kept = f", {', '.join(excluded)} in FP32" if excluded else ""
            stop_if_requested(f"quantizing {out.name}{kept}")  # the scratch folder goes; out is written last
            progress(f"quantize: calibrating on {len(calib_images)} validation images ({calib_info['method']}){kept}")
            quantize_file(prepared, candidate, config, fp32, calib_images, excluded)
            return OnnxModel(candidate)

        excluded, search = list(config.exclude), []
        if config.optimize_latency:
            nodes = quantizable_nodes(prepared)
            excluded, search = search_latency(build, source, nodes, val.images, excluded, config.threads)
        int8_val = build(excluded).accuracy(val.images, val.labels)
        if 100 * (fp32_val - int8_val) > config.max_accuracy_drop:
            excluded, int8_val = fit_budget(build, prepared, val, fp32_val, excluded, config.max_accuracy_drop)
        int8 = build(excluded)
        step("quantize: scoring FP32 and INT8 on the test split (reported only)")
        fp32_test, int8_test = fp32.accuracy(test.images, test.labels), int8.accuracy(test.images, test.labels)
        quantization = {
            "mode": "dynamic" if config.dynamic else "static",
            "format": config.format,
            "per_channel": config.per_channel,
            "activation_type": "int8",
            "weight_type": "int8",
            "weight_qmax": config.weight_qmax,
            "excluded_nodes": excluded,
            "settings": made_with(config),
            "accuracy_budget": {
                "split": "val",
                "max_drop_points": config.max_accuracy_drop,
                "drop_points": 100 * (fp32_val - int8_val),
            },
        }
        card = replace(
            fp32.card,
            quantization=quantization,
            calibration=calib_info,
            fp32_test_accuracy=fp32_test,
            test_accuracy=int8_test,
        )
        write_card(candidate, card)
        candidate.replace(out)

    latency = compare_latency(source, out, val.images, config.threads) if config.compare_latency else None
    return QuantizeResult(
        path=out,
        fp32_val_accuracy=fp32_val,
        int8_val_accuracy=int8_val,
        fp32_test_accuracy=fp32_test,
        int8_test_accuracy=int8_test,
        excluded_nodes=excluded,
        calibration=calib_info,
        latency_search=search,
        latency=latency,
        fp32_bytes=source.stat().st_size,
        int8_bytes=out.stat().st_size,
    )


def made_with(config: QuantizeSettings) -> dict:
    """The settings that decide an INT8 model, as its card records them (JSON): `kd-edge bundle` reuses a run's
    INT8 model only when they are its own. Whether the latencies are compared at the end changes nothing."""
    settings = asdict(config)
    settings.pop("compare_latency")
    settings["exclude"] = list(settings["exclude"])
    return settings


def check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise QuantizationError(
            f"{str(path)!r} fails the ONNX checker ({str(exc).strip().splitlines()[0]}); re-export it with "
            "`kd-edge export`"
        ) from exc


def calibration_dataset(model: OnnxModel, calibration: str | None, data_dir: str | None):
    """``--calibration NAME``, or the dataset the model's card names (at the image size it was trained at)."""
    from kd_edge.data import load_data, load_dataset

    if calibration:
        dataset = load_dataset(calibration, data_dir, download=False)
    elif model.card.data is not None:
        dataset = load_data(model.card.data, data_dir)
    else:
        raise ConfigError(f"{str(model.path)!r} does not name its dataset; pass --calibration NAME")
    if tuple(dataset.input_shape) != tuple(model.input_shape):
        raise DatasetError(
            f"calibration data {dataset.name!r} has input {list(dataset.input_shape)} but {str(model.path)!r} "
            f"takes {list(model.input_shape)} (channels, height, width); calibrate with the dataset the model was "
            "trained on"
        )
    return dataset


def calibration_sample(dataset, size: int, method: str) -> tuple[np.ndarray, dict, Split]:
    """A class-stratified sample of the validation split (at most half of it), a record of it (size, method,
    index hash), and the rest of the split: the images that judge the accuracy budget, none of which the
    calibration has seen."""
    size = min(size, len(dataset.val) // 2)
    minimum = MIN_CALIBRATION_PER_CLASS * dataset.num_classes
    if size < minimum:
        raise QuantizationError(
            f"a calibration set of {size} images is too small to estimate activation ranges for "
            f"{dataset.num_classes} classes; use at least {minimum} (--calibration-size, and a validation split of "
            f"at least {2 * minimum}: half calibrates, half judges the accuracy budget)"
        )
    rng = np.random.default_rng(0)
    per_class = max(size // dataset.num_classes, 1)
    picks = [rng.permutation(np.flatnonzero(dataset.val.labels == c))[:per_class] for c in range(dataset.num_classes)]
    indices = np.sort(np.concatenate(picks))
    rest = np.setdiff1d(np.arange(len(dataset.val)), indices)
    info = {
        "dataset": dataset.name,
        "split": "val",
        "size": len(indices),
        "method": method,
        "indices_sha256": hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest(),
        "budget_images": len(rest),  # the rest of the split, which judges the accuracy budget
    }
    return dataset.val.images[indices], info, Split(dataset.val.images[rest], dataset.val.labels[rest])


def preprocess_model(source: Path, target: Path) -> Path:
    """Shape inference and ORT's graph optimisations (BatchNorm folding, fusions) before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    return target


class ImageReader(CalibrationDataReader):
    """ONNX Runtime's calibration reader over preprocessed images, in batches."""

    def __init__(self, model: OnnxModel, images: np.ndarray, max_batch: int = 64):
        # All batches the same size: the entropy and percentile calibrators stack them.
        batch_size = max(size for size in range(1, max_batch + 1) if len(images) % size == 0)
        self.batches = [
            {model.input_name: model.preprocess(images[i : i + batch_size])} for i in range(0, len(images), batch_size)
        ]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self):
        self.position = 0


def quantize_file(
    prepared: Path,
    target: Path,
    config: QuantizeSettings,
    fp32: OnnxModel,
    calib_images: np.ndarray,
    excluded: list[str],
) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with quiet_third_party():  # the calibrators print histograms; --verbose shows them
        if config.dynamic:
            quantize_dynamic(
                str(prepared),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                nodes_to_exclude=excluded,
            )
        else:
            graph = onnx.load(str(prepared))
            quantize_static(
                pool_before_relu(graph, set(excluded)),
                str(target),
                ImageReader(fp32, calib_images),
                quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[config.method_for(fp32.card.task)],
                nodes_to_exclude=[*excluded, *frame_nodes(graph)],
            )
    make_file_portable(target)  # what is timed and scored here is what an older runtime loads


def pool_before_relu(model, fp32_nodes: set[str]):
    """Rewrite ``node -> Relu -> MaxPool`` as ``node -> MaxPool -> Relu`` where ``node`` stays FP32.

    The two orders compute the same values (max commutes with any non-decreasing
    function), but they quantize differently. With the pool last, the QuantizeLinear
    in front of the next INT8 node follows a MaxPool, and ONNX Runtime's QDQ
    propagation (on in every default session) moves it above the pool: the pool then
    runs in INT8 on an NCHW tensor, which took 3.2 ms against 0.2 ms in FP32 for a
    28x28x16 batch of 64 here (benchmarks/RESULTS.md). With the Relu last, nothing can
    move, the pool runs in FP32, and ONNX Runtime folds the Relu into the quantization.
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    graph_outputs = {output.name for output in model.graph.output}
    nodes = list(model.graph.node)
    for pool in [n for n in nodes if n.op_type == "MaxPool" and len(n.output) == 1]:
        relu = producers.get(pool.input[0])
        if relu is None or relu.op_type != "Relu" or consumers[relu.output[0]] != 1 or relu.output[0] in graph_outputs:
            continue
        source = producers.get(relu.input[0])
        if source is None or source.name not in fp32_nodes:
            continue
        pooled = pool.output[0]
        pool.input[0], pool.output[0] = relu.input[0], f"{pooled}_before_relu"
        relu.input[0], relu.output[0] = pool.output[0], pooled
        i, j = nodes.index(relu), nodes.index(pool)
        nodes[i], nodes[j] = nodes[j], nodes[i]  # keeps the node list in topological order
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def frame_nodes(model) -> list[str]:
    """The nodes between the uint8 frame and the first Conv, Gemm or MatMul (cast, layout, channel order,
    normalisation): left in FP32, so that no quantization pair sits on raw pixels; the first quantizable node
    quantizes its own input."""
    frame = {model.graph.input[0].name}
    names = []
    for node in model.graph.node:  # topological order
        if node.op_type in QUANTIZABLE_OPS or not frame.intersection(node.input):
            continue
        names.append(node.name)
        frame.update(node.output)
    return names


def quantizable_nodes(prepared: Path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type in QUANTIZABLE_OPS]


def fit_budget(build, prepared: Path, val, fp32_val: float, excluded: list[str], budget: float):
    """Greedily keep in FP32 the node whose exclusion most raises validation accuracy, until the drop fits."""
    candidates = [name for name in quantizable_nodes(prepared) if name not in excluded]
    int8_val = build(excluded).accuracy(val.images, val.labels)
    while candidates:
        step(
            f"quantize: {100 * (fp32_val - int8_val):.2f} points over the budget; trying each of {len(candidates)} "
            "nodes in FP32"
        )
        scores = {name: build([*excluded, name]).accuracy(val.images, val.labels) for name in candidates}
        best = max(scores, key=scores.get)
        excluded, int8_val = [*excluded, best], scores[best]
        candidates.remove(best)
        if 100 * (fp32_val - int8_val) <= budget:
            return excluded, int8_val
    kept = "all of them" if not candidates else "every one tried"
    raise QuantizationError(
        f"no INT8 model stays within --max-accuracy-drop {budget:g} points: with {len(excluded)} quantizable "
        f"node(s) kept in FP32 ({kept}) the drop on the validation split is {100 * (fp32_val - int8_val):.2f} "
        f"points (FP32 {fp32_val:.2%}). The FP32 model is kept and nothing was written; raise the budget, "
        "calibrate with more images, or try --method entropy."
    )


# --- a centroid detector: the same quantizer, judged by F1 on whole frames ------------------------------------
#
# Calibrated on training frames (validation chooses and judges, test is reported); INT8 is refused, keeping
# the FP32 model, when its F1 on the validation frames at the card's threshold is more than max_f1_drop below
# FP32's. Whole frames are large (512x512): the per-node latency search and the closing latency comparison
# are not run; `kd-edge bench` times a frame of each form.

CALIBRATION_FRAMES = 32  # whole frames: each holds 4,096 cells, so a few dozen cover the activations' ranges


def quantize_detector(source: Path, fp32: OnnxModel, config: QuantizeSettings, out: Path, data_dir: str | None):
    """Quantize the detector ``fp32`` (loaded from ``source``) to ``out``; the figures as a ``QuantizeResult``
    whose scores are F1 (``metric`` "f1")."""
    from kd_edge.data.yolo import card_splits

    card, side, method = fp32.card, fp32.input_shape[1], config.method_for("detect")
    step(f"quantize: reading the frames of {card.data.dataset}")
    splits = card_splits(card, data_dir)
    train = splits["train"]
    picks = np.linspace(0, len(train) - 1, min(CALIBRATION_FRAMES, config.calibration_size, len(train))).astype(int)
    calibration = np.stack([pad_square(train[i].image, side) for i in sorted(set(picks))])
    excluded = list(config.exclude)
    fp32_val, fp32_test = (frames_f1(fp32, splits[name]) for name in ("val", "test"))
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize-") as scratch:
        prepared = preprocess_model(source, Path(scratch) / "prepared.onnx")
        candidate = Path(scratch) / out.name
        step(f"quantize: calibrating on {len(calibration)} training frames ({method})")
        quantize_file(prepared, candidate, config, fp32, calibration, excluded)
        int8 = OnnxModel(candidate)
        int8_val = frames_f1(int8, splits["val"])
        if fp32_val - int8_val > config.max_f1_drop:
            raise QuantizationError(
                f"INT8 loses {fp32_val - int8_val:.3f} F1 on the validation frames ({fp32_val:.3f} to {int8_val:.3f}), "
                f"more than --max-f1-drop {config.max_f1_drop}; the FP32 model is kept (calibrated with {method}). "
                f"Try --method {' or '.join(m for m in METHODS if m not in ('auto', method))}, or --per-tensor, or "
                "keep nodes in FP32 with --exclude"
            )
        step("quantize: scoring FP32 and INT8 on the test frames (reported only)")
        int8_test = frames_f1(int8, splits["test"])
        quantization = {
            "mode": "static", "format": config.format, "per_channel": config.per_channel, "activation_type": "int8",
            "weight_type": "int8", "excluded_nodes": excluded, "settings": made_with(config),
            "f1_budget": {"split": "val", "max_drop": config.max_f1_drop, "drop": fp32_val - int8_val},
        }  # fmt: skip
        info = {
            "dataset": card.data.dataset,
            "split": "train",
            "size": len(calibration),
            "method": method,
        }
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
    side, rule = model.input_shape[1], model.card.detection
    logits = [model.logits(model.preprocess(pad_square(scene.image, side)[None]))[0] for scene in scenes]
    return score_frames(logits, scenes, model.classes, rule["threshold"], rule["stride"]).overall["f1"]

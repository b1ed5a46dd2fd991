"""INT8 post-training quantization with ONNX Runtime's quantizer, under an accuracy budget.

    result = quantize(QuantizeConfig(model="exports/student.onnx"))

1. pre-process (shape inference and graph optimisation, ``quant_pre_process``);
2. calibrate on a class-stratified sample of the validation split (never test);
3. ``quantize_static`` (or ``quantize_dynamic``);
4. compare FP32 and INT8 accuracy on the test split; while the drop exceeds
   ``max_accuracy_drop`` points, keep in FP32 the node whose exclusion helps most,
   measured on the validation split; if nothing fits, refuse and keep the FP32 model;
5. time FP32 and INT8 side by side, so a slower INT8 model is never shipped unknowingly.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from kd_edge.errors import ConfigError, DatasetError, OutputError, QuantizationError
from kd_edge.io import ensure_writable_dir
from kd_edge.runtime.card import write_card
from kd_edge.runtime.session import OnnxModel

METHODS = ("minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
MODES = ("static", "dynamic")
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
MIN_CALIBRATION_PER_CLASS = 5


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig:
    """Options of ``kd-edge quantize``; ``max_accuracy_drop`` is in percentage points.

    ``calibration`` names the dataset (default: the one in the model's card);
    ``compare_latency`` times FP32 against INT8 at the end (a dozen benchmark processes).
    """

    model: str
    out: str | None = None
    calibration: str | None = None
    data_dir: str | None = None
    calibration_size: int = 500
    method: str = "minmax"
    per_channel: bool = True
    format: str = "qdq"
    mode: str = "static"
    max_accuracy_drop: float = 0.5
    exclude: tuple[str, ...] = ()
    optimize_latency: bool = True
    compare_latency: bool = True
    latency_threads: int = 2
    force: bool = False

    def __post_init__(self):
        for name, value, choices in (("method", self.method, METHODS), ("format", self.format, FORMATS), ("mode", self.mode, MODES)):
            if value not in choices:
                raise ConfigError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.calibration_size < 1:
            raise ConfigError(f"--calibration-size must be positive, got {self.calibration_size}")
        if self.max_accuracy_drop < 0:
            raise ConfigError(f"--max-accuracy-drop is in points and cannot be negative, got {self.max_accuracy_drop}")
        if self.latency_threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.latency_threads}")


@dataclass(frozen=True, kw_only=True)
class LatencyComparison:
    """Median latency (ms) of the FP32 and INT8 models per batch size, from `kd-edge bench`'s harness."""

    threads: int
    fp32_ms: dict[int, float]
    int8_ms: dict[int, float]

    def slower_batches(self) -> list[int]:
        """Batch sizes at which the INT8 model is slower than FP32."""
        return [batch for batch in self.fp32_ms if self.int8_ms[batch] > self.fp32_ms[batch]]


@dataclass(frozen=True, kw_only=True)
class QuantizeResult:
    path: Path
    fp32_accuracy: float
    int8_accuracy: float
    excluded_nodes: list[str]
    calibration: dict
    disabled_optimizers: list[str] = field(default_factory=list)
    latency_search: list[dict] = field(default_factory=list)  # every configuration timed, with its INT8/FP32 ratios
    latency: LatencyComparison | None = None  # None when compare_latency is off
    fp32_bytes: int
    int8_bytes: int

    @property
    def accuracy_drop_points(self) -> float:
        return 100 * (self.fp32_accuracy - self.int8_accuracy)

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path), "accuracy_drop_points": self.accuracy_drop_points}


def default_output(model: Path) -> Path:
    return model.with_name(f"{model.stem}.int8.onnx")


def quantize(config: QuantizeConfig) -> QuantizeResult:
    source = Path(config.model)
    fp32 = OnnxModel(source)  # proves it is a loadable, kd-edge-described model
    check_onnx(source)
    out = Path(config.out) if config.out else default_output(source)
    if out.exists() and not config.force:
        raise OutputError(f"{str(out)!r} already exists; pass --force to replace it or choose another --out")
    ensure_writable_dir(out.parent)
    dataset = calibration_dataset(config, fp32)
    calib_images, calib_info = calibration_sample(dataset, config.calibration_size, config.method)
    fp32_test = fp32.accuracy(dataset.test.images, dataset.test.labels)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize-") as scratch:
        scratch = Path(scratch)
        prepared = preprocess_model(source, scratch / "prepared.onnx")
        candidate = scratch / out.name

        def build(excluded: list[str]) -> OnnxModel:
            quantize_file(prepared, candidate, config, fp32, calib_images, excluded)
            return OnnxModel(candidate)

        excluded, disabled, search = list(config.exclude), [], []
        if config.optimize_latency:
            excluded, disabled, search = search_latency(build, source, prepared, dataset.val.images, excluded, config.latency_threads)
        int8_test = build(excluded).accuracy(dataset.test.images, dataset.test.labels)
        if 100 * (fp32_test - int8_test) > config.max_accuracy_drop:
            excluded, int8_test = fit_budget(build, prepared, dataset, fp32, fp32_test, excluded, config.max_accuracy_drop)
        build(excluded)
        quantization = {"mode": config.mode, "format": config.format, "per_channel": config.per_channel, "activation_type": "int8", "weight_type": "int8", "excluded_nodes": excluded}
        card = replace(fp32.card, quantization=quantization, calibration=calib_info, fp32_test_accuracy=fp32_test, test_accuracy=int8_test, ort_disabled_optimizers=disabled)
        write_card(candidate, card)
        candidate.replace(out)

    latency = compare_latency(source, out, dataset.val.images, config.latency_threads) if config.compare_latency else None
    return QuantizeResult(
        path=out, fp32_accuracy=fp32_test, int8_accuracy=int8_test, excluded_nodes=excluded, calibration=calib_info,
        disabled_optimizers=disabled, latency_search=search, latency=latency, fp32_bytes=source.stat().st_size, int8_bytes=out.stat().st_size,
    )


# ONNX Runtime moves QuantizeLinear nodes up through MaxPool (QDQ propagation). After an
# FP32 convolution that turns a fast FP32 max-pool into a slow INT8 one on an NCHW tensor,
# so the latency search also times each candidate with this optimiser disabled.
QDQ_PROPAGATION = "QDQPropagationTransformer"
SPEEDUP_TO_ACCEPT = 0.90  # a node stays FP32 only if that cuts latency by 10 %: timing noise here reaches 5 %


def search_latency(build, fp32_path: Path, prepared: Path, images: np.ndarray, excluded: list[str], threads: int):
    """Keep in FP32 the nodes whose INT8 version costs more than it saves, measured, not guessed.

    Each candidate (a set of FP32 nodes, with or without QDQ propagation) is timed
    against the FP32 model in alternating rounds at batch 1 and 64; its score is the
    geometric mean of the two INT8/FP32 latency ratios. Greedily adds the node whose
    exclusion lowers the score most, while that gains at least 10 % in two separate
    measurements.
    """
    search = []

    def score(nodes: list[str]) -> tuple[float, list[str]]:
        model_path = build(nodes).path
        best = None
        for disabled in ([], [QDQ_PROPAGATION]):
            ratios = latency_ratios(fp32_path, model_path, disabled, images, threads)
            value = float(np.sqrt(ratios["batch1"] * ratios["batch64"]))
            search.append({"fp32_nodes": list(nodes), "disabled_optimizers": disabled, **ratios, "score": value})
            if best is None or value < best[0]:
                best = (value, disabled)
        return best

    current, disabled = score(excluded)
    candidates = [name for name in quantizable_nodes(prepared) if name not in excluded]
    while candidates:
        trials = {name: score(excluded + [name]) for name in candidates}
        name = min(trials, key=lambda n: trials[n][0])
        if trials[name][0] > current * SPEEDUP_TO_ACCEPT:
            break
        # Confirm with a fresh measurement of both, so that one noisy reading does not
        # keep a node (and its weights) in FP32 for nothing.
        again, again_current = score(excluded + [name]), score(excluded)
        if again[0] > again_current[0] * SPEEDUP_TO_ACCEPT:
            current, disabled = again_current  # the freshest reading of what is kept
            break
        excluded, (current, disabled) = excluded + [name], again
        candidates.remove(name)
    return excluded, disabled, search


def latency_ratios(fp32_path: Path, int8_path: Path, disabled: list[str], images: np.ndarray, threads: int) -> dict:
    from kd_edge.runtime.harness import interleaved_latency_ms

    # Spinning off: two sessions in one process, each idle while the other is timed.
    models = {"fp32": OnnxModel(fp32_path, threads, spinning=False), "int8": OnnxModel(int8_path, threads, disabled, spinning=False)}
    batch1 = interleaved_latency_ms(models, images[:1], runs=2000)
    batch64 = interleaved_latency_ms(models, images[:64], runs=200)
    return {"batch1": batch1["int8"] / batch1["fp32"], "batch64": batch64["int8"] / batch64["fp32"]}


def check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise QuantizationError(f"{str(path)!r} fails the ONNX checker ({str(exc).strip().splitlines()[0]}); re-export it with `kd-edge export`") from exc


def calibration_dataset(config: QuantizeConfig, model: OnnxModel):
    """``--calibration NAME``, or the dataset the model's card names (at the image size it was trained at)."""
    from kd_edge.data import load_data, load_dataset

    if config.calibration:
        dataset = load_dataset(config.calibration, config.data_dir, download=False)
    elif model.card.data is not None:
        dataset = load_data(model.card.data, config.data_dir)
    else:
        raise ConfigError(f"{str(model.path)!r} does not name its dataset; pass --calibration NAME")
    if tuple(dataset.input_shape) != tuple(model.input_shape):
        raise DatasetError(
            f"calibration data {dataset.name!r} has input {list(dataset.input_shape)} but {str(model.path)!r} "
            f"takes {list(model.input_shape)} (channels, height, width); calibrate with the dataset the model was trained on"
        )
    return dataset


def calibration_sample(dataset, size: int, method: str) -> tuple[np.ndarray, dict]:
    """A class-stratified sample of the validation split, and a record of it (size, method, index hash)."""
    minimum = MIN_CALIBRATION_PER_CLASS * dataset.num_classes
    if size < minimum or len(dataset.val) < minimum:
        raise QuantizationError(
            f"a calibration set of {min(size, len(dataset.val))} images is too small to estimate activation ranges "
            f"for {dataset.num_classes} classes; use at least {minimum} (--calibration-size, and a validation split that large)"
        )
    rng = np.random.default_rng(0)
    per_class = max(size // dataset.num_classes, 1)
    picks = [rng.permutation(np.flatnonzero(dataset.val.labels == c))[:per_class] for c in range(dataset.num_classes)]
    indices = np.sort(np.concatenate(picks))
    info = {
        "dataset": dataset.name,
        "split": "val",
        "size": int(len(indices)),
        "method": method,
        "indices_sha256": hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest(),
    }
    return dataset.val.images[indices], info


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
        self.batches = [{model.input_name: model.preprocess(images[i : i + batch_size])} for i in range(0, len(images), batch_size)]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self):
        self.position = 0


def quantize_file(prepared: Path, target: Path, config: QuantizeConfig, fp32: OnnxModel, calib_images: np.ndarray, excluded: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if config.mode == "dynamic":
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=config.per_channel, nodes_to_exclude=excluded)
        return
    reader = ImageReader(fp32, calib_images)
    quantize_static(
        str(prepared),
        str(target),
        reader,
        quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
        per_channel=config.per_channel,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[config.method],
        nodes_to_exclude=excluded,
    )


def quantizable_nodes(prepared: Path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type in QUANTIZABLE_OPS]


def fit_budget(build, prepared: Path, dataset, fp32: OnnxModel, fp32_test: float, excluded: list[str], budget: float):
    """Greedily keep in FP32 the node whose exclusion most raises validation accuracy, until the test drop fits."""
    fp32_val = fp32.accuracy(dataset.val.images, dataset.val.labels)
    candidates = [name for name in quantizable_nodes(prepared) if name not in excluded]
    while candidates:
        scores = {name: build(excluded + [name]).accuracy(dataset.val.images, dataset.val.labels) for name in candidates}
        best = max(scores, key=scores.get)
        excluded = excluded + [best]
        candidates.remove(best)
        int8_test = build(excluded).accuracy(dataset.test.images, dataset.test.labels)
        if 100 * (fp32_test - int8_test) <= budget:
            return excluded, int8_test
    raise QuantizationError(
        f"no INT8 model stays within --max-accuracy-drop {budget:g} points: even with every quantizable node "
        f"kept in FP32 the drop is {100 * (fp32_test - int8_test):.2f} points (FP32 validation accuracy "
        f"{fp32_val:.2%}). The FP32 model is kept and nothing was written; raise the budget, "
        "calibrate with more images, or try --method entropy."
    )


def compare_latency(fp32: Path, int8: Path, images: np.ndarray, threads: int) -> LatencyComparison:
    """Median batch-1 and batch-64 latency of both models, measured by `kd-edge bench`'s harness:
    each measurement in a fresh process, the two models alternating over three rounds."""
    from kd_edge.runtime.harness import BenchConfig, run_benchmark

    config = BenchConfig(models=(str(fp32), str(int8)), threads=(threads,), batch_sizes=(1, 64), warmup=20, runs=600, rounds=3)
    report = run_benchmark(config, images=images[:64])
    return LatencyComparison(
        threads=threads,
        fp32_ms={batch: report.p50_ms(str(fp32), batch) for batch in (1, 64)},
        int8_ms={batch: report.p50_ms(str(int8), batch) for batch in (1, 64)},
    )

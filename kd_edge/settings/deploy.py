"""From a trained network to what a board runs: export, INT8, QAT, the bundle, the aarch64 check."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kd_edge.settings.fields import check_choices, knob, require
from kd_edge.settings.parse import name_list
from kd_edge.settings.training import RunSettings

EXPORTERS = {
    "dynamo": "torch.onnx dynamo exporter (torch.export, dynamo=True)",
    "torchscript": "torch.onnx TorchScript exporter (dynamo=False)",
}
DEFAULT_EXPORTER = "dynamo"
# The dynamo exporter implements opset 18 and later; converting its graph down to 17 fails
# for models with a global average pool (ReduceMean's axes became an input in opset 18).
DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}
INPUT_LAYOUTS = ("nhwc", "nchw")
ORDERS = ("rgb", "bgr")
METHODS = ("auto", "minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
FORMS = ("auto", "int8", "fp32")
CPUS = ("cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1")


@dataclass(frozen=True, kw_only=True)
class ExportSettings:
    exporter: str | None = knob(
        None,
        "dynamo (torch.export, PyTorch's maintained exporter, opset 18) or torchscript (deprecated by torch, "
        "opset 17).",
        none="dynamo, falling back to torchscript for a model torch.export cannot capture",
        choices=tuple(EXPORTERS),
    )
    opset: int | None = knob(
        None, "ONNX opset; both exporters' files load in ONNX Runtime 1.16+", none="18 with dynamo, 17 with torchscript"
    )
    input_layout: str = knob(
        "nhwc",
        "How the model takes the camera frame's uint8 pixels: nhwc (as cameras and image libraries give them) or "
        "nchw; normalisation happens inside the graph.",
        choices=INPUT_LAYOUTS,
    )
    channel_order: str = knob(
        "rgb", "Channel order of a colour frame (bgr: as OpenCV gives it); grey models ignore it.", choices=ORDERS
    )

    def __post_init__(self):
        check_choices(self)
        dynamo = (self.exporter or DEFAULT_EXPORTER) == "dynamo"
        require(
            self.opset is None or not dynamo or self.opset >= DEFAULT_OPSET["dynamo"],
            f"the dynamo exporter writes opset {DEFAULT_OPSET['dynamo']} or later, not {self.opset}; pass --opset 18 "
            "(ONNX Runtime 1.16 and later load it) or --exporter torchscript for opset 17 and below",
        )


@dataclass(frozen=True, kw_only=True)
class QuantizeSettings:
    """ONNX Runtime's INT8 quantizer, within an accuracy budget (in points on the validation split)."""

    calibration_size: int = knob(500, "Validation images used for calibration, stratified by class.")
    method: str = knob(
        "auto",
        "Calibration method. auto: minmax for a classifier, percentile for a detector (on aerial-cars, minmax missed "
        "the F1 budget for one of two students, percentile met it for both).",
        choices=METHODS,
    )
    per_channel: bool = knob(True, "Weight scales per output channel (or per tensor).", negative="--per-tensor")
    format: str = knob(
        "qdq", "qdq (QuantizeLinear/DequantizeLinear pairs) or qoperator (QLinearConv...).", choices=FORMATS
    )
    dynamic: bool = knob(
        False, "Dynamic quantization (weights only, activations at run time) instead of static.", negative="--static"
    )
    max_accuracy_drop: float = knob(
        0.5, "Largest accuracy drop allowed on the validation split, in points; nodes stay FP32 until it fits."
    )
    max_f1_drop: float = knob(
        0.02, "A detector's largest F1 drop allowed on the validation frames (0-1); INT8 is refused beyond it."
    )
    exclude: tuple[str, ...] = knob((), "Node names to keep in FP32 from the start (repeatable).", none="none")
    reduce_range: bool = knob(
        True,
        "7-bit INT8 weights, so that x86 CPUs without VNNI (AVX2) compute what an ARM board does; --full-range "
        "uses all 8 bits where only VNNI and ARM hosts matter.",
        negative="--full-range",
    )
    optimize_latency: bool = knob(
        False,
        "Also keep in FP32 the nodes whose INT8 version is measured to be slower (a timing search: its answer can "
        "change with the machine's load; off, the excluded nodes depend only on the accuracy budget).",
    )
    compare_latency: bool = knob(True, "Time FP32 against INT8 at the end (a fresh process per measurement).")
    threads: int = knob(2, "Threads for the FP32-against-INT8 latency comparisons.")

    def __post_init__(self):
        check_choices(self)
        require(self.calibration_size >= 1, f"--calibration-size must be positive, got {self.calibration_size}")
        require(
            self.max_accuracy_drop >= 0,
            f"--max-accuracy-drop is in points and cannot be negative, got {self.max_accuracy_drop}",
        )
        require(self.threads >= 1, f"--threads must be at least 1, got {self.threads}")
        require(0 <= self.max_f1_drop <= 1, f"--max-f1-drop is an F1 difference in [0, 1], got {self.max_f1_drop}")

    def method_for(self, task: str) -> str:
        """The calibration method for a model of ``task`` (classify or detect): ``auto`` resolved."""
        if self.method != "auto":
            return self.method
        return "percentile" if task == "detect" else "minmax"

    @property
    def weight_qmax(self) -> int:
        """The largest INT8 weight step ONNX Runtime's symmetric weights use: scale = max|w| / this."""
        return 64 if self.reduce_range else 127


@dataclass(frozen=True, kw_only=True)
class QATSettings:
    """Quantization-aware fine-tuning of a distilled student, then ONNX Runtime's quantizer."""

    epochs: int = knob(2, "Fine-tuning epochs with fake quantization.", short="-e")
    lr: float = knob(5e-4, "Peak learning rate (cosine schedule).")
    batch_size: int = knob(256, "Fine-tuning batch size.")
    run: RunSettings = field(default_factory=RunSettings)
    quantize: QuantizeSettings = field(default_factory=QuantizeSettings)

    def __post_init__(self):
        require(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True, kw_only=True)
class BundleSettings:
    """What a bundle ships and for which board. With ``form`` auto, INT8 ships unless it is slower than FP32
    beyond the timing noise on the board (projected from this host's timings), at its thread count and batch size
    (the rule is in model.json)."""

    form: str = knob(
        "auto",
        "auto: quantize, time both forms, ship INT8 unless it is slower on the board (projected) beyond the noise; "
        "int8: ship INT8 (it must meet its accuracy budget), untimed; fp32: ship FP32, no quantization.",
        choices=FORMS,
    )
    profile: str = knob(
        "rpi4", "The board (`kd-edge profiles`): its cores set the timing's threads; `kd-edge bench BUNDLE` uses it."
    )
    threads: int | None = knob(
        None,
        "Threads the forms are compared at (on a board, projected).",
        none="the profile's cores (host: this host's)",
    )
    batch_size: int = knob(1, "Batch size the forms are timed at (a drone classifies frame by frame).")
    rounds: int = knob(15, "Interleaved timing rounds; each times both forms, each in a fresh process.")
    samples: int = knob(
        300,
        "Labelled test images in samples.npz, the same number per class (a detector's: whole test frames, at most 8).",
    )

    def __post_init__(self):
        check_choices(self)
        require(self.samples >= 1, f"--samples must be at least 1, got {self.samples}")
        require(self.threads is None or self.threads >= 1, f"--threads must be at least 1, got {self.threads}")
        require(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        require(self.rounds >= 5, f"--rounds must be at least 5 for a confidence bound, got {self.rounds}")


@dataclass(frozen=True, kw_only=True)
class DeploySettings:
    """From a checkpoint, a run folder or an ONNX model to a bundle: export, quantize, bundle.

    Where a bundle is written, the quantizer's own latency comparison is skipped: the bundle compares the
    two forms itself (``bundle.form``).
    """

    export: ExportSettings = field(default_factory=ExportSettings)
    quantize: QuantizeSettings = field(default_factory=QuantizeSettings)
    bundle: BundleSettings = field(default_factory=BundleSettings)


@dataclass(frozen=True, kw_only=True)
class ArmSettings:
    cpus: tuple[str, ...] = knob(CPUS, "Emulated CPUs, comma-separated.", parse=name_list)
    onnxruntime: tuple[str, ...] | None = knob(
        None,
        "ONNX Runtime releases to verify on, as the board has them (repeatable, 1.16 or later); the oldest that "
        "passes is recorded in a bundle's model.json.",
        none="this host's release",
    )
    samples: int = knob(300, "At most this many labelled samples are compared.")

    def __post_init__(self):
        unknown = [cpu for cpu in self.cpus if cpu not in CPUS]
        require(
            not unknown and bool(self.cpus), f"--cpu {','.join(unknown) or '(none)'}: choose from {', '.join(CPUS)}"
        )
        require(self.samples >= 1, f"--samples must be at least 1, got {self.samples}")
        bad = [v for v in self.onnxruntime or () if not re.fullmatch(r"\d+\.\d+(\.\d+)?", v)]
        require(not bad, f"--onnxruntime {', '.join(bad)}: give release numbers such as 1.16.3")

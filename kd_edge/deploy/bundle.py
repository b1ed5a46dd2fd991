"""The bundle stage: one self-describing folder (and .tar.gz) for the board.

    result = write_bundle("bundle", fp32=Path("exports/s.onnx"), int8=Path("exports/s.int8.onnx"))

The deployable model is the INT8 one when it met its accuracy budget (``kd-edge
quantize`` refuses otherwise) and is not slower than FP32 beyond the timing noise at
the board's own setting (``kd_edge.deploy.form_choice``, the rule and its verdict recorded in
``model.json``, the timings beside the bundle in ``OUT.form-timing.json``: a bundle made twice is one
archive); ``--form`` lets the user decide instead. The folder layout is in ``kd_edge.runtime.bundle_files``.

Torch-free: this stage needs numpy, onnxruntime (and onnx to write nothing: the
models are copied as they are).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd_edge import __version__
from kd_edge.deploy.board_wheel import write_wheel
from kd_edge.deploy.form_choice import FormDecision, decide_form
from kd_edge.errors import ConfigError, OutputError
from kd_edge.interrupt import stop_if_requested
from kd_edge.io import atomic_write, ensure_writable_dir
from kd_edge.log import step
from kd_edge.runtime.bundle_files import (
    CARD_FILE,
    CONSUMER_FILE,
    CONSUMER_SOURCE,
    MODEL_FILE,
    OTHER_FORM_FILES,
    README_FILE,
    SAMPLES_FILE,
    SUMS_FILE,
    checksums_text,
    file_sha256,
    write_archive,
)
from kd_edge.runtime.samples import labelled_samples
from kd_edge.runtime.session import OnnxModel
from kd_edge.settings.deploy import BundleSettings

BUNDLE_FORMAT = "kd-edge-bundle"
BUNDLE_FORMAT_VERSION = 1
TIMINGS_SUFFIX = ".form-timing.json"  # beside the folder and its archive, never in them


@dataclass(frozen=True, kw_only=True)
class BundleResult:
    folder: Path
    archive: Path
    decision: FormDecision  # how the form was chosen: the timing and the rule, when it was timed
    timings: Path | None = None  # the decision's timings, beside the bundle, where they were measured

    @property
    def form(self) -> str:
        """What model.onnx is: "int8" or "fp32"."""
        return self.decision.form

    @property
    def reason(self) -> str:
        """The verdict and the measurements behind it."""
        return self.decision.explanation


def write_bundle(
    out,
    settings: BundleSettings | None = None,
    *,
    fp32: Path | None,
    int8: Path | None,
    int8_refused: str | None = None,
    chosen: FormDecision | None = None,
    data_dir: str | None = None,
    force: bool = False,
) -> BundleResult:
    """Choose the deployable form, then write the folder ``out`` and its archive (replaced only with ``force``).

    With both models and ``form`` auto, INT8 ships unless it is slower than FP32 beyond the noise (``decide_form``);
    with one model, that one. ``chosen`` is a decision the caller measured already (``kd-edge search``).
    The samples come from the test split of the model's dataset (``data_dir`` overrides its folder).
    """
    from kd_edge.runtime.bench.profiles import get_profile

    config = settings or BundleSettings()
    get_profile(config.profile)  # an unknown board is refused before any work
    out, archive, timings = check_outputs(out, force)
    models = {name: OnnxModel(path) for name, path in (("fp32", fp32), ("int8", int8)) if path is not None}
    if not models:
        raise ConfigError("a bundle needs a model: give an FP32 or an INT8 .onnx")
    first = next(iter(models.values()))
    step(f"bundle: sampling labelled test {'frames' if first.card.task == 'detect' else 'images'}")
    samples = labelled_samples(first, config.samples, data_dir)
    decision = choose(config, models, samples["images"], int8_refused, chosen)
    stop_if_requested(f"writing the bundle {out}")  # the wheel and the archive take seconds: not after a signal
    form = decision.form
    deployable = models[form]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as scratch:
        folder = Path(scratch) / out.name
        folder.mkdir()
        shutil.copyfile(deployable.path, folder / MODEL_FILE)
        others = []
        for other, model in models.items():
            if other != form:
                shutil.copyfile(model.path, folder / OTHER_FORM_FILES[other])
                others.append({"file": OTHER_FORM_FILES[other], "form": other, **test_score(model.card)})
        np.savez_compressed(folder / SAMPLES_FILE, **samples)
        write_wheel(folder)  # what the board installs kd-edge from, offline
        shutil.copyfile(CONSUMER_SOURCE, folder / CONSUMER_FILE)  # what a board without Python builds
        info = bundle_info(folder, decision, config.profile, others, samples_info(deployable.card, samples))
        # The folder is a scratch one, moved into place whole below: plain writes are safe here.
        (folder / CARD_FILE).write_text(json.dumps({**deployable.card.to_dict(), "bundle": info}, indent=2) + "\n")
        (folder / README_FILE).write_text(board_readme(out.name, deployable.card, info))
        (folder / SUMS_FILE).write_text(checksums_text(folder, [p.name for p in folder.iterdir()]))
        if out.exists():
            shutil.rmtree(out)
        folder.replace(out)
    write_archive(out, archive)
    write_timings(timings, decision)
    return BundleResult(folder=out, archive=archive, decision=decision, timings=timings if decision.timed else None)


def write_timings(path: Path, decision: FormDecision) -> None:
    """The timed decision's measurements, beside the bundle; an earlier bundle's (under --force) goes, so that no
    file beside this bundle speaks of another."""
    if decision.timed:
        text = json.dumps({**decision.to_dict(), "method": TIMING_METHOD}, indent=2) + "\n"
        atomic_write(path, lambda handle: handle.write(text.encode()))
    else:
        path.unlink(missing_ok=True)


def check_outputs(out, force: bool) -> tuple[Path, Path, Path]:
    """The bundle folder, archive and timings paths, refused now (before any work) when they exist and --force is
    not given."""
    out = Path(out)
    archive, timings = (out.with_name(out.name + suffix) for suffix in (".tar.gz", TIMINGS_SUFFIX))
    for path in (out, archive, timings):
        if path.exists() and not force:
            raise OutputError(f"{str(path)!r} already exists; pass --force to replace it or choose another --out")
    ensure_writable_dir(out.parent)
    return out, archive, timings


def samples_info(card, samples: dict[str, np.ndarray]) -> dict:
    """model.json's word on samples.npz."""
    if card.task == "detect":
        return {"file": SAMPLES_FILE, "count": len(samples["images"]), "split": "test", "frames": True,
                "boxes": "frame index, class, x_center, y_center, width, height in the frame's pixels",
                "sizes": "width and height of the image within each (padded) frame"}  # fmt: skip
    return {"file": SAMPLES_FILE, "count": len(samples["labels"]), "split": "test", "stratified_by_class": True}


def test_score(card) -> dict:
    """The model's test figure, as the card gives it: accuracy, or a detector's F1."""
    if card.task == "detect":
        return {"test_f1": card.detection.get("test_f1")}
    return {"test_accuracy": card.test_accuracy}


def choose(
    config: BundleSettings, models: dict, images: np.ndarray, int8_refused: str | None, chosen: FormDecision | None
) -> FormDecision:
    """The form to ship: the caller's choice, the only model there is, the user's --form, or the timed rule."""
    if chosen is not None:
        return chosen
    if "int8" not in models:
        return FormDecision(form="fp32", reason=int8_refused or "no INT8 model was given")
    if "fp32" not in models:
        return FormDecision(form="int8", reason="given as INT8")
    if config.form != "auto":
        return FormDecision(form=config.form, reason=f"--form {config.form} was given (not timed)")
    return decide_form(models["fp32"].path, models["int8"].path, images, config)


TIMING_METHOD = (
    "each model alone in a fresh process, ONNX Runtime's default session options but intra_op_num_threads, "
    "interleaved rounds on the bundle's sample images (`kd-edge bench`'s harness)"
)


def bundle_info(folder: Path, decision: FormDecision, profile: str, others: list[dict], samples: dict) -> dict:
    deployable = {
        "file": MODEL_FILE,
        "form": decision.form,
        "size_bytes": (folder / MODEL_FILE).stat().st_size,
        "sha256": file_sha256(folder / MODEL_FILE),
    }
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "kd_edge_version": __version__,
        "deployable": deployable,
        "reason": decision.reason,
        "profile": profile,  # the board it was made for: `kd-edge bench BUNDLE` uses it
        "other_forms": others,
        "form_decision": {
            **decision.verdict_dict(),
            **({"method": TIMING_METHOD, "timings": folder.name + TIMINGS_SUFFIX} if decision.timed else {}),
        },
        "samples": samples,
    }


def board_readme(name: str, card, info: dict) -> str:
    text = detector_text(card) if card.task == "detect" else classifier_text(card)
    shown_classes = ", ".join(card.classes[:10]) + (", ..." if len(card.classes) > 10 else "")
    other_forms = "".join(
        f"~/kd-edge/bin/kd-edge bench {MODEL_FILE} {other['file']} --data samples.npz --threads 2   # "
        f"{info['deployable']['form'].upper()} against {other['form'].upper()} on the board\n"
        for other in info["other_forms"]
    )
    return f"""# {name}: {card.model or "model"} for {card.data.dataset if card.data else "its dataset"}

Made by kd-edge {__version__}. `model.onnx` is the deployable model ({info["deployable"]["form"].upper()},
{info["deployable"]["size_bytes"]:,} bytes, {text["score"]}). Why this form: {info["reason"]}.

Input: {input_description(card)}; {len(card.classes)} classes: {shown_classes}.
{text["samples"]}

## On the board

The board needs Python 3.10 or later with numpy and ONNX Runtime (1.16 or later): its own, built for
its CPU (`pip install numpy onnxruntime` where it is online, or the vendor's packages). kd-edge itself
installs from this folder, offline, without torch:

```bash
sha256sum -c SHA256SUMS                                       # every file is as it was made
python3 -m venv --system-site-packages ~/kd-edge              # sees the board's numpy and onnxruntime
~/kd-edge/bin/pip install --no-index --find-links . kd-edge   # this folder's kd_edge-*.whl, no network
~/kd-edge/bin/kd-edge bench . --threads 2 --rate 30           # {text["bench"]}
~/kd-edge/bin/kd-edge check .                                 # {text["check"]}
{text["predict"]}
{other_forms}```

Without typer installed, `kd-edge` offers these runtime commands (bench, predict, check, profiles);
`pip install 'kd-edge[cli]'` (online) brings the full command line.

```python
import numpy as np
from kd_edge.runtime import OnnxModel

model = OnnxModel(".", threads=2)                          # checks SHA256SUMS, reads model.json
samples = np.load("samples.npz")
{text["python"]}
```

From C++, ROS or any ONNX Runtime binding: open `model.onnx` with default session options, feed the
tensor named `input` as described above, read `logits`{text["output"]}. The model's card is in its metadata
(`kd_edge.*`) and in `model.json`.
{consumer_text(card, info["samples"]["count"])}"""


def consumer_text(card, count: int) -> str:
    """The README's words on consumer.c, for a model that takes uint8 frames (a float32 one needs normalising, which
    the program does not do)."""
    if card.input_type != "uint8":
        return ""
    what = "the logits above, in the graph's order" if card.task == "detect" else "one logit a class"
    frame = " ".join(map(str, frame_shape(card)))
    return f"""
`{CONSUMER_FILE}` is such a program, in C, with no Python: it runs a file of frames ({card.layout} uint8, one after
the other) one frame at a time and prints, a line a frame, the index of the largest output, then every output
({what}); then the median time of a frame on stderr. With ONNX Runtime's C library installed (its
release archive's `lib/`, or the board vendor's package):

```bash
cc -O2 {CONSUMER_FILE} -o /tmp/consumer -lonnxruntime   # add -L DIR where libonnxruntime.so is not in /usr/lib
python3 -c "import numpy; numpy.load('samples.npz')['images'].tofile('/tmp/samples.u8')"   # the frames, raw
/tmp/consumer model.onnx /tmp/samples.u8 {count} {frame} 2 > /tmp/outputs.txt   # N, a frame's size, 2 threads
```

(Its files go outside this folder, whose checksums list every file in it.)
"""


def classifier_text(card) -> dict[str, str]:
    """The board README's words for a classifier."""
    accuracy = "unknown" if card.test_accuracy is None else f"{card.test_accuracy:.2%}"
    return {
        "score": f"test accuracy {accuracy}",
        "samples": "`samples.npz` holds `images` in that layout (colour ones in RGB order) and their `labels`.",
        "bench": "latency, accuracy on samples.npz, 30 fps verdict",
        "check": "accuracy of every form on samples.npz",
        "predict": "~/kd-edge/bin/kd-edge predict . samples.npz                   # top classes (image files need "
        "Pillow)",
        "python": 'print((model.predict(samples["images"]) == samples["labels"]).mean(), model.classes)',
        "output": "",
    }


def detector_text(card) -> dict[str, str]:
    """The board README's words for a detector: its decoding rule, and how to apply it."""
    rule = card.detection
    f1 = rule.get("test_f1")
    return {
        "score": f"test F1 {'unknown' if f1 is None else f'{f1:.3f}'}, objects decoded at stride {rule['stride']}, "
        f"threshold {rule['threshold']}",
        "samples": "`samples.npz` holds test frames `images` in that layout (RGB), their objects `boxes` (frame, "
        "class, x, y, width, height in the frame's pixels) and the image's `sizes` within each padded frame.",
        "bench": "per-frame latency, 30 fps verdict",
        "check": "F1 of every form on samples.npz",
        "predict": "~/kd-edge/bin/kd-edge predict . frame.jpg --json objects.json   # objects in the image's "
        "pixels (needs Pillow)",
        "python": "from kd_edge.runtime.detections import decode\n\n"
        'logits = model.logits(model.preprocess(samples["images"][:1]))[0]   # (classes + 1, h, w), 0 is background\n'
        'print(decode(logits, model.card.detection["stride"], model.card.detection["threshold"]))',
        "output": f" (N, {len(card.classes) + 1}, H / {rule['stride']}, W / {rule['stride']}): per cell, background "
        "then each class; an object is a cell whose class probability (softmax over that axis) is at least the "
        "threshold and the largest in its 3x3 neighbourhood, at the cell's centre",
    }


def frame_shape(card) -> tuple[int, int, int]:
    """One uint8 frame's dimensions in the order the model takes them: (H, W, C) for NHWC, (C, H, W) for NCHW."""
    channels, height, width = card.input_shape
    return (height, width, channels) if card.layout == "NHWC" else (channels, height, width)


def input_description(card) -> str:
    """What a consumer feeds the model, in a sentence."""
    channels, height, width = card.input_shape
    if card.input_type == "float32":
        return (
            f"float32 NCHW (N, {channels}, {height}, {width}), `(pixel / 255 - mean) / std` with mean "
            f"{list(card.mean)} and std {list(card.std)} (kd-edge's runtime does that for you)"
        )
    return (
        f"the camera frame's uint8 pixels, {card.layout} (N, {', '.join(map(str, frame_shape(card)))}), "
        f"{card.channel_order}, "
        f"resized to {width}x{height} and nothing else: the graph applies `(pixel / 255 - mean) / std` (mean "
        f"{list(card.mean)}, std {list(card.std)}) itself"
    )

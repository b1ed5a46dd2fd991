"""The bundle stage: one self-describing folder (and .tar.gz) for the board.

    result = write_bundle("bundle", fp32=Path("exports/s.onnx"), int8=Path("exports/s.int8.onnx"))

The deployable model is the INT8 one when it met its accuracy budget (``kd-edge
quantize`` refuses otherwise) and is not slower than FP32 beyond the timing noise at
the board's own setting (``kd_edge.deploy.form_choice``, the rule recorded in
``model.json``); ``--form`` lets the user decide instead. The folder layout is in
``kd_edge.runtime.bundle_files``.

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
from kd_edge.io import ensure_writable_dir
from kd_edge.log import step
from kd_edge.runtime.bundle_files import (
    CARD_FILE,
    MODEL_FILE,
    OTHER_FORM_FILES,
    README_FILE,
    SAMPLES_FILE,
    SUMS_FILE,
    checksums_text,
    file_sha256,
    write_archive,
)
from kd_edge.runtime.card import require_classifier
from kd_edge.runtime.session import OnnxModel
from kd_edge.settings.deploy import BundleSettings

BUNDLE_FORMAT = "kd-edge-bundle"
BUNDLE_FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class BundleResult:
    folder: Path
    archive: Path
    form: str  # "int8" or "fp32": what model.onnx is
    reason: str
    decision: FormDecision  # how the form was chosen: the timing and the rule, when it was timed


def write_bundle(
    out,
    settings: BundleSettings | None = None,
    *,
    fp32: Path | None,
    int8: Path | None,
    int8_refused: str | None = None,
    chosen: tuple[str, str] | None = None,
    data_dir: str | None = None,
    force: bool = False,
) -> BundleResult:
    """Choose the deployable form, then write the folder ``out`` and its archive (replaced only with ``force``).

    With both models and ``form`` auto, INT8 ships unless it is slower than FP32 beyond the noise (``decide_form``);
    with one model, that one. ``chosen`` (form, reason) is a choice the caller measured already (``kd-edge search``).
    The samples come from the test split of the model's dataset (``data_dir`` overrides its folder).
    """
    from kd_edge.runtime.bench.profiles import get_profile

    config = settings or BundleSettings()
    get_profile(config.profile)  # an unknown board is refused before any work
    out, archive = check_outputs(out, force)
    models = {name: OnnxModel(path) for name, path in (("fp32", fp32), ("int8", int8)) if path is not None}
    if not models:
        raise ConfigError("a bundle needs a model: give an FP32 or an INT8 .onnx")
    for model in models.values():
        require_classifier(model.card, "`kd-edge bundle`")
    step(f"bundle: sampling {config.samples} labelled test images")
    samples = sample_images(next(iter(models.values())), config.samples, data_dir)
    decision = choose(config, models, samples[0], int8_refused, chosen)
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
                others.append(
                    {"file": OTHER_FORM_FILES[other], "form": other, "test_accuracy": model.card.test_accuracy}
                )
        np.savez_compressed(folder / SAMPLES_FILE, images=samples[0], labels=samples[1])
        write_wheel(folder)  # what the board installs kd-edge from, offline
        info = bundle_info(folder, decision, config.profile, others, len(samples[1]))
        # The folder is a scratch one, moved into place whole below: plain writes are safe here.
        (folder / CARD_FILE).write_text(json.dumps({**deployable.card.to_dict(), "bundle": info}, indent=2) + "\n")
        (folder / README_FILE).write_text(board_readme(out.name, deployable.card, info))
        (folder / SUMS_FILE).write_text(checksums_text(folder, [p.name for p in folder.iterdir()]))
        if out.exists():
            shutil.rmtree(out)
        folder.replace(out)
    write_archive(out, archive)
    return BundleResult(folder=out, archive=archive, form=form, reason=decision.reason, decision=decision)


def check_outputs(out, force: bool) -> tuple[Path, Path]:
    """The bundle folder and archive paths, refused now (before any work) when they exist and --force is not given."""
    out = Path(out)
    archive = out.with_name(out.name + ".tar.gz")
    for path in (out, archive):
        if path.exists() and not force:
            raise OutputError(f"{str(path)!r} already exists; pass --force to replace it or choose another --out")
    ensure_writable_dir(out.parent)
    return out, archive


def sample_images(model: OnnxModel, samples: int, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``samples`` test images, the same number from every class, laid out as the model takes them."""
    from kd_edge.data import load_data

    if model.card.data is None:
        raise ConfigError(f"{str(model.path)!r} does not name its dataset, so no labelled samples can be bundled")
    test = load_data(model.card.data, data_dir).test
    per_class = max(samples // len(model.classes), 1)
    picks = np.sort(np.concatenate([np.flatnonzero(test.labels == c)[:per_class] for c in range(len(model.classes))]))
    return model.check_images(test.images[picks]), test.labels[picks]


def choose(
    config: BundleSettings, models: dict, images: np.ndarray, int8_refused: str | None, chosen: tuple[str, str] | None
) -> FormDecision:
    """The form to ship: the caller's choice, the only model there is, the user's --form, or the timed rule."""
    if chosen is not None:
        return FormDecision(form=chosen[0], reason=chosen[1])
    if "int8" not in models:
        return FormDecision(form="fp32", reason=int8_refused or "no INT8 model was given")
    if "fp32" not in models:
        return FormDecision(form="int8", reason="given as INT8")
    if config.form != "auto":
        return FormDecision(form=config.form, reason=f"--form {config.form} was given (not timed)")
    return decide_form(models["fp32"].path, models["int8"].path, images, config)


def bundle_info(folder: Path, decision: FormDecision, profile: str, others: list[dict], samples: int) -> dict:
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
            **decision.to_dict(),
            "method": "each model alone in a fresh process, ONNX Runtime's default session options but "
            "intra_op_num_threads, interleaved rounds on the bundle's sample images (`kd-edge bench`'s harness)",
        },
        "samples": {"file": SAMPLES_FILE, "count": samples, "split": "test", "stratified_by_class": True},
    }


def board_readme(name: str, card, info: dict) -> str:
    accuracy = "unknown" if card.test_accuracy is None else f"{card.test_accuracy:.2%}"
    shown_classes = ", ".join(card.classes[:10]) + (", ..." if len(card.classes) > 10 else "")
    other_forms = "".join(
        f"~/kd-edge/bin/kd-edge bench {MODEL_FILE} {other['file']} --data samples.npz --threads 2   # "
        f"{info['deployable']['form'].upper()} against {other['form'].upper()} on the board\n"
        for other in info["other_forms"]
    )
    return f"""# {name}: {card.model or "model"} for {card.data.dataset if card.data else "its dataset"}

Made by kd-edge {__version__}. `model.onnx` is the deployable model ({info["deployable"]["form"].upper()},
{info["deployable"]["size_bytes"]:,} bytes, test accuracy {accuracy}). Why this form: {info["reason"]}.

Input: {input_description(card)}; {len(card.classes)} classes: {shown_classes}.
`samples.npz` holds `images` in that layout (colour ones in RGB order) and their `labels`.

## On the board

The board needs Python 3.10 or later with numpy and ONNX Runtime (1.16 or later): its own, built for
its CPU (`pip install numpy onnxruntime` where it is online, or the vendor's packages). kd-edge itself
installs from this folder, offline, without torch:

```bash
sha256sum -c SHA256SUMS                                       # every file is as it was made
python3 -m venv --system-site-packages ~/kd-edge              # sees the board's numpy and onnxruntime
~/kd-edge/bin/pip install --no-index --find-links . kd-edge   # this folder's kd_edge-*.whl, no network
~/kd-edge/bin/kd-edge bench . --threads 2 --rate 30           # latency, accuracy on samples.npz, 30 fps verdict
~/kd-edge/bin/kd-edge check .                                 # accuracy of every form on samples.npz
~/kd-edge/bin/kd-edge predict . samples.npz                   # top classes (image files need Pillow)
{other_forms}```

Without typer installed, `kd-edge` offers these runtime commands (bench, predict, check, profiles);
`pip install 'kd-edge[cli]'` (online) brings the full command line.

```python
import numpy as np
from kd_edge.runtime import OnnxModel

model = OnnxModel(".", threads=2)                          # checks SHA256SUMS, reads model.json
samples = np.load("samples.npz")
print((model.predict(samples["images"]) == samples["labels"]).mean(), model.classes)
```

From C++, ROS or any ONNX Runtime binding: open `model.onnx` with default session options, feed the
tensor named `input` as described above, read `logits`. The model's card is in its metadata (`kd_edge.*`)
and in `model.json`.
"""


def input_description(card) -> str:
    """What a consumer feeds the model, in a sentence."""
    channels, height, width = card.input_shape
    if card.input_type == "float32":
        return (
            f"float32 NCHW (N, {channels}, {height}, {width}), `(pixel / 255 - mean) / std` with mean "
            f"{list(card.mean)} and std {list(card.std)} (kd-edge's runtime does that for you)"
        )
    shape = (height, width, channels) if card.layout == "NHWC" else (channels, height, width)
    return (
        f"the camera frame's uint8 pixels, {card.layout} (N, {', '.join(map(str, shape))}), {card.channel_order}, "
        f"resized to {width}x{height} and nothing else: the graph applies `(pixel / 255 - mean) / std` (mean "
        f"{list(card.mean)}, std {list(card.std)}) itself"
    )

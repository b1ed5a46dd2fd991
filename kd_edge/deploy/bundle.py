"""The bundle stage: one self-describing folder (and .tar.gz) for the board.

    result = write_bundle("bundle", fp32=Path("exports/s.onnx"), int8=Path("exports/s.int8.onnx"))

The deployable model is the INT8 one when it met its accuracy budget (``kd-edge
quantize`` refuses otherwise) and is at least as fast as FP32 in a plain ONNX
Runtime session (default options but the thread count, as a C++ or ROS program
opens it) at batch 1 and 64 on every thread count asked for; otherwise FP32, and
``model.json`` says why. The folder layout is in ``kd_edge.runtime.bundle_files``.

Torch-free: this stage needs numpy, onnxruntime (and onnx to write nothing: the
models are copied as they are).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd_edge import __version__
from kd_edge.errors import ConfigError, OutputError
from kd_edge.io import atomic_write, ensure_writable_dir
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
)
from kd_edge.runtime.session import OnnxModel
from kd_edge.settings.bench import BenchSettings
from kd_edge.settings.deploy import BundleSettings

BUNDLE_FORMAT = "kd-edge-bundle"
BUNDLE_FORMAT_VERSION = 1
LATENCY_BATCHES = (1, 64)
# INT8 ships when no setting is more than 5 % slower than FP32 (the timing noise of a
# shared machine) and the settings' median ratio is at most 1.
NOISE_TOLERANCE = 1.05


@dataclass(frozen=True, kw_only=True)
class BundleResult:
    folder: Path
    archive: Path
    form: str  # "int8" or "fp32": what model.onnx is
    reason: str
    latency_ms: dict  # {"fp32": {"t1_b1": ms, ...}, "int8": {...}}; empty when there was no INT8 model


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

    With both models, INT8 ships only if it is not slower than FP32 (``choose_form``); with one, that one.
    ``chosen`` (form, reason) is a choice the caller measured already (``kd-edge search``, on the board profile).
    The samples come from the test split of the model's dataset (``data_dir`` overrides its folder).
    """
    config = settings or BundleSettings()
    out, archive = check_outputs(out, force)
    models = {name: OnnxModel(path) for name, path in (("fp32", fp32), ("int8", int8)) if path is not None}
    if not models:
        raise ConfigError("a bundle needs a model: give an FP32 or an INT8 .onnx")
    step(f"bundle: sampling {config.samples} labelled test images")
    samples = sample_images(next(iter(models.values())), config.samples, data_dir)
    if chosen is not None:
        (form, reason), latency = chosen, {}
    elif len(models) == 2 and not config.compare_latency:
        latency, form = {}, "int8"
        reason = "INT8 met its accuracy budget; its speed against FP32 was not measured here (--no-compare-latency)"
    else:
        latency = compare_plain_sessions(fp32, int8, samples[0], config.threads) if len(models) == 2 else {}
        form, reason = choose_form(latency, int8_refused) if "fp32" in models else ("int8", "given as INT8")
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
        info = bundle_info(folder, form, reason, latency, others, len(samples[1]))
        # The folder is a scratch one, moved into place whole below: plain writes are safe here.
        (folder / CARD_FILE).write_text(json.dumps({**deployable.card.to_dict(), "bundle": info}, indent=2) + "\n")
        (folder / README_FILE).write_text(board_readme(out.name, deployable.card, info))
        (folder / SUMS_FILE).write_text(checksums_text(folder, [p.name for p in folder.iterdir()]))
        if out.exists():
            shutil.rmtree(out)
        folder.replace(out)
    write_archive(out, archive)
    return BundleResult(folder=out, archive=archive, form=form, reason=reason, latency_ms=latency)


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
    """Up to ``samples`` test images, the same number from every class."""
    from kd_edge.data import load_data

    if model.card.data is None:
        raise ConfigError(f"{str(model.path)!r} does not name its dataset, so no labelled samples can be bundled")
    test = load_data(model.card.data, data_dir).test
    per_class = max(samples // len(model.classes), 1)
    picks = np.sort(np.concatenate([np.flatnonzero(test.labels == c)[:per_class] for c in range(len(model.classes))]))
    return test.images[picks], test.labels[picks]


def compare_plain_sessions(fp32: Path, int8: Path, images: np.ndarray, threads: tuple[int, ...]) -> dict:
    """p50 latency (ms) of both models per thread count and batch size, each measurement in a fresh
    process, the models interleaved over 3 rounds; a setting where INT8 looks slower beyond the
    noise tolerance is measured again over 5 rounds, and the second reading is kept."""
    step("bundle: timing FP32 against INT8 in fresh processes, default ONNX Runtime sessions")
    latency = time_both(fp32, int8, images, threads, LATENCY_BATCHES, rounds=3)
    for key in [key for key in latency["fp32"] if latency["int8"][key] > NOISE_TOLERANCE * latency["fp32"][key]]:
        t, b = (int(part[1:]) for part in key.split("_"))
        step(f"bundle: INT8 looked slower at {t} thread(s), batch {b}; measuring that setting again")
        again = time_both(fp32, int8, images, (t,), (b,), rounds=5)
        for name in ("fp32", "int8"):
            latency[name][key] = again[name][key]
    return latency


def time_both(
    fp32: Path, int8: Path, images: np.ndarray, threads: tuple[int, ...], batches: tuple[int, ...], rounds: int
) -> dict:
    from kd_edge.runtime.bench.harness import BenchJob, run_benchmark

    settings = BenchSettings(threads=threads, batch_sizes=batches, runs=200 * rounds, rounds=rounds)
    report = run_benchmark(BenchJob(models=(str(fp32), str(int8)), settings=settings), images=images[:64])
    return {
        name: {f"t{t}_b{b}": report.p50_ms(str(path), b, t) for t in threads for b in batches}
        for name, path in (("fp32", fp32), ("int8", int8))
    }


def choose_form(latency: dict, int8_refused: str | None) -> tuple[str, str]:
    if not latency:
        return "fp32", int8_refused or "no INT8 model was given"
    ratios = {key: latency["int8"][key] / latency["fp32"][key] for key in latency["fp32"]}
    described = ", ".join(f"{key.replace('_', ' ')} {ratio:.2f}x" for key, ratio in ratios.items())
    if max(ratios.values()) <= NOISE_TOLERANCE and float(np.median(list(ratios.values()))) <= 1.0:
        return (
            "int8",
            "INT8 met its accuracy budget and is not slower than FP32 in a plain ONNX Runtime session (INT8/FP32 "
            f"p50: {described})",
        )
    return (
        "fp32",
        "INT8 met its accuracy budget but is slower than FP32 in a plain ONNX Runtime session (INT8/FP32 p50: "
        f"{described})",
    )


def bundle_info(folder: Path, form: str, reason: str, latency: dict, others: list[dict], samples: int) -> dict:
    deployable = {
        "file": MODEL_FILE,
        "form": form,
        "size_bytes": (folder / MODEL_FILE).stat().st_size,
        "sha256": file_sha256(folder / MODEL_FILE),
    }
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "kd_edge_version": __version__,
        "deployable": deployable,
        "reason": reason,
        "other_forms": others,
        "latency_check": {
            "p50_ms": latency,
            "method": "each model alone in a fresh process, ONNX Runtime's default session options but "
            "intra_op_num_threads, 3 interleaved rounds of 200 timed runs on the bundle's sample images; "
            "a setting where INT8 looked slower measured again over 5 rounds",
        },
        "samples": {"file": SAMPLES_FILE, "count": samples, "split": "test", "stratified_by_class": True},
    }


def board_readme(name: str, card, info: dict) -> str:
    accuracy = "unknown" if card.test_accuracy is None else f"{card.test_accuracy:.2%}"
    shown_classes = ", ".join(card.classes[:10]) + (", ..." if len(card.classes) > 10 else "")
    other_forms = "".join(
        f"kd-edge bench {MODEL_FILE} {other['file']} --data samples.npz --threads 2   # this board's verdict: "
        f"{info['deployable']['form'].upper()} against {other['form'].upper()}\n"
        for other in info["other_forms"]
    )
    return f"""# {name}: {card.model or "model"} for {card.data.dataset if card.data else "its dataset"}

Made by kd-edge {__version__}. `model.onnx` is the deployable model ({info["deployable"]["form"].upper()},
{info["deployable"]["size_bytes"]:,} bytes, test accuracy {accuracy}). Why this form: {info["reason"]}.

Input: uint8 images of shape {list(card.input_shape)} (channels, height, width); {len(card.classes)} classes:
{shown_classes}. The model takes float32 NCHW `(pixel / 255 - mean) / std` with
mean {list(card.mean)} and std {list(card.std)}; kd-edge's runtime does that for you.

## On the board

```bash
sha256sum -c SHA256SUMS                 # every file is as it was made
pip install kd-edge                     # the runtime only: numpy and onnxruntime, no torch
kd-edge bench . --threads 2             # latency, memory, and accuracy on samples.npz
python -m kd_edge.runtime.check .       # accuracy of every form on samples.npz
{other_forms}```

```python
import numpy as np
from kd_edge.runtime import OnnxModel

model = OnnxModel(".", threads=2)                          # checks SHA256SUMS, reads model.json
samples = np.load("samples.npz")
print((model.predict(samples["images"]) == samples["labels"]).mean(), model.classes)
```

From C++, ROS or any ONNX Runtime binding: open `model.onnx` with default session options, feed the
normalised float32 tensor named `input`, read `logits`. The model's card is in its metadata (`kd_edge.*`)
and in `model.json`.
"""


def write_archive(folder: Path, archive: Path) -> None:
    """``folder`` as a .tar.gz holding one top-level folder of plain files, written atomically."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=f"{folder.name}/{path.name}", recursive=False)
    atomic_write(archive, lambda handle: handle.write(buffer.getvalue()))

"""The on-board check: run a bundle's (or a model's) labelled samples and save every form's logits.

The same code runs on the host, on a board, and under QEMU for ``kd-edge verify-arm``:

    python -m kd_edge.runtime.check bundle/ --out logits.npz      # on the board: accuracy (a detector: F1) per form

Numpy and onnxruntime only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from kd_edge.errors import ConfigError, KdEdgeError
from kd_edge.runtime.session import OnnxModel, model_file, read_card


def forms_of(path: Path) -> dict[str, Path]:
    """{form: .onnx path}: a bundle's deployable model and its other form, or a single model."""
    model = OnnxModel(path)
    return model.bundle.forms() if model.bundle is not None else {form_of(model): path}


def form_of(model: OnnxModel) -> str:
    return "int8" if model.card.quantization is not None else "fp32"


def sample_logits(models: dict[str, Path], images: np.ndarray) -> dict[str, np.ndarray]:
    """Each form's logits for ``images``, one image at a time on one thread (as a drone's frame loop runs them)."""
    logits = {}
    for form, path in models.items():
        model = OnnxModel(path, threads=1)
        logits[form] = np.concatenate([model.logits(model.preprocess(images[i : i + 1])) for i in range(len(images))])
    return logits


def runtime_facts() -> dict:
    import onnxruntime as ort

    return {
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kd_edge.runtime.check", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a bundle (folder or .tar.gz) or an .onnx model")
    parser.add_argument(
        "--images", type=Path, help="an .npz with images (and labels); default: the bundle's samples.npz"
    )
    parser.add_argument("--out", type=Path, help="write every form's logits here (.npz)")
    args = parser.parse_args(argv)
    try:
        with model_file(args.model) as (_, bundle):
            return check_forms(bundle.folder if bundle else args.model, args.images or (bundle and bundle.samples_path),
                         args.out)  # fmt: skip
    except KdEdgeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


def check_forms(model: Path, samples: Path | None, out: Path | None) -> int:
    """Print every form's accuracy (a detector's F1) on ``samples`` (and save the logits to ``out``)."""
    if samples is None:
        raise ConfigError(f"{str(model)!r} is a bare model, with no samples: give an .npz of images with --images")
    forms = forms_of(model)
    with np.load(samples, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    logits = sample_logits(forms, arrays["images"])
    if out:
        np.savez(out, facts=json.dumps(runtime_facts()), **logits)
    for form, values in logits.items():
        print(f"{form}: {len(values)} samples, {sample_score(forms[form], values, arrays)} ({platform.machine()})")
    return 0


def sample_score(path: Path, logits: np.ndarray, samples: dict[str, np.ndarray]) -> str:
    """Accuracy on labelled images, or a detector's F1 on frames with their objects, in words."""
    card = read_card(path)
    if card.task == "detect":
        if "boxes" not in samples:
            return "no objects given (boxes)"
        from kd_edge.runtime.detections import score_samples

        overall = score_samples(logits, samples, card.classes, card.detection).overall
        return f"F1 {overall['f1']:.3f} (precision {overall['precision']:.3f}, recall {overall['recall']:.3f})"
    if "labels" not in samples:
        return "no labels"
    return f"accuracy {(logits.argmax(1) == samples['labels']).mean():.2%}"


if __name__ == "__main__":
    sys.exit(main())

"""A model's labelled samples from the test split of its dataset: what a bundle's samples.npz holds, and what
``kd-edge verify-arm`` compares a bare model on.

    samples = labelled_samples(OnnxModel("student.onnx"), 300, data_dir=None)   # {"images": ..., "labels": ...}
"""

from __future__ import annotations

import numpy as np

from kd_edge.errors import ConfigError
from kd_edge.runtime.session import OnnxModel

DETECTION_SAMPLE_FRAMES = 8  # whole frames, 0.8 MB each before compression: enough to check F1 on a board


def labelled_samples(model: OnnxModel, samples: int, data_dir: str | None) -> dict[str, np.ndarray]:
    """What samples.npz holds, from the test split of the model's dataset: for a classifier, up to ``samples``
    images (the same number from every class, laid out as the model takes them) and their ``labels``; for a
    detector, up to ``DETECTION_SAMPLE_FRAMES`` whole frames and their objects (``frame_samples``)."""
    from kd_edge.data import load_data

    if model.card.data is None:
        raise ConfigError(f"{str(model.path)!r} does not name its dataset, so no labelled samples can be bundled")
    if model.card.task == "detect":
        from kd_edge.data.yolo import card_splits
        from kd_edge.runtime.detections import frame_samples

        test = card_splits(model.card, data_dir)["test"]
        count = min(samples, DETECTION_SAMPLE_FRAMES, len(test))
        picks = sorted(set(np.linspace(0, len(test) - 1, count).round().astype(int)))
        return frame_samples([test[i] for i in picks], model.input_shape[1])
    test = load_data(model.card.data, data_dir).test
    per_class = max(samples // len(model.classes), 1)
    picks = np.sort(np.concatenate([np.flatnonzero(test.labels == c)[:per_class] for c in range(len(model.classes))]))
    return {"images": model.check_images(test.images[picks]), "labels": test.labels[picks]}

"""``kd-edge pipeline``: every stage's settings in one object, one table each in kd-edge.toml."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kd_edge.settings.bench import BenchSettings
from kd_edge.settings.deploy import BundleSettings, ExportSettings, QuantizeSettings
from kd_edge.settings.detection import DetectSettings
from kd_edge.settings.fields import require
from kd_edge.settings.training import DistillSettings


@dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    """Teacher and student (``distill``), then export, quantize, bundle and bench.

    The pipeline benchmarks the bundle under the board it was made for (``bundle.profile``, a Raspberry
    Pi 4 by default) at 1 and 2 threads. The quantizer does not time the forms: the bundle does.

    With a ``yolo:`` dataset the two networks are detectors, trained as ``kd-edge detect`` trains them
    (``detect``: the config file's [detect] table); the dataset, its split, the seed and the threads are the
    pipeline's own options (``distill.data``, ``distill.run``) all the same.
    """

    distill: DistillSettings = field(default_factory=DistillSettings)
    detect: DetectSettings = field(default_factory=DetectSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    quantize: QuantizeSettings = field(default_factory=QuantizeSettings)
    bundle: BundleSettings = field(default_factory=BundleSettings)
    bench: BenchSettings = field(default_factory=lambda: BenchSettings(threads=(1, 2)))

    @property
    def detects(self) -> bool:
        return self.distill.data.dataset.startswith("yolo:")

    def detection(self) -> DetectSettings:
        """The detectors' settings: [detect]'s, with the pipeline's dataset, split, seed and threads."""
        run = replace(self.detect.run, seed=self.distill.run.seed, threads=self.distill.run.threads)
        return replace(self.detect, dataset=self.distill.data.dataset, split=self.distill.data.split, run=run)

    def __post_init__(self):
        if self.detects:
            self.detection()  # a setting a detector cannot take fails now, before any stage
        require(
            self.distill.mode == "offline",
            f"the pipeline distils offline, from the teacher it trains; for --mode {self.distill.mode} run "
            f"`kd-edge distill --mode {self.distill.mode} --out RUN`, then `kd-edge bundle RUN`",
        )

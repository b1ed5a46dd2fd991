"""Timing the search's candidates on the emulated board: each exported to ONNX, quantized, and timed in both forms."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kd_edge.io import ensure_writable_dir
from kd_edge.log import step
from kd_edge.search.space import Candidate, safe_name
from kd_edge.settings.deploy import QuantizeSettings
from kd_edge.settings.search import SearchSettings


class CandidateMeasurer:
    """Each candidate exported, quantized and timed on the emulated board through ``kd-edge bench``'s harness
    (the profile's cores, quota, memory): untrained for the latency filter, trained for the finalists."""

    def __init__(self, config: SearchSettings, card, data_dir: str | None):
        self.config, self.card, self.data_dir = config, card, data_dir

    def untrained(self, candidates: list[Candidate], folder: Path) -> dict:
        from kd_edge.deploy.onnx_graph import write_onnx
        from kd_edge.training.models import ModelSpec

        ensure_writable_dir(folder)
        files = {}
        for candidate in candidates:
            model = ModelSpec(
                candidate.name, len(self.card.classes), self.card.input_shape[0], self.card.input_shape[1]
            ).build()
            fp32 = folder / f"{safe_name(candidate.name)}.onnx"
            card = replace(self.card, model=candidate.name, test_accuracy=None)
            write_onnx(model.eval(), card, fp32)
            files[candidate.name] = {"fp32": fp32, "int8": self.quantized(fp32, folder, untrained=True)}
        return self.time(files)

    def finalist(self, candidate: Candidate, folder: Path) -> dict:
        """Export and quantize a trained candidate, time both forms; its validation accuracy as the student
        reached it (the INT8 form is kept only within the quantizer's accuracy budget)."""
        from kd_edge.deploy.export import export_onnx

        run = Path(candidate.rungs[-1]["run"])
        fp32 = export_onnx(
            run / "student.pt", folder, name=safe_name(candidate.name), data_dir=self.data_dir, force=True
        ).path
        int8 = self.quantized(fp32, folder, untrained=False)
        latency = self.time({candidate.name: {"fp32": fp32, "int8": int8}})[candidate.name]
        return {
            "val_accuracy": candidate.val_accuracy,
            "latency": latency,
            "files": {form: str(path) for form, path in (("fp32", fp32), ("int8", int8)) if path},
            "run": str(run),
        }

    def quantized(self, fp32: Path, folder: Path, untrained: bool) -> Path | None:
        """The INT8 form: of an untrained candidate, for its latency only (any accuracy, no latency search); of a
        finalist, within the quantizer's accuracy budget. 200 calibration images: enough, and a quarter the time.
        No timing-made node exclusions (the quantizer's default): they flip with the machine's load."""
        from kd_edge.deploy.quantize import quantize
        from kd_edge.errors import QuantizationError

        settings = QuantizeSettings(calibration_size=200, compare_latency=False)
        if untrained:
            settings = replace(settings, max_accuracy_drop=100.0)
        try:
            out = folder / f"{fp32.stem}.int8.onnx"
            return quantize(fp32, settings, out=out, data_dir=self.data_dir, force=True).path
        except QuantizationError as exc:
            step(f"search: {fp32.name} stays FP32 ({str(exc)[:90]}...)")
            return None

    def time(self, files: dict[str, dict]) -> dict:
        import numpy as np

        from kd_edge.runtime.bench.harness import BenchJob, run_benchmark
        from kd_edge.settings.bench import BenchSettings

        paths = [str(p) for forms in files.values() for p in forms.values() if p is not None]
        channels, height, width = self.card.input_shape
        images = np.random.default_rng(0).integers(0, 256, (64, channels, height, width), dtype=np.uint8)
        settings = BenchSettings(
            threads=(1,),
            batch_sizes=(self.config.batch_size,),
            profile=self.config.profile,
            runs=self.config.bench_runs,
            rounds=self.config.bench_rounds,
            warmup=10,
        )
        report = run_benchmark(BenchJob(models=tuple(paths), settings=settings), images=images)
        by_path = {r.model: r for r in report.results}
        latency = {}
        for name, forms in files.items():
            latency[name] = {}
            for form, path in forms.items():
                if path is None:
                    continue
                result = by_path[str(path)]
                projected = result.projected_p50_ms
                latency[name][form] = {
                    "ms": projected if projected is not None else result.latency_ms.p50,
                    "source": "projected" if projected is not None else "host",
                    "host_ms": result.latency_ms.p50,
                }
        return latency

"""A board's own C program, as the bundle's README tells it to run the model (ONNX Runtime's C API, default
session options, the uint8 frames as they are, input "input", output "logits"), computes what kd-edge does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kd_edge.deploy.bundle import write_bundle
from kd_edge.runtime import OnnxModel
from kd_edge.settings import BundleSettings

SOURCE = Path(__file__).resolve().parent.parent / "benchmarks" / "c_consumer.c"


def onnxruntime_c_library() -> Path | None:
    import onnxruntime

    libraries = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.*"))
    return libraries[-1] if libraries else None


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
@pytest.mark.skipif(onnxruntime_c_library() is None, reason="this onnxruntime wheel carries no libonnxruntime.so")
def test_a_c_program_following_the_bundle_readme_gets_kd_edges_outputs(tmp_path, exported_student):
    bundle = write_bundle(tmp_path / "bundle", BundleSettings(samples=9), fp32=exported_student, int8=None).folder
    (tmp_path / "libonnxruntime.so.1").symlink_to(onnxruntime_c_library())  # the library's own name (SONAME)
    binary = tmp_path / "c_consumer"
    subprocess.run(["cc", "-O2", "-std=c11", str(SOURCE), "-o", str(binary), f"-L{tmp_path}", "-l:libonnxruntime.so.1",
                    f"-Wl,-rpath,{tmp_path}"], check=True)  # fmt: skip
    samples = np.load(bundle / "samples.npz")
    frames = np.ascontiguousarray(samples["images"])
    assert frames.dtype == np.uint8 and frames.shape[1:] == (16, 16, 1)  # NHWC, what the README says it takes
    frames.tofile(tmp_path / "frames.u8")
    model = OnnxModel(bundle)
    expected = model.logits(model.preprocess(frames))
    command = [str(binary), str(bundle / "model.onnx"), str(tmp_path / "frames.u8"), str(len(frames)),
               *map(str, frames.shape[1:]), str(expected.shape[1])]  # fmt: skip
    run = subprocess.run(command, check=True, capture_output=True, text=True)
    rows = [line.split() for line in run.stdout.splitlines()]
    assert "ONNX Runtime" in run.stderr and len(rows) == len(frames)
    assert [int(row[0]) for row in rows] == expected.argmax(1).tolist()
    np.testing.assert_allclose(np.array([row[1:] for row in rows], dtype=np.float32), expected, atol=1e-5)

"""A board's own C program: the bundle's consumer.c, built and run as the bundle's README says (ONNX Runtime's C
API, default session options, the uint8 frames as they are, input "input", output "logits"), computes what kd-edge
does."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kd_edge.deploy.bundle import write_bundle
from kd_edge.runtime import OnnxModel
from kd_edge.settings import BundleSettings


def onnxruntime_c_library() -> Path | None:
    import onnxruntime

    libraries = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.*"))
    return libraries[-1] if libraries else None


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
@pytest.mark.skipif(onnxruntime_c_library() is None, reason="this onnxruntime wheel carries no libonnxruntime.so")
def test_the_bundles_c_program_built_and_run_as_its_readme_says_gets_kd_edges_outputs(tmp_path, exported_student):
    bundle = write_bundle(tmp_path / "bundle", BundleSettings(samples=9), fp32=exported_student, int8=None).folder
    readme = (bundle / "README.md").read_text()
    build, extract, consumer = (
        shlex.split(line.replace("/tmp/", f"{tmp_path}/"), comments=True)  # the README's commands, in tmp_path
        for line in readme.splitlines()
        if line.startswith(("cc -O2 consumer.c", "python3 -c", "/tmp/consumer model.onnx"))
    )
    for name in ("libonnxruntime.so", "libonnxruntime.so.1"):  # what a board's install of the C library puts in lib/
        (tmp_path / name).symlink_to(onnxruntime_c_library())
    subprocess.run([*build, f"-L{tmp_path}", f"-Wl,-rpath,{tmp_path}"], cwd=bundle, check=True)
    subprocess.run([sys.executable, *extract[1:]], cwd=bundle, check=True)
    samples = np.load(bundle / "samples.npz")
    frames = samples["images"]
    assert frames.dtype == np.uint8 and frames.shape[1:] == (16, 16, 1)  # NHWC, what the README says it takes
    model = OnnxModel(bundle)
    expected = model.logits(model.preprocess(frames))
    command = consumer[: consumer.index(">")]
    assert command[3:7] == [str(len(frames)), "16", "16", "1"]  # the README's numbers: N, then a frame's H W C
    run = subprocess.run(command, cwd=bundle, check=True, capture_output=True, text=True)
    OnnxModel(bundle)  # the README's commands left the folder as it was: it still passes its checksums
    rows = [line.split() for line in run.stdout.splitlines()]
    assert "ONNX Runtime" in run.stderr and len(rows) == len(frames)
    assert [int(row[0]) for row in rows] == expected.argmax(1).tolist()
    np.testing.assert_allclose(np.array([row[1:] for row in rows], dtype=np.float32), expected, atol=1e-5)

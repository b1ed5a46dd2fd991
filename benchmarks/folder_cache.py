"""How long a folder dataset takes to load without the decode cache, and again with it.

    .venv/bin/python benchmarks/folder_cache.py ../shared/datasets/rsscn7 --image-size 64 128
    .venv/bin/python benchmarks/folder_cache.py ../shared/datasets/rsscn7 --image-size 64 --training

Each size is loaded three times in a fresh process: with an empty cache (every JPEG decoded and resized),
then twice from the cache it wrote. The cache lives in a temporary XDG_CACHE_HOME, so the user's is
untouched and every first load is a cold one (the files themselves may sit in the OS page cache).
``--training`` loads as training does: with the train split's larger copy, which aerial crops are cut from.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LOAD = """
import sys, time
started = time.perf_counter()
from kd_edge.data import load_dataset
dataset = load_dataset("folder:" + sys.argv[1], image_size=int(sys.argv[2]), train_sources=sys.argv[3] == "1")
print(time.perf_counter() - started, len(dataset.train) + len(dataset.val) + len(dataset.test), dataset.input_shape)
"""


def load_seconds(folder: Path, size: int, cache: Path, training: bool) -> tuple[float, int, str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    command = [sys.executable, "-c", LOAD, str(folder), str(size), str(int(training))]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    seconds, images, shape = out.stdout.split(maxsplit=2)
    return float(seconds), int(images), shape.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--image-size", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--training", action="store_true", help="load as training does (the larger train copy too)")
    options = parser.parse_args()
    print("| image size | images | input | first load (decode) s | from the cache s | again s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in options.image_size:
        with tempfile.TemporaryDirectory(prefix="folder-cache-") as cache:
            runs = [load_seconds(options.folder.resolve(), size, Path(cache), options.training) for _ in range(3)]
        seconds = " | ".join(f"{s:.2f}" for s, _, _ in runs)
        print(f"| {size} | {runs[0][1]:,} | {runs[0][2]} | {seconds} |")


if __name__ == "__main__":
    main()

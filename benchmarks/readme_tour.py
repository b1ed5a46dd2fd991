"""Walk the README's tour as a newcomer would and time each command.

Run it from a fresh clone after `make demo` (which it does not time):

    .venv/bin/python benchmarks/readme_tour.py --markdown tour.md

Every `kd-edge ...` line of the README's shell blocks runs as written, in order, in the
clone's root, with the clone's `.venv/bin` first on PATH. Fashion-MNIST comes from
--fashion-dir (set as KD_EDGE_DATA, as the README says) when Debian's package is not
installed. Lines that print help or lists are timed too: they are what a newcomer types.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_readme import readme_commands  # noqa: E402  (the test's parser: one reading of the README)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion-dir", default="/work/shared/datasets", help="KD_EDGE_DATA for Fashion-MNIST")
    parser.add_argument("--markdown", type=Path, help="write the table here as well")
    parser.add_argument(
        "--skip", default="search", help="commands listed but not run (the 20-minute search has its own benchmark)"
    )
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "KD_EDGE_DATA": args.fashion_dir}
    rows, seen = [], set()
    for command in readme_commands():
        line = shlex.join(["kd-edge", *command])
        if line in seen:
            continue
        seen.add(line)
        if command[0] in args.skip.split(","):
            rows.append(f"| `{line}` | | not run here: see benchmarks/search_budgets.py |")
            continue
        start = time.perf_counter()
        done = subprocess.run(line, shell=True, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
        rows.append(f"| `{line}` | {wall:.1f} | {status} |")
        print(rows[-1], flush=True)
    table = "\n".join(["| command | wall s | result |", "| --- | --- | --- |", *rows])
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()

"""How long a kd-edge command takes to exit after its work, with the objects alive at its end frozen (today) and not.

    .venv/bin/python benchmarks/command_exit.py [--rounds 5] [-- models]

Each run is a child process running the command line given after ``--`` (default ``models``); an exit handler
registered last (so run first) prints the clock when the interpreter starts to exit, and the time to the child's
end is the exit. "not frozen" replaces ``gc.freeze`` with a no-op in the child. Rounds alternate.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CHILD = """
import atexit, gc, sys, time
if {no_freeze}:
    gc.freeze = lambda: None
from kd_edge.cli import main
sys.argv = ["kd-edge", *{arguments!r}]
atexit.register(lambda: print("exit starts", time.time(), file=sys.stderr, flush=True))
main()
"""


def exit_seconds(arguments: list[str], frozen: bool) -> float:
    code = CHILD.format(no_freeze=not frozen, arguments=arguments)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    ended = time.time()
    if child.returncode != 0:
        sys.exit(f"kd-edge {' '.join(arguments)} failed: {child.stderr[-2000:]}")
    started = float(child.stderr.split("exit starts")[-1].split()[0])
    return ended - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("arguments", nargs="*", default=["models"], help="the kd-edge command line (after --)")
    args = parser.parse_args()
    seconds = {"frozen (today)": [], "not frozen": []}
    for _ in range(args.rounds):
        for label, times in seconds.items():
            times.append(exit_seconds(args.arguments, label.startswith("frozen")))
    print(f"kd-edge {' '.join(args.arguments)}, {args.rounds} alternating rounds, from exit to process end:")
    for label, times in seconds.items():
        print(f"  {label}: median {statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})")


if __name__ == "__main__":
    main()

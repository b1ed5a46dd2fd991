"""Compare two pipeline run folders: the same training to the last digit, the same decisions after it.

    git worktree add /tmp/before 5bd5854 && (cd /tmp/before && make venv)
    /tmp/before/.venv/bin/kd-edge pipeline --dataset mnist-5k --out /tmp/runs/before
    .venv/bin/kd-edge pipeline --dataset mnist-5k --out /tmp/runs/after
    .venv/bin/python benchmarks/compare_runs.py /tmp/runs/before /tmp/runs/after --markdown out.md

Exits 1 when a training figure differs. Timings (seconds, latencies) are listed, not compared:
they move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def rows(before: dict, after: dict) -> list[tuple[str, object, object, bool]]:
    """(figure, before, after, must be equal)."""
    table = []
    for network in ("teacher", "student"):
        for key in ("epochs", "best_epoch", "val_accuracy", "test_accuracy", "parameters", "macs"):
            table.append((f"{network} {key}", before[network][key], after[network][key], True))
        history = [run[network]["history"] for run in (before, after)]
        cells = [f"{len(h)} epochs" for h in history]
        if history[0] != history[1]:
            cells[1] += ", DIFFERENT"
        table.append((f"{network} history: every epoch's losses and accuracies", *cells, True))
    for key in ("fp32_test_accuracy", "int8_test_accuracy", "excluded_nodes"):
        table.append((f"quantize {key}", before["quantize"].get(key), after["quantize"].get(key), True))
    table.append(("export parity max |diff|", before["export"]["parity"], after["export"]["parity"], True))
    table.append(("bundle form", before["bundle"]["form"], after["bundle"]["form"], False))
    for stage, seconds in before["wall_time_s"].items():
        if stage != "this_invocation":
            table.append((f"{stage} seconds", seconds, after["wall_time_s"].get(stage), False))
    return table


def markdown(table) -> str:
    lines = ["| figure | before | after | same |", "| --- | --- | --- | --- |"]
    for name, old, new, strict in table:
        same = "yes" if old == new else ("NO" if strict else "no (timing)")
        lines.append(f"| {name} | {old} | {new} | {same} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    table = rows(load(args.before), load(args.after))
    text = markdown(table)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0 if all(old == new for _, old, new, strict in table if strict) else 1


if __name__ == "__main__":
    sys.exit(main())

"""What a benchmark script does with its markdown: print it, and append it to ``--markdown FILE`` when given; how it
writes a fraction as a percentage.

Imported by the scripts beside it (``python benchmarks/X.py`` puts this folder on the path)."""

from __future__ import annotations

from pathlib import Path


def show(lines: list[str], markdown: Path | None) -> None:
    text = "\n".join(lines)
    print(text)
    if markdown:
        with markdown.open("a") as handle:
            handle.write("\n" + text + "\n")


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"

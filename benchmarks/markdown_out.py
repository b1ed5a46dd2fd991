"""What a benchmark script does with its markdown: a table, printed, and appended to ``--markdown FILE`` (``show``) or
written to its results file (``save``); a fraction as a percentage.

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


def table(header: list[str], rows: list[list[str]], right: int = 0) -> list[str]:
    """A markdown table's lines; its last ``right`` columns (the numbers) are right-aligned."""
    rule = ["---"] * (len(header) - right) + ["---:"] * right
    return [f"| {' | '.join(cells)} |" for cells in (header, rule, *rows)]


def save(lines: list[str], path: Path) -> None:
    """Write the lines to ``path``, replacing it, and print them."""
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    print(text)

"""A report as blocks (headings, text, tables, images), rendered to Markdown and to self-contained HTML alike,
and the helpers its sections share (JSON files that may be missing, matplotlib where it is installed, the
bundle's forms with their timings, the deployable model with its test split)."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from kd_edge.io import atomic_save_figure


@dataclass
class Document:
    """A report as blocks, rendered to Markdown and to HTML alike."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str):
        self.blocks.append(("h2", text))

    def text(self, text: str):
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list]):
        self.blocks.append(("table", headers, [[str(cell) for cell in row] for row in rows]))

    def image(self, path: Path | None, alt: str, missing: str):
        self.blocks.append(("img", path, alt) if path is not None else ("p", missing))

    def preformatted(self, text: str):
        self.blocks.append(("pre", text))

    def markdown(self, folder: Path) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                lines += [f"## {block[1]}", ""]
            elif kind == "p":
                lines += [block[1], ""]
            elif kind == "table":
                lines += ["| " + " | ".join(block[1]) + " |", "|" + " --- |" * len(block[1])]
                lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in block[2]] + [""]
            elif kind == "img":
                lines += [f"![{block[2]}]({block[1].relative_to(folder)})", ""]
            elif kind == "pre":
                lines += ["```", block[1].rstrip(), "```", ""]
        return "\n".join(lines)

    def html(self) -> str:
        parts = [f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                parts.append(f"<h2>{html.escape(block[1])}</h2>")
            elif kind == "p":
                parts.append(f"<p>{html.escape(block[1])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2]
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode()
                parts.append(
                    f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
                )
            elif kind == "pre":
                parts.append(f"<pre>{html.escape(block[1])}</pre>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
            "pre{background:#f6f6f6;padding:1em;overflow:auto}figcaption{color:#666;font-size:90%}"
        )
        head = f'<meta charset="utf-8"><title>{html.escape(self.title)}</title><style>{style}</style>'
        return f'<!doctype html><html lang="en"><head>{head}</head><body>{"".join(parts)}</body></html>\n'


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def form_sentence(run_dir: Path, bundle: dict) -> str:
    """Which form the bundle ships and why, with the timings that decided it where they were measured (they sit
    beside the bundle, not in its card)."""
    decision = bundle.get("form_decision", {})
    measured = read_json(run_dir / decision["timings"]).get("measured") if "timings" in decision else None
    why = f"{bundle['reason']}: {measured}" if measured else bundle["reason"]
    return f"Deployable form: {bundle['deployable']['form'].upper()}. Why: {why}"


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


NO_PLOT = "(No plot: matplotlib is not installed; `pip install matplotlib` or the `plot` extra adds it.)"


def save(figure, plt, path: Path) -> Path:
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=90)
    plt.close(figure)
    return path


@dataclass(frozen=True)
class BundledForm:
    """One model file of the run's bundle, as the report shows it."""

    file: str
    form: str  # fp32 or int8
    test_score: float | None  # as the card gives it: accuracy, or a detector's F1
    size: int
    label: str
    timings: list[dict]  # its batch-1 results in bench.json


def bundled_forms(run_dir: Path, card: dict, deployable_score, other_key: str) -> list[BundledForm]:
    """The forms in the run's bundle (``card``: its model.json), the deployable one first, its test score
    ``deployable_score`` and each other form's ``other_key`` from the bundle section."""
    bundle = card.get("bundle")
    if not bundle:
        return []
    bench = read_json(run_dir / "bench.json").get("results", [])
    forms = [(bundle["deployable"]["file"], bundle["deployable"]["form"], deployable_score)]
    forms += [(other["file"], other["form"], other.get(other_key)) for other in bundle.get("other_forms", [])]
    return [
        BundledForm(
            file=file, form=form, test_score=score, size=(run_dir / "bundle" / file).stat().st_size,
            label=f"student {form.upper()} ({'deployable' if file == 'model.onnx' else 'other form'})",
            timings=[r for r in bench if Path(r["model"]).name == file and r["batch_size"] == 1],
        )
        for file, form, score in forms
    ]  # fmt: skip


def deployable_on_test(document: Document, run_dir: Path, heading: str, read_test):
    """(the bundle's deployable model, ``read_test(card)``: its test split) under ``heading``; None where there is
    no bundle, or where the split is not here (the report says so)."""
    from kd_edge.errors import KdEdgeError
    from kd_edge.runtime import OnnxModel

    if not (run_dir / "bundle").is_dir():
        return None
    document.heading(heading)
    model = OnnxModel(run_dir / "bundle")
    try:
        return model, read_test(model.card)
    except KdEdgeError as exc:
        document.text(f"(The test split is not here: {exc})")
        return None

"""The docs say what the code does: the configuration reference is generated from the settings, the README is
short and opens with its two commands, and every link between the documents leads somewhere."""

import re
from pathlib import Path

from kd_edge.settings.reference import markdown

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "RESULTS.md",
             *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks" / "results").glob("*.md")]  # fmt: skip


def test_the_configuration_reference_is_what_the_settings_say():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == markdown(), "regenerate it: python -m kd_edge.settings.reference > docs/configuration.md"


def test_the_reference_shows_a_default_changed_in_a_dataclass(monkeypatch):
    from kd_edge.settings import commands

    command = commands.COMMANDS["quantize"]
    changed = type(command.settings)(max_accuracy_drop=0.25)
    monkeypatch.setitem(commands.COMMANDS, "quantize", commands.CommandOptions("quantize", changed, command.options))
    assert "| `--max-accuracy-drop` | 0.25 |" in markdown()


def test_the_readme_is_short_and_opens_with_its_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    first_block = re.search(r"```\n(.*?)```", readme, flags=re.S).group(1)
    assert first_block.split("\n")[:2] == ["make demo", "make test"]


def test_every_relative_link_leads_to_a_file():
    broken = []
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", document.read_text()):
            if not (document.parent / target).exists():
                broken.append(f"{document.relative_to(ROOT)} -> {target}")
    assert not broken, broken

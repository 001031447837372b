"""bench/results.md from the parts' figures: each section is a template, bench/templates/<name>.md, filled in.

A template is Markdown with `$field` / `${field}` placeholders (string.Template; `$$` is a dollar sign). Its
paragraphs, separated by blank lines, may be wrapped over several lines for reading: each is rejoined into
one line, so the generated file has one line per paragraph. A field that holds a block (a table, a code
listing) stands alone as its own paragraph; a field that is empty drops its paragraph, which is how a section
leaves out what was not measured.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from string import Template
from typing import Any

TEMPLATES = Path(__file__).resolve().parent / "templates"

Parts = Mapping[str, Any]  # part name -> its figures (None where never measured)


def table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A Markdown table, one row per line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def code(lines: Iterable[str]) -> str:
    """A fenced block of preformatted lines."""
    return "\n".join(["```", *lines, "```"])


def measured(part: Mapping[str, Any]) -> str:
    """When and where a part was measured, as section headings name it."""
    where = f" on {part['measured_on']}" if "measured_on" in part else ""
    return f"measured {part.get('measured_at', 'at an unrecorded time')}{where}"


def template(name: str) -> Template:
    """bench/templates/<name>.md with each paragraph rejoined into one line."""
    paragraphs = (TEMPLATES / f"{name}.md").read_text().split("\n\n")
    return Template("\n\n".join(" ".join(line.strip() for line in p.strip().splitlines()) for p in paragraphs))


def render(name: str, **fields: Any) -> list[str]:
    """The template filled in: its lines, empty paragraphs dropped, and a blank line after the last."""
    text = template(name).substitute({key: str(value) for key, value in fields.items()})
    return [line for paragraph in text.split("\n\n") if paragraph.strip() for line in [*paragraph.split("\n"), ""]]


def fragment(name: str, **fields: Any) -> str:
    """A rendered template as one block of text, for a field of another template."""
    return "\n".join(render(name, **fields)).rstrip("\n")

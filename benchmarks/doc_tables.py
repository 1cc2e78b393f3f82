"""Write rendered result tables into a Markdown file between two marker lines, leaving the rest as it is."""

from __future__ import annotations

from pathlib import Path


def replace_between_markers(path: Path, start: str, end: str, text: str) -> None:
    """Replace what lies between the lines ``start`` and ``end`` of ``path`` (both must be there)."""
    content = path.read_text()
    if start not in content or end not in content:
        raise SystemExit(f"{path}: add the lines {start} and {end} where the tables go")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}{end}{tail}")

"""Markdown pieces every benchmark report is written with."""
from __future__ import annotations

from collections.abc import Sequence

from .stats import summarise


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table: the header, its rule, one line per row (every row as wide as the header)."""
    for row in rows:
        if len(row) != len(head):
            raise ValueError(f"a table row has {len(row)} cells where the header has {len(head)}: {list(row)}")
    return [_line(head), "|" + "---|" * len(head), *(_line(row) for row in rows)]


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def seconds_range(values: list[float]) -> str:
    """"min–max" of repeated seconds, one decimal."""
    summary = summarise(values)
    return f"{summary.low:.1f}–{summary.high:.1f}"

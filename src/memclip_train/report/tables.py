"""Markdown tables of the reports."""
from __future__ import annotations

from typing import Sequence


def fmt(value: float) -> str:
    """A percentage or score as the tables print it: one decimal."""
    return f"{value:.1f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``| a | b |`` lines: the header, its rule, then one line per row (cells already formatted)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)

"""Markdown pieces every bench report uses: numbers as text, safe cells, tables."""

from __future__ import annotations

from typing import Any

NA = "n/a"


def fmt(value: Any, digits: int = 1) -> str:
    """A number with thousands separators (`digits` decimals for a float); None: n/a."""
    if value is None:
        return NA
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def cell(value: Any, limit: int = 90) -> str:
    """Text safe for one markdown table cell."""
    text = " ".join(str(value).split()).replace("|", "/")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table and the blank line after it."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(c, 200) for c in row) + " |" for row in rows]
    return out + [""]

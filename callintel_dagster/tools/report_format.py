"""Number formatting shared by the markdown reports of `make bench` and the compliance evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fmt(value: Any) -> str:
    """A table cell: "–" for missing, 3 decimals for small floats, 1 for large ones."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def prf(scores: Mapping | None) -> str:
    """"precision / recall / F1" of a flag's scores, or "–"."""
    if not scores:
        return "–"
    return " / ".join(fmt(scores[key]) for key in ("precision", "recall", "f1"))

"""Time spans `(start_s, end_s)`: the one definition of merging and measuring them."""

from __future__ import annotations

from collections.abc import Sequence

Span = tuple[float, float]


def union_spans(spans: Sequence[Span]) -> list[Span]:
    """Sorted, merged, non-empty spans."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def total_length(spans: Sequence[Span]) -> float:
    return float(sum(end - start for start, end in spans))

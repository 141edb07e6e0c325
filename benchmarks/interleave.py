"""Measure A and B side by side: each round runs every measure once, in an order that
alternates round by round, so a drift of the machine (another process, a CPU clock
change) falls on both and not on whichever block ran second."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping


def interleaved(measures: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """``rounds`` values per measure, A B C, C B A, A B C, ... ."""
    names = list(measures)
    values: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            values[name].append(measures[name]())
    return values


def ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the round-by-round ratios (each pair measured back to back)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))

"""Measure A and B side by side: each round runs every measure once, in an order that
alternates round by round, so a drift of the machine (another process, a CPU clock
change) falls on both and not on whichever block ran second."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: This checkout (side B of ``two_trees``).
HERE = Path(__file__).resolve().parent.parent


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


#: ``ask(side, command)``: send a command line to a side's child, return its JSON answer.
Ask = Callable[[str, str], Any]


@contextlib.contextmanager
def two_trees(tree: Path, code: str, args: Callable[[str], list[str]], *,
              cwd: Path | None = None, first_line: str | None = None) -> Iterator[Ask]:
    """A child process per side running ``code`` with ``args(side)``: A on the editgraph
    in ``tree`` (a worktree of another commit), B on this checkout. Each child first
    answers ``{"editgraph": <its package path>}`` (checked against its side), then one
    JSON line per command line; ``first_line`` is sent to each before that. The children
    run in ``cwd`` (default: their checkout) and end when their stdin closes."""
    checkouts = {"A": tree.resolve(), "B": HERE}
    children: dict[str, subprocess.Popen[str]] = {}
    try:
        for side, checkout in checkouts.items():
            child = children[side] = subprocess.Popen(
                [sys.executable, "-c", code, *args(side)],
                env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=cwd or checkout,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            if first_line is not None:
                assert child.stdin is not None
                child.stdin.write(first_line + "\n")
                child.stdin.flush()

        def ask(side: str, command: str) -> Any:
            child = children[side]
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(command + "\n")
            child.stdin.flush()
            return json.loads(child.stdout.readline())

        for side, child in children.items():
            assert child.stdout is not None
            loaded = json.loads(child.stdout.readline())["editgraph"]
            assert loaded.startswith(str(checkouts[side])), loaded
        yield ask
    finally:
        for child in children.values():
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=60)


def answers_interleaved(ask: Ask, rounds: int, command: str = "go") -> dict[str, list[Any]]:
    """``rounds`` answers to ``command`` from each side of ``two_trees``, interleaved."""
    answers: dict[str, list[Any]] = {"A": [], "B": []}

    def one(side: str) -> Callable[[], float]:
        def measure() -> float:
            answers[side].append(ask(side, command))
            return 0.0
        return measure

    interleaved({"A": one("A"), "B": one("B")}, rounds)
    return answers


def summarised(figures: Mapping[str, list[Mapping[str, float]]],
               names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """``answers_interleaved``'s figures as each side's medians of ``names``, and the
    medians of the round-by-round ratios B / A under "B/A"."""
    summary = {side: {name: statistics.median(f[name] for f in figures[side])
                      for name in names} for side in ("A", "B")}
    summary["B/A"] = {name: ratio([f[name] for f in figures["B"]],
                                  [f[name] for f in figures["A"]]) for name in names}
    return summary

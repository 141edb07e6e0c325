"""A progress bar for runs, in the terminal and in Jupyter (rich)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .redact import for_terminal

__all__ = ["progress_bar"]

#: Runs with fewer edits than this finish too fast for a bar to help.
MIN_EDITS_FOR_BAR = 5


class _Bar:
    """Adapts a rich Progress to the scheduler's ``advance(name, cached)``."""

    def __init__(self, progress: Progress, total: int) -> None:
        self._progress = progress
        self._task = progress.add_task("editing", total=total, cached=0)
        self._cached = 0

    def advance(self, name: str, cached: bool) -> None:
        self._cached += cached
        self._progress.update(self._task, advance=1, cached=self._cached,
                              description=for_terminal(f"{name[:24]:<24}"))

    def update(self, name: str, fraction: float) -> None:
        """How far one edit's generation is (an asynchronous provider reports it)."""
        label = f"{name[:18]} {fraction:4.0%}"
        self._progress.update(self._task, description=f"{label:<24}")


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        # rich draws in a notebook through ipywidgets (the `notebook` extra); without it,
        # it would print a warning instead of a bar.
        return importlib.util.find_spec("ipywidgets") is not None
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(total: int, *, enabled: bool | None = None) -> Iterator[_Bar | None]:
    """A bar for ``total`` edits; by default only on long runs in a terminal or notebook."""
    if enabled is None:
        enabled = total >= MIN_EDITS_FOR_BAR and _interactive()
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[cached]} cached"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        yield _Bar(progress, total)

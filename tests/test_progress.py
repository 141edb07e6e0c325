"""The progress bar: on long runs in a terminal, off otherwise, never in the way."""

from __future__ import annotations

import pytest

from editgraph import progress


def test_no_bar_when_not_interactive() -> None:
    """Off a terminal (CI, pipes) the default is no bar."""
    with progress.progress_bar(100) as bar:
        assert bar is None


def test_forced_bar_counts_edits_and_cached() -> None:
    """With enabled=True the bar advances once per edit and counts the cached ones."""
    with progress.progress_bar(3, enabled=True) as bar:
        assert bar is not None
        bar.advance("a", cached=True)
        bar.advance("b", cached=False)
        task = bar._progress.tasks[0]
        assert task.completed == 2 and task.fields["cached"] == 1


def test_short_runs_get_no_bar_even_when_interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs under MIN_EDITS_FOR_BAR edits finish too fast for a bar to help."""
    monkeypatch.setattr(progress, "_interactive", lambda: True)
    with progress.progress_bar(progress.MIN_EDITS_FOR_BAR - 1) as bar:
        assert bar is None
    with progress.progress_bar(progress.MIN_EDITS_FOR_BAR) as bar:
        assert bar is not None

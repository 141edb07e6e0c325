"""The exception hierarchy: every error editgraph raises derives from EditGraphError.

    EditGraphError           base class; catch it to catch anything editgraph raises
    ├── GraphError           an invalid graph, parameter, source or recipe input, raised
    │   │                    before any provider call (node, field and value in the message)
    │   └── RecipeError      a recipe file is missing, broken, or given a parameter it lacks
    ├── ConfigurationError   a provider, store or host setting is missing or invalid (an
    │                        API key, a base URL), found before any call
    ├── ProviderError        one provider call failed for good (after any retries)
    │   └── ModerationError  the service refused the request or withheld the result
    ├── OperationError       a local operation (an op node) failed on its inputs
    ├── InputFailedError     an edit could not run because one of its inputs failed
    ├── BudgetError          a run would spend more than its budget
    ├── StoreError           the cache cannot be opened, read or written
    │   └── StoreLockedError another process held the cache's database past the lock
    │                        timeout (a write waited and gave up; nothing else is wrong)
    ├── ProvenanceError      a saved record (an image's embedded provenance, a run
    │                        folder's manifest) is missing, malformed or points outside
    │                        its folder
    ├── RunError             a run ended with failures; ``.failures`` maps node -> error
    └── RunInterrupted       SIGINT or SIGTERM stopped a run (also a KeyboardInterrupt);
                             ``.run`` holds what finished

Errors of the libraries underneath (pydantic, httpx, zlib, diskcache, Pillow) are turned
into these where they cross into editgraph's public functions (``raise ... from exc``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # runs sits above the errors every module shares
    from .runs import Run

__all__ = [
    "BudgetError",
    "ConfigurationError",
    "EditGraphError",
    "GraphError",
    "InputFailedError",
    "ModerationError",
    "OperationError",
    "ProvenanceError",
    "ProviderError",
    "RecipeError",
    "RunError",
    "RunInterrupted",
    "StoreError",
    "StoreLockedError",
]


class EditGraphError(Exception):
    """Base class of every error editgraph raises."""


class GraphError(EditGraphError, ValueError):
    """An invalid graph, parameter or source, found before any provider call."""


class RecipeError(GraphError):
    """A recipe file is missing, broken, or was given parameters it does not take."""


class ConfigurationError(EditGraphError, ValueError):
    """A provider, store or host setting is missing or invalid, found before any call.

    The message names the setting (``TOGETHER_API_KEY``, ``api_key=``...), never a secret.
    """


class ProviderError(EditGraphError):
    """A provider call failed for good.

    ``node`` is the edit it was for; ``status`` the HTTP status when there was one;
    ``possibly_billed`` is true when a try ended with an unknown outcome, so the
    service may have charged for a generation whose answer was lost.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        status: int | None = None,
        possibly_billed: bool = False,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.status = status
        self.possibly_billed = possibly_billed


class ModerationError(ProviderError):
    """The service's moderation blocked an edit (its request or its result).

    Constructed like ``ProviderError``, message first. Never retried silently: a batch
    records the item as ``moderated``.
    """


class OperationError(EditGraphError):
    """A local operation (an op node, or an ``eg.ops`` function called directly) failed.

    It costs nothing and fails only that node and what depends on it; ``node`` is the
    op node when it ran in a graph.
    """

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class InputFailedError(EditGraphError):
    """An edit was not run because an edit it takes as input failed."""

    def __init__(self, node: str, failed_input: str) -> None:
        super().__init__(f"node {node!r}: not run because its input {failed_input!r} failed")
        self.node = node
        self.failed_input = failed_input


class BudgetError(EditGraphError):
    """A run's estimated spend would pass the budget it was given."""


class StoreError(EditGraphError):
    """The cache cannot be opened, read or written (or holds something unsafe)."""


class StoreLockedError(StoreError):
    """Another process held the cache's database for the whole lock timeout: the write
    gave up. Trying each write of the commit again alone would wait as long again."""


class ProvenanceError(EditGraphError, ValueError):
    """A saved record is missing, malformed, or names a file outside its run folder.

    Raised by ``eg.provenance`` (an image with no record, or a damaged one), and by
    ``report`` and ``replay`` for a manifest field they refuse to follow.
    """


class RunError(EditGraphError):
    """A run ended with failed edits; every finished edit is kept in the cache.

    ``failures`` maps each failed node, including those that could not run because an
    input failed, to its exception. ``run`` holds the results that did finish.
    """

    def __init__(self, failures: Mapping[str, BaseException], run: Run | None = None) -> None:
        self.failures = dict(failures)
        self.run = run
        super().__init__("\n".join(f"{name}: {error}" for name, error in self.failures.items()))


class RunInterrupted(EditGraphError, KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM stopped a run.

    The first signal drains: no new edit starts, the edits in flight finish and are
    cached, and then this is raised with ``.run`` holding every finished result
    (``run.in_flight``, ``run.not_run``). A second SIGINT abandons at once
    (``run.abandoned``): the edits that were in flight may have been billed. A
    KeyboardInterrupt too, so that a script stops as on any Ctrl-C unless it asks
    otherwise (being an EditGraphError, ``except Exception`` also catches it).
    """

    def __init__(self, run: object, signal_number: int) -> None:
        self.run = run
        self.signal_number = signal_number
        abandoned = getattr(run, "abandoned", False)
        super().__init__(
            f"run {'abandoned' if abandoned else 'interrupted'} by signal {signal_number}; "
            "finished edits are cached: run again to continue"
        )

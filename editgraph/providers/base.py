"""The provider protocol: anything with a ``name`` and an async ``generate``."""

from __future__ import annotations

import contextlib
import contextvars
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from ..models import ModelSpec
from ..requests import EditRequest, GeneratedImage, Submission

__all__ = [
    "Provider",
    "SubmissionJournal",
    "check_edit",
    "current_journal",
    "journal_for",
    "progress_to",
    "report_progress",
]


@runtime_checkable
class Provider(Protocol):
    """Turns one EditRequest into one image.

    ``name`` is part of every cache key, so results of different providers never mix.
    A provider keeps no event-loop-bound state between calls: one object may serve many
    runs, graphs and event loops.

    Optionally, a provider may define ``session()``, an async context manager the engine
    enters around each run (Together shares one HTTP client and its connections there),
    ``check_edit(node, model, parameters)``, which raises ``GraphError`` for an edit it
    cannot serve (a model it does not host, a format it does not make), called when an
    edit is declared for a graph with that provider and before a run spends.
    """

    name: str

    async def generate(self, request: EditRequest) -> GeneratedImage:
        """Generate the image ``request`` describes; raise on failure."""
        ...


def base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a provider's base URL (not http(s), no host, a port that is
    no port, a user:password@), or None: said when the provider is made, not by every edit at run time."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "it must start with http:// or https://"
    if not parts.hostname:
        return "it names no host"
    if parts.username is not None or parts.password is not None:
        # The API key is sent as a bearer token; a user:password@ cannot go beside it.
        return "user:password@ cannot be sent beside the API key; remove it"
    return None


def check_edit(
    provider: object, node: str, model: ModelSpec, parameters: Mapping[str, Any]
) -> None:
    """Ask ``provider`` whether it can serve this edit (a no-op for providers that cannot say)."""
    check = getattr(provider, "check_edit", None)
    if callable(check):
        check(node, model, parameters)


class SubmissionJournal(Protocol):
    """Where an asynchronous provider notes a paid task before polling it, for one edit.

    The engine hands one to each provider call (``journal_for``); a provider that submits
    and polls (BFL) looks there first and resumes a task it finds. ``may_submit`` is
    false under ``editgraph resume``, which finishes journaled tasks and starts none.
    """

    may_submit: bool

    def find(self) -> Submission | None:
        """The task journaled for this edit, if any."""
        ...

    async def record(self, submission: Submission) -> None:
        """Journal a task just submitted: durably committed when this returns, so before
        its first poll (the store's write may happen off the event loop)."""
        ...

    def abandon(self, submission: Submission, reason: str) -> None:
        """The task was paid for and its result can no longer be had: billed, not delivered."""
        ...

    def discard(self) -> None:
        """The task ended without an image to collect (moderated, failed): forget it."""
        ...


_journal: contextvars.ContextVar[SubmissionJournal | None] = contextvars.ContextVar(
    "editgraph_submission_journal", default=None
)
_progress: contextvars.ContextVar[Callable[[str, float], None] | None] = contextvars.ContextVar(
    "editgraph_progress_listener", default=None
)


def current_journal() -> SubmissionJournal | None:
    """The submission journal of the edit being generated in this task, if the engine keeps one."""
    return _journal.get()


@contextlib.contextmanager
def journal_for(journal: SubmissionJournal | None) -> Iterator[None]:
    """Make ``journal`` the current one for the provider call made inside."""
    token = _journal.set(journal)
    try:
        yield
    finally:
        _journal.reset(token)


def report_progress(node: str, fraction: float) -> None:
    """Tell the run's progress display how far one edit's generation is (0 to 1)."""
    listener = _progress.get()
    if listener is not None:
        listener(node, max(0.0, min(1.0, fraction)))


@contextlib.contextmanager
def progress_to(listener: Callable[[str, float], None] | None) -> Iterator[None]:
    """Send the ``report_progress`` calls made inside to ``listener``."""
    token = _progress.set(listener)
    try:
        yield
    finally:
        _progress.reset(token)

"""Fault injection and checks shared by the fakes: settings, `fail_next`, seeded faults, keys."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar

from ._server import Request, Response

#: What a faulty generation or submission does: an error status, or a dropped connection
#: before the work is done (not billed) or after (billed).
FaultKind = Literal["500", "503", "429", "drop_before", "drop_after"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = ("500", "503", "429", "drop_before", "drop_after")

_Kind = TypeVar("_Kind", bound=str)


def format_seconds(seconds: float) -> str:
    """Seconds for a Retry-After header: integral values plain, others to the millisecond."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def check_settings(*, latency: float, url_ttl: float, fault_rate: float) -> None:
    """Refuse the settings every fake takes when they make no sense (a ValueError naming one)."""
    if latency < 0:
        raise ValueError(f"latency must be >= 0 seconds, got {latency!r}")
    if url_ttl < 0:
        raise ValueError(f"url_ttl must be >= 0 seconds, got {url_ttl!r}")
    if not 0.0 <= fault_rate <= 1.0:
        raise ValueError(f"fault_rate must be between 0 and 1, got {fault_rate!r}")


@dataclass(frozen=True)
class ScheduledFailure:
    """One queued answer from ``fail_next``."""

    status: int
    retry_after: float | None = None
    message: str | None = None
    ratelimit_reset: float | None = None

    def headers(self) -> dict[str, str]:
        """``Retry-After`` and ``x-ratelimit-reset``, for those that were given."""
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = format_seconds(self.retry_after)
        if self.ratelimit_reset is not None:
            headers["x-ratelimit-reset"] = format_seconds(self.ratelimit_reset)
        return headers


class FailureQueue:
    """The ``fail_next`` queue: filled from the test's thread, taken on the server's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[ScheduledFailure] = deque()

    def add(self, failure: ScheduledFailure, times: int) -> None:
        """Queue ``failure`` for the next ``times`` requests (an error status, times >= 1)."""
        if not 400 <= failure.status <= 599:
            raise ValueError(
                f"status must be an HTTP error status (400-599), got {failure.status!r}"
            )
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times!r}")
        with self._lock:
            self._queue.extend([failure] * times)

    def take(self) -> ScheduledFailure | None:
        """The next queued failure, if any."""
        with self._lock:
            return self._queue.popleft() if self._queue else None


class FaultDraws(Generic[_Kind]):
    """Random faults among ``kinds``, reproducible for a seed in arrival order.

    Every draw takes two numbers from the stream whether or not it faults, so which
    request faults depends only on its place in the order of arrival. Touched only on
    the server's loop.
    """

    def __init__(self, seed: int | str, kinds: Sequence[_Kind]) -> None:
        self._rng = random.Random(seed)
        self._kinds = tuple(kinds)

    def draw(self, rate: float) -> _Kind | None:
        """The next request's fault at ``rate`` (0..1), or None."""
        roll = self._rng.random()
        kind = self._kinds[self._rng.randrange(len(self._kinds))]
        return kind if roll < rate else None


def key_refusal(expected: str | None, given: str, *, missing_status: int = 401) -> int | None:
    """The status that refuses a request's key (``missing_status`` for none), or None to accept.

    ``expected`` None accepts any request.
    """
    if expected is None:
        return None
    if not given:
        return missing_status
    return None if given == expected else 401


def drop_connection(request: Request) -> Response:
    """Close the connection without answering; the server then discards the response."""
    request.abort()
    return Response(500)

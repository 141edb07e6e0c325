"""What the HTTP providers share: the retry loop, Retry-After, TLS and the
signals one try gives the retry policy (a request not sent, a retryable status, an
unknown outcome)."""

from __future__ import annotations

import email.utils
import functools
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field

import httpx
import stamina

__all__ = [
    "CallState",
    "NotSent",
    "RetryableFailure",
    "RetryableStatus",
    "UnknownOutcome",
    "retry_after",
    "retrying",
    "tls_context",
    "without_userinfo",
]

#: Retry-After values the client obeys (seconds); longer ones fall back to backoff, as the
#: Together SDK does, so a bogus header cannot stall a run for hours.
MAX_RETRY_AFTER = 60.0

#: Backoff when the service gives no Retry-After: 1 s, 2 s, 4 s ... capped, plus jitter.
_BACKOFF_INITIAL = 1.0
_BACKOFF_MAX = 30.0
_BACKOFF_JITTER = 1.0


def retrying(
    on: Callable[[Exception], bool | float], *, attempts: int | None
) -> AsyncIterable[stamina.Attempt]:
    """stamina's retry loop with editgraph's backoff: 1 s, 2 s, 4 s … up to 30 s, jittered."""
    return stamina.retry_context(
        on=on,
        attempts=attempts,
        timeout=None,
        wait_initial=_BACKOFF_INITIAL,
        wait_max=_BACKOFF_MAX,
        wait_jitter=_BACKOFF_JITTER,
    )


def without_userinfo(url: str) -> str:
    """``url`` without any ``user:password@`` (what messages and reprs may show)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client: it holds no event-loop state, and building one
    (loading the CA bundle) costs about 20 ms of CPU."""
    return httpx.create_ssl_context()


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the service asks to wait, if sane.

    ``retry-after-ms``, then ``Retry-After`` (what the SDKs read), then
    ``x-ratelimit-reset`` (seconds; the header Together documents for its rate limits).
    """
    delay: float | None = None
    if (milliseconds := headers.get("retry-after-ms")) is not None:
        try:
            delay = float(milliseconds) / 1000.0
        except ValueError:
            delay = None
    if delay is None and (value := headers.get("retry-after")) is not None:
        try:
            delay = float(value)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            delay = (
                float(email.utils.mktime_tz(parsed) - time.time()) if parsed is not None else None
            )
    if delay is None and (reset := headers.get("x-ratelimit-reset")) is not None:
        try:
            delay = float(reset)
        except ValueError:
            delay = None
    if delay is None or not 0 < delay <= MAX_RETRY_AFTER:
        return None
    return delay


class RetryableFailure(Exception):
    """One try failed in a way that may succeed when tried again."""

    def __init__(self, description: str, *, status: int | None = None, delay: float | None = None):
        super().__init__(description)
        self.description = description
        self.status = status
        self.delay = delay


class NotSent(RetryableFailure):
    """The request never reached the service (nothing can have been billed)."""


class RetryableStatus(RetryableFailure):
    """The service answered with a status worth retrying (408, 409, 429, 5xx)."""


class UnknownOutcome(RetryableFailure):
    """The request was sent and the answer lost: the image may have been generated."""


@dataclass
class CallState:
    """What one ``generate()`` learns across its tries."""

    unknown_outcomes: int = 0
    tries: int = 0
    failures: int = 0
    started: float = field(default_factory=time.monotonic)

"""What the HTTP providers share: their clients (one per run), the retry loop,
Retry-After, TLS, the signals one try gives the retry policy (a request not sent, a
retryable status, an unknown outcome), the result download with its deadline, and
how a failure becomes a ``ProviderError``."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import functools
import logging
import random
import ssl
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import stamina

from .._version import USER_AGENT
from ..downloads import Answer, DownloadError, Opener, fetch_once, is_internal_host
from ..errors import ProviderError
from ..redact import redact
from ..requests import EditRequest
from ._transport import KEEPALIVE_EXPIRY, MAX_KEEPALIVE, AiohttpTransport, new_transport

__all__ = [
    "CallState",
    "Clients",
    "DownloadTimedOut",
    "NotSent",
    "RetryableFailure",
    "RetryableStatus",
    "UnknownOutcome",
    "billable_retry_policy",
    "classified",
    "direct_transport",
    "download_result",
    "internal_base",
    "json_object",
    "make_error",
    "opener_for",
    "retry_after",
    "retrying",
    "tls_context",
    "with_retries",
    "within",
    "without_userinfo",
]

logger = logging.getLogger("editgraph")

T = TypeVar("T")

#: Downloads of a finished result are idempotent GETs: retried on their own, so a lost
#: download never re-runs (and re-bills) the generation.
DOWNLOAD_ATTEMPTS = 4

#: Retry-After values the client obeys (seconds); longer ones fall back to backoff, as the
#: Together SDK does, so a bogus header cannot stall a run for hours.
MAX_RETRY_AFTER = 60.0

#: Backoff when the service gives no Retry-After: 1 s, 2 s, 4 s ... capped, plus jitter.
_BACKOFF_INITIAL = 1.0
_BACKOFF_MAX = 30.0
_BACKOFF_JITTER = 1.0


def retrying(
    on: Callable[[Exception], bool | float], *, attempts: int | None,
    wait_initial: float = _BACKOFF_INITIAL,
) -> AsyncIterable[stamina.Attempt]:
    """stamina's retry loop with editgraph's backoff: 1 s, 2 s, 4 s … up to 30 s, jittered."""
    return stamina.retry_context(
        on=on,
        attempts=attempts,
        timeout=None,
        wait_initial=wait_initial,
        wait_max=_BACKOFF_MAX,
        wait_jitter=_BACKOFF_JITTER,
    )


async def with_retries(
    call: Callable[[], Awaitable[T]], on: Callable[[Exception], bool | float], *,
    attempts: int | None,
) -> T:
    """``await call()`` until it returns, retrying the failures ``on`` allows (stamina's
    ``on=`` contract: False, True for backoff, or seconds to wait), ``attempts`` tries in
    all (None: as long as ``on`` allows).

    The first try runs bare: nearly every call succeeds at once, and setting up stamina's
    loop costs about 40 µs of CPU, twice per edit. Only after a failure ``on`` retries does
    stamina take over, after the wait ``on`` asked for (none under
    ``stamina.set_testing``), with a backoff that continues the sequence (2 s, 4 s …).
    """
    try:
        return await call()
    except Exception as exc:
        verdict = on(exc)
        if verdict is False or attempts == 1 or not stamina.is_active():
            raise
        wait = (verdict if not isinstance(verdict, bool)
                else _BACKOFF_INITIAL + random.uniform(0, _BACKOFF_JITTER))
    if not stamina.is_testing():
        await asyncio.sleep(wait)
    async for attempt in retrying(on, attempts=None if attempts is None else attempts - 1,
                                  wait_initial=2 * _BACKOFF_INITIAL):
        with attempt:
            return await call()
    raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """``await awaitable`` within ``seconds``, else ``TimeoutError`` (it is cancelled).

    ``asyncio.timeout`` where there is one (Python 3.11): ``wait_for`` runs the awaitable
    in a task of its own, about 20 µs of CPU more, twice per edit.
    """
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


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


class Clients:
    """The httpx client a provider's calls use: one per run, shared through a context
    variable while the engine holds ``session()``, else one per call.

    Nothing outlives a session, so the provider object stays free of event-loop-bound
    state between runs. The transport is aiohttp's when installed (``_transport``).
    """

    def __init__(self, name: str, timeout: float, *, follow_redirects: bool) -> None:
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self._shared: contextvars.ContextVar[httpx.AsyncClient | None] = (
            contextvars.ContextVar(name, default=None)
        )

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Share one client (and its connections) among the calls made inside."""
        async with self.new() as client:
            token = self._shared.set(client)
            try:
                yield
            finally:
                self._shared.reset(token)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """The session's client, or a new one for this call alone."""
        shared = self._shared.get()
        if shared is not None:
            yield shared
            return
        async with self.new() as client:
            yield client

    def new(self) -> httpx.AsyncClient:
        """A new client: editgraph's User-Agent, TLS context and timeouts."""
        transport = new_transport(tls_context())
        client = httpx.AsyncClient(
            transport=transport,
            verify=tls_context(),
            timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=self.follow_redirects,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=MAX_KEEPALIVE,
                                keepalive_expiry=KEEPALIVE_EXPIRY),
        )
        if isinstance(transport, AiohttpTransport):
            _DIRECT[client] = transport
        return client


#: The aiohttp transport under each client ``Clients`` made with one (see
#: ``direct_transport``).
_DIRECT: weakref.WeakKeyDictionary[httpx.AsyncClient, AiohttpTransport] = (
    weakref.WeakKeyDictionary())


def direct_transport(client: httpx.AsyncClient) -> AiohttpTransport | None:
    """The aiohttp transport under ``client`` when ``Clients`` made it with one: the hot
    path (a generation's POST, a result's GET) then sends through it directly, skipping
    httpx's per-request machinery, about a third of the provider's CPU per edit (the
    request and URL models, header merges, cookie extraction, the redirect loop and the
    response stream; docs/performance.md). None for any other client (httpcore's
    transport, a caller's own client): those go through httpx as usual."""
    return _DIRECT.get(client)


def opener_for(client: httpx.AsyncClient) -> Opener | None:
    """How a result download sends its GETs through ``client``: straight through its
    aiohttp transport (``direct_transport``), else None (through httpx). Made once per
    client and timeout (``_OPENERS``)."""
    direct = direct_transport(client)
    if direct is None:
        return None
    timeout = client.timeout
    made = _OPENERS.get(client)
    if made is None or made[0] is not timeout:
        made = _OPENERS[client] = (timeout, _direct_opener(direct, timeout))
    return made[1]


#: Each client's opener of direct GETs, with the timeout it was made for.
_OPENERS: weakref.WeakKeyDictionary[httpx.AsyncClient, tuple[httpx.Timeout, Opener]] = (
    weakref.WeakKeyDictionary())


def _direct_opener(transport: AiohttpTransport, timeout: httpx.Timeout) -> Opener:
    """``downloads.Opener`` of GETs straight through ``transport``: the headers a client
    of ``Clients`` would send (its User-Agent, ``Accept: */*``) and the download's own.

    No read timeout: ``download_result`` holds the whole download (retries and redirects
    included) to one deadline, which the providers set to their read timeout, so a timer
    per read could never fire first; aiohttp re-arms it for every chunk that arrives
    (a TimerHandle made and cancelled about a dozen times per megabyte)."""
    bounded = httpx.Timeout(connect=timeout.connect, read=None, write=timeout.write,
                            pool=timeout.pool)

    def opened(
        url: str, headers: Mapping[str, str], sni_hostname: str | None
    ) -> contextlib.AbstractAsyncContextManager[Answer]:
        return transport.open("GET", url, headers={**_GET_HEADERS, **headers}, timeout=bounded,
                              sni_hostname=sni_hostname)

    return opened


_GET_HEADERS = {"User-Agent": USER_AGENT, "Accept": "*/*"}


async def internal_base(base_url: str) -> bool:
    """Whether the service itself is on a loopback, private or link-local address: then
    its result URLs may be too (a local fake, a private gateway)."""
    parts = urllib.parse.urlsplit(base_url)
    return await is_internal_host(parts.hostname or "", parts.port)


#: Result downloads through one client take turns: at most this many receive at once
#: (0: no turns). Sixteen results of a layer downloaded all at once share the CPU and
#: all finish at the end of the burst, so every edit that needs them starts late, layer
#: after layer; in turns they finish one after another, and the edits they complete
#: start while the rest arrive (benchmarks/critical_path.py; docs/performance.md).
DOWNLOAD_TURNS = 4

#: A download that waited this long (seconds) for its turn goes anyway: a slow or far
#: result server must not hold the others back (over long round trips, downloads side by
#: side finish sooner than in turns), and a stalled one holds no one for long.
TURN_PATIENCE = 0.05

#: The turns of each client's downloads (``download_result``).
_TURNS: weakref.WeakKeyDictionary[httpx.AsyncClient, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary())


async def _take_turn(client: httpx.AsyncClient) -> asyncio.Semaphore | None:
    """A turn to download through ``client`` (``DOWNLOAD_TURNS``): the semaphore to
    release when done, or None after ``TURN_PATIENCE`` seconds of waiting for one (or
    with no turns). A plain coroutine, not a context manager: it runs once per download,
    and an async generator costs the loop's hooks each time."""
    if DOWNLOAD_TURNS <= 0:
        return None
    turns = _TURNS.get(client)
    if turns is None:
        turns = _TURNS[client] = asyncio.Semaphore(DOWNLOAD_TURNS)
    if turns.locked():
        try:
            await within(turns.acquire(), TURN_PATIENCE)
        except asyncio.TimeoutError:
            return None  # waited long enough: go alongside the others
    else:
        await turns.acquire()
    return turns


class DownloadTimedOut(Exception):
    """A result download (redirects and retries included) ran past its deadline."""


async def download_result(
    client: httpx.AsyncClient, url: str, *, limit: int, timeout: float, internal_ok: bool,
    node: str,
) -> bytes:
    """Fetch a finished result within one deadline of ``timeout`` seconds, retrying a
    transport failure, 429 or 5xx up to ``DOWNLOAD_ATTEMPTS`` tries in all.

    Raises ``DownloadError`` (final, or the last retryable one) or ``DownloadTimedOut``.
    """

    def should_retry(exc: Exception) -> bool | float:
        if isinstance(exc, DownloadError) and exc.retryable:
            logger.info("node %r: result %s; downloading again", node, redact(exc.reason))
            delay = retry_after(exc.headers)
            return delay if delay is not None else True
        return False

    opener = opener_for(client)

    async def once() -> bytes:
        turn = await _take_turn(client)  # each try takes its turn; a backoff holds none
        try:
            return await fetch_once(client, url, limit=limit, internal_ok=internal_ok,
                                    opener=opener)
        finally:
            if turn is not None:
                turn.release()

    try:
        return await within(with_retries(once, should_retry, attempts=DOWNLOAD_ATTEMPTS), timeout)
    except asyncio.TimeoutError as exc:
        raise DownloadTimedOut(f"did not finish within {timeout:g} s") from exc


def make_error(
    kind: type[ProviderError], request: EditRequest, message: str, status: int | None,
    state: CallState | None, *, billed: bool, shown: Callable[[str], str],
) -> ProviderError:
    """A provider's final error for ``request``: the node named, earlier unknown outcomes
    told, ``possibly_billed`` set, the text passed through ``shown`` (redaction)."""
    unknown = state.unknown_outcomes if state is not None else 0
    text = f"node {request.node!r}: {message}"
    if unknown and "may have been" not in message:
        text += f" ({unknown} earlier try(s) had an unknown outcome and may have been billed)"
    return kind(shown(text), node=request.node, status=status,
                possibly_billed=billed or unknown > 0)


class classified:
    """Turn the transport errors of one request that may bill into retry signals.

    Never reached the service (connect, pool, write): ``NotSent``. Sent and the answer
    lost (a read timeout, a drop, a broken answer): ``UnknownOutcome``, counted in
    ``state``. Other httpx errors pass through for the caller to report. (A class rather
    than a generator-based context manager: it runs once per try.)
    """

    __slots__ = ("_read_timeout", "_shown_base_url", "_state")

    def __init__(self, state: CallState, shown_base_url: str, read_timeout: float) -> None:
        self._state = state
        self._shown_base_url = shown_base_url
        self._read_timeout = read_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: object
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            raise NotSent(
                f"could not connect to {self._shown_base_url} ({type(exc).__name__})"
            ) from exc
        if isinstance(exc, (httpx.WriteError, httpx.WriteTimeout)):
            # The body did not get out whole: the service cannot have acted on it.
            raise NotSent(
                f"could not send the request to {self._shown_base_url} ({type(exc).__name__})"
            ) from exc
        if isinstance(exc, (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)):
            self._state.unknown_outcomes += 1
            reason = (
                f"no answer within {self._read_timeout:g} s"
                if isinstance(exc, httpx.ReadTimeout)
                else "the connection dropped after the request was sent"
            )
            raise UnknownOutcome(reason) from exc


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body of ``response`` as a JSON object; None when it is not one."""
    try:
        payload = response.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def billable_retry_policy(
    state: CallState, node: str, *, max_retries: int, unknown_outcome_retries: int,
    patience: float, waits: Callable[[RetryableFailure], bool],
    shown: Callable[[str], str],
) -> Callable[[Exception], bool | float]:
    """stamina's ``on=`` hook for a request that may bill (a generation, a submission).

    An unknown outcome is retried at most ``unknown_outcome_retries`` times in all. A
    failure for which ``waits`` is true (a 429; for BFL also a request never sent) is
    "wait", not "broken": it spends no retry and is bounded by ``patience`` seconds since
    the call started. Any other retryable failure spends one of ``max_retries``. Each
    retry is logged (INFO); the answer is the delay the service asked for, or True.
    """

    def should_retry(exc: Exception) -> bool | float:
        if isinstance(exc, UnknownOutcome):
            again = state.unknown_outcomes <= unknown_outcome_retries
            if again:
                logger.info("node %r: %s (it may have been billed); sending it again "
                            "(try %d)", node, shown(exc.description), state.tries + 1)
            return again
        if not isinstance(exc, RetryableFailure):
            return False
        if waits(exc):
            if time.monotonic() - state.started > patience:
                return False
        else:
            state.failures += 1
            if state.failures > max_retries:
                return False
        wait = f"in {exc.delay:g} s" if exc.delay is not None else "after a backoff"
        logger.info("node %r: %s; retrying %s (try %d)", node, shown(exc.description), wait,
                    state.tries + 1)
        return exc.delay if exc.delay is not None else True

    return should_retry

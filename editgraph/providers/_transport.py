"""The HTTP transport under the providers' httpx clients: aiohttp when it is installed.

httpx stays the API (requests, responses, timeouts, the exception tree); what moves the
bytes is chosen here, once:

- ``AiohttpTransport`` (the ``aiohttp`` extra): aiohttp's connection pool and parser. The
  default httpcore pool re-scans every waiting request on each state change
  (``_assign_requests_to_connections``, quadratic in requests waiting,
  encode/httpcore#1035) and reads a body in 64 KB steps through several layers: with 16
  to 32 generations in flight and 1 MB results it cost 5 to 10 times the CPU per edit
  (docs/performance.md has the figures).
- otherwise httpx's own transport (httpcore), with the pool settings below.

Why not the ``httpx-aiohttp`` package (what the OpenAI and Together SDKs offer): its error
map turns ``ServerDisconnectedError`` — the connection dropped *after* the request was
sent — into ``httpx.ConnectTimeout``, which the providers must read as "never sent, retry
freely": a paid generation could be bought twice without being reported. Here every
aiohttp error maps onto the httpx exception that says the same thing about whether the
request left (``aiohttp_errors``), and anything unknown maps to a read error (an unknown
outcome) rather than to "not sent". It also reads bodies in 16 KB pieces; this one takes
whatever the socket has (``iter_any``).

The providers' hot path (a generation's POST, a result's GET) skips even httpx's client
machinery when the client runs on this transport: ``AiohttpTransport.open`` sends one
request straight through aiohttp and reads a body of declared length whole
(``DirectAnswer``). httpx's request and URL models, header merges, cookie extraction,
redirect loop and response stream were a third of the provider's CPU per edit with 1 MB
results (4.4 -> 3.7 ms, then 2.4 ms with the other cuts, against 2.0 for aiohttp alone).
Errors are the same httpx exceptions (``aiohttp_errors``), each request is logged on
httpx's logger as httpx logs it, and a POST answered with a redirect is sent again through
httpx, which follows it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..downloads import BodyTooLarge, CappedBody

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpTransport", "DirectAnswer", "aiohttp_available", "new_transport"]

#: httpx's logger: a request sent by ``AiohttpTransport.open`` is logged there as httpx
#: logs one it sends (INFO ``HTTP Request: ...``), so the two paths read alike.
_httpx_log = logging.getLogger("httpx")

#: Idle connections kept per client (the engine runs up to its concurrency at once).
MAX_KEEPALIVE = 64
#: How long an idle connection is kept (seconds): httpx's default, short enough that a
#: server rarely closes one under us (a POST on a connection the server just closed is
#: an unknown outcome for either transport).
KEEPALIVE_EXPIRY = 5.0


def aiohttp_available() -> bool:
    """Whether aiohttp 3.10 or later can be imported (the ``aiohttp`` extra, or
    ``testing``): the error classes the map below names came with 3.10."""
    try:
        import aiohttp
    except ImportError:
        return False
    return hasattr(aiohttp, "SocketTimeoutError") and hasattr(aiohttp, "NonHttpUrlClientError")


def new_transport(verify: ssl.SSLContext) -> httpx.AsyncBaseTransport | None:
    """The transport for one new client: aiohttp's when installed and no proxy is set in
    the environment; None for httpx's own (httpcore), which honours ``HTTP(S)_PROXY``,
    ``ALL_PROXY`` and ``NO_PROXY`` (httpx reads them only when it builds the transport).

    The caller gives the httpcore pool no bound on connections and keeps 64 idle ones: a
    bound would queue requests inside httpcore, where each queued one is re-scanned on
    every change (the quadratic part); the engine's concurrency already bounds how many
    are in flight.
    """
    proxies = urllib.request.getproxies()
    if any(scheme in proxies for scheme in ("http", "https", "all")):
        return None
    if aiohttp_available():
        return AiohttpTransport(verify)
    return None


class _AiohttpErrors:
    """The context manager of ``aiohttp_errors``: a class, not a generator (it runs eight
    times per generated edit; a generator-based one costs a generator and its wrapper
    each time). Stateless, so one instance serves every use."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: object
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return  # nothing raised, or a cancellation / exit: passes through as is
        import aiohttp

        if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connecting, or waiting for the pool
            raise httpx.ConnectTimeout(str(exc) or "connect timeout") from exc
        if isinstance(exc, aiohttp.SocketTimeoutError):  # no byte within the read timeout
            raise httpx.ReadTimeout(str(exc) or "read timeout") from exc
        if isinstance(exc, aiohttp.ClientConnectorError):  # DNS, refused, TLS: nothing was sent
            raise httpx.ConnectError(str(exc)) from exc
        if isinstance(exc, aiohttp.ServerDisconnectedError):  # after the request went out
            raise httpx.RemoteProtocolError(str(exc) or "server disconnected") from exc
        if isinstance(exc, aiohttp.ClientPayloadError):  # the body broke off
            raise httpx.ReadError(str(exc)) from exc
        if isinstance(exc, aiohttp.ClientResponseError):  # an answer that is not valid HTTP
            raise httpx.RemoteProtocolError(str(exc)) from exc
        if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
            raise httpx.UnsupportedProtocol(str(exc)) from exc
        if isinstance(exc, aiohttp.ClientError):  # anything else, once connected: unknown
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
        if isinstance(exc, TimeoutError):  # a timeout aiohttp did not classify: assume sent
            raise httpx.ReadTimeout(str(exc) or "timeout") from exc
        return  # any other error passes through as is


_AIOHTTP_ERRORS = _AiohttpErrors()


def aiohttp_errors() -> contextlib.AbstractContextManager[None]:
    """Raise aiohttp's errors as the httpx exception that says the same about the request.

    What matters to the retry policy is whether the request can have reached the
    service: ``ConnectError``/``ConnectTimeout`` (never sent: retried freely) only for
    failures to open a connection; a connection dropped or reset after that is a
    ``RemoteProtocolError`` or ``ReadError`` (an unknown outcome, possibly billed).
    """
    return _AIOHTTP_ERRORS


class _AiohttpStream(httpx.AsyncByteStream):
    """A response body as aiohttp receives it, as large as the socket delivers it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _AIOHTTP_ERRORS:
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


def _shown(url: str) -> str:
    """``url`` without any ``user:password@`` (what a log line may show)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class DirectAnswer:
    """An answer of ``AiohttpTransport.open``: status, headers (as httpx's, built when
    first asked for), and the body read whole within a cap (a ``downloads.Answer``)."""

    __slots__ = ("_headers", "_response", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code: int = response.status
        self._headers: httpx.Headers | None = None

    @property
    def headers(self) -> httpx.Headers:
        """The answer's headers, as httpx's ``Headers``."""
        if self._headers is None:
            self._headers = httpx.Headers(list(self._response.raw_headers))
        return self._headers

    @property
    def reason_phrase(self) -> str:
        """The reason phrase the server sent ("" when none)."""
        return self._response.reason or ""

    async def read(self, limit: int) -> bytes:
        """The decoded body; ``BodyTooLarge`` past ``limit`` bytes (declared, received or
        decoded), ``UnreadableEncoding`` for an encoding that cannot be bounded.

        A body of declared length, not encoded, is taken whole from aiohttp (its parser
        stops at that length; one join of what arrived, no chunk-by-chunk loop); any
        other is fed to ``CappedBody`` piece by piece. The headers read here are
        aiohttp's own (case-insensitive, as httpx's)."""
        headers = self._response.headers
        content = self._response.content
        declared = headers.get("content-length", "")
        if "content-encoding" not in headers and declared.isdigit():
            # The common case, checked without a CappedBody (what it would check: the
            # declared length against the cap).
            if int(declared) > limit:
                raise BodyTooLarge(limit)
            with _AIOHTTP_ERRORS:
                data = await content.read()
            if len(data) > limit:  # pragma: no cover - the parser keeps to the length
                raise BodyTooLarge(limit)
            return data
        body = CappedBody(headers, limit)  # a declared length past the cap fails here
        with _AIOHTTP_ERRORS:
            if body.encoding in ("", "identity") and declared.isdigit():
                data = await content.read()
                if len(data) > limit:  # pragma: no cover - the parser keeps to the length
                    raise BodyTooLarge(limit)
                return data
            async for chunk in content.iter_any():
                body.feed(chunk)
        return body.body()


@functools.lru_cache(maxsize=64)
def _client_timeout(
    pool: float | None, connect: float | None, read: float | None
) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for httpx's (made once per distinct value: an attrs class built
    twice per edit otherwise). ``read`` None: no timer per read (a caller that holds the
    whole exchange to a deadline of its own; aiohttp re-arms the timer on every chunk
    that arrives, about a dozen per megabyte)."""
    import aiohttp

    return aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=read)


class _Opened:
    """``AiohttpTransport.open``'s context: a class, not an async generator (twice per
    generated edit; an ``asynccontextmanager`` costs a generator, its wrapper, and the
    event loop's async-generator hooks each time)."""

    __slots__ = ("_args", "_response", "_transport")

    def __init__(
        self, transport: AiohttpTransport, method: str, url: str, headers: Mapping[str, str],
        timeout: httpx.Timeout, content: bytes | None, sni_hostname: str | None,
    ) -> None:
        self._transport = transport
        self._args = (method, url, headers, timeout, content, sni_hostname)
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> DirectAnswer:
        method, url, headers, timeout, content, sni_hostname = self._args
        transport = self._transport
        session = transport._session
        if session is None:
            session = transport._session = transport._open()
        options: dict[str, Any] = {}
        if sni_hostname:
            options["server_hostname"] = sni_hostname
        with _AIOHTTP_ERRORS:
            response = await session.request(
                method, url, headers=headers, data=content, allow_redirects=False,
                compress=None,
                timeout=_client_timeout(timeout.pool, timeout.connect, timeout.read),
                **options,
            )
        self._response = response
        try:
            answer = DirectAnswer(response)
            if _httpx_log.isEnabledFor(logging.INFO):
                version = response.version
                _httpx_log.info(
                    'HTTP Request: %s %s "%s %d %s"', method, _shown(url),
                    f"HTTP/{version.major}.{version.minor}" if version else "HTTP/1.1",
                    answer.status_code, answer.reason_phrase,
                )
        except BaseException:
            response.release()
            raise
        return answer

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: object
    ) -> None:
        if self._response is not None:
            self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp ``ClientSession`` (opened on first use, in the
    running event loop; closed with the client). Bodies stay encoded (httpx decodes)."""

    def __init__(self, verify: ssl.SSLContext) -> None:
        self._verify = verify
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=0, ssl=self._verify, keepalive_timeout=KEEPALIVE_EXPIRY
        )
        # httpx keeps the cookies (its own jar); aiohttp's would parse each answer again.
        return aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    def open(
        self, method: str, url: str, *, headers: Mapping[str, str], timeout: httpx.Timeout,
        content: bytes | None = None, sni_hostname: str | None = None,
    ) -> _Opened:
        """Send one request straight through aiohttp, without httpx's client machinery
        (request and URL models, header merges, cookies, auth and redirect loops, the
        response stream): what the providers' hot path sends, each header given here
        (nothing is added but ``Host`` and ``Content-Length``), redirects not followed.
        ``sni_hostname``: the name TLS checks the certificate against, when ``url`` names
        an address (as httpx's ``sni_hostname`` extension). Use as ``async with``: it
        gives a ``DirectAnswer``; errors are httpx's (``aiohttp_errors``); the connection
        is released on exit."""
        return _Opened(self, method, url, headers, timeout, content, sni_hostname)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through aiohttp; the body streams back to httpx."""
        import aiohttp

        if self._session is None:
            self._session = self._open()
        timeout = request.extensions.get("timeout", {})
        content = await request.aread()
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() != "transfer-encoding"
        ]
        options: dict[str, Any] = {}
        if request.extensions.get("sni_hostname"):
            options["server_hostname"] = request.extensions["sni_hostname"]
        with _AIOHTTP_ERRORS:
            response = await self._session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=content or None,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
                **options,
            )
        version = response.version
        extensions: dict[str, Any] = {
            "http_version": (f"HTTP/{version.major}.{version.minor}".encode()
                             if version is not None else b"HTTP/1.1"),
        }
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_AiohttpStream(response),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

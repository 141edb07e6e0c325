"""Bounded downloads: a size cap counted after decompression, checked redirects.

httpx inflates each received chunk whole, so a few kilobytes of gzip can become
gigabytes before any cap is checked. ``CappedBody`` does the decompression itself, at
most up to the cap at a time, and holds both the bytes on the wire and the decoded
bytes to the cap. Result downloads (providers) and URL sources (sources) use it, so
the two agree on what "too large" means.

``fetch_once`` is one try at a provider's result URL: at most ``MAX_REDIRECTS``
redirects, each hop over http(s) only and refused when it points at a loopback, private
or link-local address (unless the service itself lives on one), the body read with the
cap. The providers add retries and one deadline around it (``providers._http``).

Each hop's host name is resolved once, every address it resolves to is checked, and the
connection goes to one of those addresses (the URL's host replaced by it; ``Host`` and
TLS's server name stay the name's): a name whose DNS answers change between the check
and the connection (DNS rebinding) cannot lead the download to an internal address.
Through a proxy from the environment the proxy connects, and resolves the name itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import urllib.parse
import urllib.request
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

__all__ = [
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "MAX_REDIRECTS",
    "Answer",
    "BodyTooLarge",
    "CappedBody",
    "DownloadError",
    "Opener",
    "Resolve",
    "StreamedAnswer",
    "UnreadableEncoding",
    "fetch_once",
    "httpx_opener",
    "is_internal_host",
    "read_capped",
    "system_addresses",
]

#: Default cap on a downloaded image (a result, or a URL source), compressed or not.
DEFAULT_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024

#: The Accept-Encoding to send: the encodings ``CappedBody`` can bound.
ACCEPT_ENCODING = "gzip, deflate"

#: Redirects a result download may follow.
MAX_REDIRECTS = 5

_DOWNLOAD_HEADERS = {"Accept-Encoding": ACCEPT_ENCODING}

#: The statuses that redirect (with a Location header), as httpx counts them.
_REDIRECTS = frozenset((301, 302, 303, 307, 308))


class BodyTooLarge(Exception):
    """A body ran past its size cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


class UnreadableEncoding(Exception):
    """A body in a content encoding that cannot be bounded, or that does not decode."""


class CappedBody:
    """Collects a body chunk by chunk, as sent, and decodes it within ``limit`` bytes.

    ``headers`` are the response's (``Content-Length`` and ``Content-Encoding`` are read).
    Raises ``BodyTooLarge`` as soon as the declared length, the bytes received or the
    decoded bytes pass ``limit``; ``UnreadableEncoding`` for an encoding other than
    gzip, deflate or identity (brotli or zstd could inflate without bound).
    """

    def __init__(self, headers: Mapping[str, str], limit: int) -> None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        self.encoding = headers.get("content-encoding", "identity").strip().lower()
        if self.encoding in ("gzip", "x-gzip"):
            self._decoder: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif self.encoding in ("", "identity"):
            self._decoder = None
        else:
            raise UnreadableEncoding(
                f"the answer is in content encoding {self.encoding[:40]!r}, not gzip"
            )
        self.limit = limit
        self._chunks: list[bytes] = []
        self._received = 0
        self._decoded = 0

    def feed(self, raw: bytes) -> None:
        """Take the next chunk as it came off the wire."""
        self._received += len(raw)
        if self._received > self.limit:
            raise BodyTooLarge(self.limit)
        if self._decoder is None:
            self._keep(raw)
            return
        pending = raw
        while pending:
            try:
                piece = self._decoder.decompress(pending, self.limit - self._decoded + 1)
            except zlib.error as exc:
                raise UnreadableEncoding(
                    f"the {self.encoding} answer does not decompress"
                ) from exc
            self._keep(piece)
            pending = self._decoder.unconsumed_tail

    def body(self) -> bytes:
        """The whole decoded body, once every chunk was fed."""
        if self._decoder is not None:
            try:
                self._keep(self._decoder.flush())
            except zlib.error as exc:
                raise UnreadableEncoding(
                    f"the {self.encoding} answer does not decompress"
                ) from exc
        return b"".join(self._chunks)

    def _keep(self, piece: bytes) -> None:
        self._decoded += len(piece)
        if self._decoded > self.limit:
            raise BodyTooLarge(self.limit)
        self._chunks.append(piece)


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The decoded body of a streamed ``response``; ``BodyTooLarge`` past ``limit`` bytes."""
    body = CappedBody(response.headers, limit)
    async for raw in response.aiter_raw():
        body.feed(raw)
    return body.body()


class DownloadError(Exception):
    """One try at a download failed.

    ``retryable``: a transport failure, 429 or 5xx (the same URL may work again; the
    delay the answer asked for is in ``headers``). Otherwise final: a refused URL
    (``status`` None), a body too large or unreadable, another status (``status``).
    """

    def __init__(
        self, reason: str, *, status: int | None = None, retryable: bool = False,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retryable = retryable
        self.headers = headers if headers is not None else httpx.Headers()


#: Resolves a host name for a port to its IP addresses (the system resolver by default):
#: the one resolution a download's check and its connection share.
Resolve = Callable[[str, int], Awaitable[list[str]]]


async def system_addresses(host: str, port: int) -> list[str]:
    """``host``'s addresses from the system resolver, in its order, each once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Answer(Protocol):
    """One answer to a request, its body not read yet."""

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        ...

    @property
    def headers(self) -> httpx.Headers:
        """The answer's headers."""
        ...

    async def read(self, limit: int) -> bytes:
        """The decoded body; ``BodyTooLarge`` past ``limit`` bytes, ``UnreadableEncoding``
        for an encoding that cannot be bounded; transport failures as httpx's errors."""
        ...


#: Sends one GET of a URL with these headers (and this TLS server name, when the URL
#: names an address), redirects not followed; the answer is open for reading inside the
#: context. ``fetch_once`` takes one (a transport's own, which skips httpx's client
#: machinery), else uses an httpx client.
Opener = Callable[
    [str, Mapping[str, str], "str | None"], contextlib.AbstractAsyncContextManager[Answer]
]


class StreamedAnswer:
    """An httpx streamed response as an ``Answer``."""

    __slots__ = ("_response",)

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    async def read(self, limit: int) -> bytes:
        return await read_capped(self._response, limit)


def httpx_opener(client: httpx.AsyncClient) -> Opener:
    """The ``Opener`` of GETs through ``client`` (its transport, cookies, hooks)."""

    @contextlib.asynccontextmanager
    async def opened(
        url: str, headers: Mapping[str, str], sni_hostname: str | None
    ) -> AsyncIterator[Answer]:
        extensions = {"sni_hostname": sni_hostname} if sni_hostname else None
        async with client.stream(
            "GET", url, follow_redirects=False, headers=headers, extensions=extensions
        ) as response:
            yield StreamedAnswer(response)

    return opened


async def fetch_once(
    client: httpx.AsyncClient, url: str, *, limit: int, internal_ok: bool,
    resolve: Resolve = system_addresses, opener: Opener | None = None,
) -> bytes:
    """GET ``url`` once, following at most ``MAX_REDIRECTS`` checked redirects.

    No credentials are added (a result URL is public and may be on another host).
    ``internal_ok``: whether loopback, private and link-local targets are allowed (the
    service itself is on one: tests, private gateways). ``resolve``: how a host name
    becomes addresses; each hop connects only to addresses it returned and that were
    checked. ``opener``: how each GET is sent (default: through ``client``). Raises
    ``DownloadError``.
    """
    get = opener if opener is not None else httpx_opener(client)
    for _ in range(MAX_REDIRECTS + 1):
        hop = await _checked_hop(url, internal_ok=internal_ok, resolve=resolve)
        try:
            if not hop.addresses:  # the common case: one GET, no stack of contexts
                async with get(hop.url, _DOWNLOAD_HEADERS, None) as response:
                    body, location = await _body_or_location(response, limit)
            else:
                async with contextlib.AsyncExitStack() as stack:
                    response = await _open(stack, get, hop)
                    body, location = await _body_or_location(response, limit)
        except httpx.TransportError as exc:
            raise DownloadError(f"download failed ({type(exc).__name__})",
                                retryable=True) from exc
        if body is not None:
            return body
        assert location is not None
        url = urllib.parse.urljoin(url, location)
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects")


async def _body_or_location(response: Answer, limit: int) -> tuple[bytes | None, str | None]:
    """The body of a 200 (within ``limit``), or where a redirect points; ``DownloadError``
    for any other answer."""
    status = response.status_code
    if status == 200:
        try:
            return await response.read(limit), None
        except BodyTooLarge as exc:
            raise DownloadError(
                f"the result is larger than {exc.limit} bytes (max_download_bytes)"
            ) from None
        except UnreadableEncoding as exc:
            raise DownloadError(str(exc)) from None
    if status in _REDIRECTS and "location" in response.headers:
        return None, response.headers["location"]
    if status == 429 or status >= 500:
        raise DownloadError(f"download answered {status}", status=status,
                            retryable=True, headers=response.headers)
    raise DownloadError(f"download answered {status}", status=status)


@dataclass(frozen=True)
class _Hop:
    """One request of a download: its URL, and the checked addresses to connect to (none:
    connect by the URL as it is, an IP literal or a name a proxy resolves)."""

    url: str
    addresses: tuple[str, ...] = ()


async def _checked_hop(url: str, *, internal_ok: bool, resolve: Resolve) -> _Hop:
    """Where ``url`` may be fetched from; ``DownloadError`` when it must not be.

    A host that is an IP address is judged from the address alone (``_literal_verdict``,
    remembered per host string); a name is resolved on every hop."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise DownloadError("the result URL is malformed") from None
    if parts.scheme not in ("http", "https"):
        raise DownloadError(f"the result URL's scheme {parts.scheme!r} is not http or https")
    if not host:
        raise DownloadError("the result URL has no host")
    shown_host = host
    host = host.strip("[]")
    verdict = _literal_verdict(host)
    if verdict is not None:
        if not internal_ok and verdict:
            raise _refused(shown_host)
        return _Hop(url)
    if not internal_ok and _is_localhost_name(host):
        raise _refused(shown_host)
    proxied = _proxied(parts.scheme, host)
    if internal_ok and proxied:
        return _Hop(url)
    try:
        addresses = await resolve(host, port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError):
        addresses = []
    if not internal_ok and any(_is_internal_address(address) for address in addresses):
        raise _refused(shown_host)
    if proxied:
        return _Hop(url)  # the proxy connects: it resolves the name (again) itself
    if not addresses:
        raise DownloadError(f"the result URL's host {host!r} does not resolve", retryable=True)
    return _Hop(url, tuple(addresses))


def _refused(host: str) -> DownloadError:
    """The error for a result URL on an internal host when the service is not (made only
    when raised)."""
    return DownloadError(
        f"the result URL's host {host!r} is a loopback, private or link-local address, "
        "and the service is not",
    )


async def _open(stack: contextlib.AsyncExitStack, get: Opener, hop: _Hop) -> Answer:
    """The answer to ``hop``'s GET, from the first of its addresses that accepts a
    connection (a failed connect sent nothing, so the next address is safe to try)."""
    if not hop.addresses:
        return await stack.enter_async_context(get(hop.url, _DOWNLOAD_HEADERS, None))
    url = httpx.URL(hop.url)
    headers = {**_DOWNLOAD_HEADERS, "Host": url.netloc.decode("ascii")}
    # TLS checks the certificate against the name, not the address connected to.
    sni_hostname = url.raw_host.decode("ascii") if url.scheme == "https" else None
    for address in hop.addresses[:-1]:
        try:
            return await stack.enter_async_context(
                get(str(url.copy_with(host=address)), headers, sni_hostname))
        except (httpx.ConnectError, httpx.ConnectTimeout):
            continue
    return await stack.enter_async_context(
        get(str(url.copy_with(host=hop.addresses[-1])), headers, sni_hostname))


def _proxied(scheme: str, host: str) -> bool:
    """Whether a proxy from the environment carries requests for ``scheme://host``, as
    httpx decides it (the providers' clients then go through httpx's own transport)."""
    proxies = urllib.request.getproxies()
    if scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(host)


@functools.lru_cache(maxsize=256)
def _literal_verdict(host: str) -> bool | None:
    """For a host that is an IP address: whether it is internal (``_is_internal_address``);
    None for a name. A pure function of the string (no lookup), so it is remembered: a
    run downloads every result from the same few hosts."""
    if not _ip_literal(host):
        return None
    return _is_internal_address(host)


def _ip_literal(host: str) -> bool:
    """Whether ``host`` (brackets stripped) is an IP address, not a name."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _is_localhost_name(host: str) -> bool:
    """``localhost`` and names under it, internal by name whatever DNS says (RFC 6761)."""
    return host.lower() == "localhost" or host.lower().endswith(".localhost")


def _is_internal_address(address: str) -> bool:
    """True for a loopback, private, link-local or otherwise non-public IP address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True  # not an address we can judge: treat it as unsafe
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def is_internal_host(host: str, port: int | None) -> bool:
    """True when ``host`` is, or resolves to, any non-public address.

    A name that does not resolve here is not judged internal: the download then fails
    (or goes through a proxy, which resolves it) on its own.
    """
    host = host.strip("[]")
    if _ip_literal(host):
        return _is_internal_address(host)
    if _is_localhost_name(host):
        return True
    try:
        addresses = await system_addresses(host, port or 443)
    except (OSError, UnicodeError):
        return False
    return any(_is_internal_address(address) for address in addresses)

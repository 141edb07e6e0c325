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
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
import zlib
from collections.abc import Mapping

import httpx

__all__ = [
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "MAX_REDIRECTS",
    "BodyTooLarge",
    "CappedBody",
    "DownloadError",
    "UnreadableEncoding",
    "fetch_once",
    "is_internal_host",
    "read_capped",
]

#: Default cap on a downloaded image (a result, or a URL source), compressed or not.
DEFAULT_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024

#: The Accept-Encoding to send: the encodings ``CappedBody`` can bound.
ACCEPT_ENCODING = "gzip, deflate"

#: Redirects a result download may follow.
MAX_REDIRECTS = 5

_DOWNLOAD_HEADERS = {"Accept-Encoding": ACCEPT_ENCODING}


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


async def fetch_once(
    client: httpx.AsyncClient, url: str, *, limit: int, internal_ok: bool
) -> bytes:
    """GET ``url`` once, following at most ``MAX_REDIRECTS`` checked redirects.

    No credentials are added (a result URL is public and may be on another host).
    ``internal_ok``: whether loopback, private and link-local targets are allowed (the
    service itself is on one: tests, private gateways). Raises ``DownloadError``.
    """
    for _ in range(MAX_REDIRECTS + 1):
        problem = await unsafe_url(url, internal_ok=internal_ok)
        if problem is not None:
            raise DownloadError(problem)
        try:
            async with client.stream(
                "GET", url, follow_redirects=False, headers=_DOWNLOAD_HEADERS
            ) as response:
                status = response.status_code
                if response.is_redirect and "location" in response.headers:
                    url = urllib.parse.urljoin(str(response.url), response.headers["location"])
                    continue
                if status == 429 or status >= 500:
                    raise DownloadError(f"download answered {status}", status=status,
                                        retryable=True, headers=response.headers)
                if status != 200:
                    raise DownloadError(f"download answered {status}", status=status)
                try:
                    return await read_capped(response, limit)
                except BodyTooLarge as exc:
                    raise DownloadError(
                        f"the result is larger than {exc.limit} bytes (max_download_bytes)"
                    ) from None
                except UnreadableEncoding as exc:
                    raise DownloadError(str(exc)) from None
        except httpx.TransportError as exc:
            raise DownloadError(f"download failed ({type(exc).__name__})",
                                retryable=True) from exc
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects")


async def unsafe_url(url: str, *, internal_ok: bool) -> str | None:
    """Why ``url`` must not be fetched, or None when it may be."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "the result URL is malformed"
    if parts.scheme not in ("http", "https"):
        return f"the result URL's scheme {parts.scheme!r} is not http or https"
    if not host:
        return "the result URL has no host"
    if not internal_ok and await is_internal_host(host, port):
        return (
            f"the result URL's host {host!r} is a loopback, private or link-local "
            "address, and the service is not"
        )
    return None


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
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return _is_internal_address(host)
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port or 443, type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        return False
    return any(_is_internal_address(str(info[4][0])) for info in infos)

"""Bounded reading of HTTP bodies: a size cap counted after decompression.

httpx inflates each received chunk whole, so a few kilobytes of gzip can become
gigabytes before any cap is checked. ``CappedBody`` does the decompression itself, at
most up to the cap at a time, and holds both the bytes on the wire and the decoded
bytes to the cap. Result downloads (providers) and URL sources (sources) use it, so
the two agree on what "too large" means.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

__all__ = ["DEFAULT_MAX_DOWNLOAD_BYTES", "BodyTooLarge", "CappedBody", "UnreadableEncoding"]

#: Default cap on a downloaded image (a result, or a URL source), compressed or not.
DEFAULT_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024

#: The Accept-Encoding to send: the encodings ``CappedBody`` can bound.
ACCEPT_ENCODING = "gzip, deflate"


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

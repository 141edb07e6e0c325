"""Source images: reading a path, URL, bytes or PIL image, and checking it decodes.

Sources are read and fully decoded when the graph is built, so a missing file, a failing
URL or bytes that are not an image are a GraphError naming the source, before any spend.
"""

from __future__ import annotations

import contextvars
import io
import os
import re
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

import httpx
from PIL import Image, UnidentifiedImageError

from ._version import USER_AGENT
from .errors import GraphError
from .requests import media_type_of

__all__ = [
    "NODE_NAME",
    "URL_SCHEME",
    "check_image",
    "fetch",
    "read_source",
    "safe_stem",
    "source_root",
]

#: Relative source paths resolve against this directory when set (recipes set it to
#: their own folder), else against the working directory.
source_root: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "source_root", default=None
)

#: What a node name looks like: it becomes a file name, so no "/", spaces or leading dot.
NODE_NAME = re.compile(r"\w(?:[\w.-]*\w)?(?:\[\d+\])?")

URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


def fetch(url: str) -> httpx.Response:
    """GET ``url`` (redirects followed, 30 s timeout, a User-Agent as CDNs require)."""
    return httpx.get(url, follow_redirects=True, timeout=30.0, headers={"User-Agent": USER_AGENT})


def read_source(
    src: object, name: str | None
) -> tuple[bytes, str, str | None, str]:
    """(bytes, description, URL to pass as is, default name) of a source."""
    if isinstance(src, Image.Image):
        buffer = io.BytesIO()
        src.save(buffer, format="PNG")
        return buffer.getvalue(), "<PIL image>", None, "image"
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "<bytes>", None, "image"
    if isinstance(src, str) and URL_SCHEME.match(src):
        stem = safe_stem(Path(urlparse(src).path).stem)
        label = name or stem
        if not src.lower().startswith(("http://", "https://")):
            raise GraphError(
                f"source {label!r}: {src}: only http(s) URLs are fetched; download it "
                "and pass the file, or pass the bytes"
            )
        try:
            response = fetch(src)
        except httpx.HTTPError as exc:
            raise GraphError(
                f"source {label!r}: cannot fetch {src}: {type(exc).__name__}: {exc}"
            ) from exc
        if response.is_error:
            raise GraphError(
                f"source {label!r}: cannot fetch {src}: HTTP {response.status_code} "
                f"{response.reason_phrase}"
            )
        # Recorded (manifest, cache, provenance) without the query string, userinfo or
        # fragment: a presigned URL's token is a secret; the full URL is only sent.
        parts = urlsplit(src)
        shown = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], query="",
                                          fragment=""))
        return response.content, shown, src, stem
    if isinstance(src, (str, os.PathLike)):
        path = Path(src).expanduser()
        label = name or safe_stem(path.stem)
        root = source_root.get()
        if not path.is_absolute() and root is not None:
            path = root / path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise GraphError(f"source {label!r}: no such file: {path}") from None
        except OSError as exc:
            raise GraphError(f"source {label!r}: cannot read {path}: {exc.strerror}") from None
        return data, str(src), None, safe_stem(path.stem)
    raise GraphError(
        f"source {name or 'image'!r}: expected a path, an http(s) URL, bytes or a PIL "
        f"image, got {type(src).__name__}"
    )


def safe_stem(stem: str) -> str:
    cleaned = re.sub(r"[^\w.-]+", "_", stem).strip("._-")
    return cleaned or "image"


def check_image(data: bytes, name: str, described: str) -> str:
    """The media type of ``data``, after decoding it fully; GraphError if it is not an image."""
    if not data:
        raise GraphError(f"source {name!r}: {described} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or ""
            image.load()
    except UnidentifiedImageError:
        raise GraphError(
            f"source {name!r}: {described} is not a readable image (not a format Pillow "
            "recognises)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise GraphError(f"source {name!r}: {described} is too large to decode ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise GraphError(
            f"source {name!r}: {described} is not a readable image ({exc})"
        ) from None
    return media_type_of(image_format) or f"image/{image_format.lower() or 'octet-stream'}"

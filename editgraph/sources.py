"""Source images: reading a path, URL, bytes or PIL image, and checking it decodes.

Sources are read and fully decoded when the graph is built, so a missing file, a failing
URL or bytes that are not an image are a GraphError naming the source, before any spend.
So are sources too large to send: above ``DEFAULT_MAX_SOURCE_PIXELS`` pixels (or the
graph's ``max_source_pixels``), flagged by Pillow as a decompression bomb, or a URL
body or a file larger than the download cap. A file's size and header are read first:
one too large in bytes or pixels is refused before the rest of it is read. Formats the
services do not document (anything but JPEG, PNG and WebP) are converted to PNG, and the
hash is of what is sent.

A source is sent as a viewer shows it, since whether a service reads an EXIF orientation
tag is not documented: a photo whose tag says it is turned (orientation 2 to 8) is sent
upright with no tag (a JPEG as JPEG at quality 95, anything else as PNG), and an
animated image as its first frame (PNG), with a warning naming the node. Untagged and
orientation-1 stills are sent byte for byte as they are.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import logging
import os
import re
import stat
import time
import warnings
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

import httpx
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from ._version import USER_AGENT
from .downloads import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    BodyTooLarge,
    CappedBody,
    UnreadableEncoding,
)
from .errors import GraphError
from .names import NODE_NAME, portable_stem
from .pixels import declared_size
from .requests import media_type_of

__all__ = [
    "DEFAULT_MAX_SOURCE_PIXELS",
    "MAX_SOURCE_FILE_BYTES",
    "NODE_NAME",
    "PREPARE_RULES",
    "URL_SCHEME",
    "check_image",
    "fetch",
    "SourceMemo",
    "prepare_source",
    "prepared_sources",
    "read_source",
    "safe_stem",
    "source_hash",
    "source_root",
]

#: Largest source accepted by default, in pixels (``Graph(max_source_pixels=...)``).
DEFAULT_MAX_SOURCE_PIXELS = 40_000_000
#: Largest source file read, in bytes: the cap on a URL source's body too.
MAX_SOURCE_FILE_BYTES = DEFAULT_MAX_DOWNLOAD_BYTES
#: Bytes of a file read first, for its header's pixel size.
_HEAD_BYTES = 64 * 1024
#: Seconds a source URL may take in all (redirects and a slow, trickling body included).
_FETCH_DEADLINE = 60.0
#: The formats sent as they are; any other is converted to PNG.
_SENT_AS_IS = ("JPEG", "PNG", "WEBP")
#: Image modes PNG stores as they are.
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")
#: JPEG quality of a turned photo sent upright: about 45 dB PSNR or better against the
#: file on the example photos, at about 1.6 times its bytes (keeping the file's own
#: quantisation tables kept the bytes but fell to 38 dB on some).
_UPRIGHT_JPEG_QUALITY = 95
#: Which rules decide the bytes sent for given bytes; a note that bytes were checked and
#: are sent as they are holds only under the same rules (see batch's checked sources).
#: "2": a turned photo is sent upright, an animated image as its first frame.
PREPARE_RULES = "2"

#: Notices about a source (an animated image sent as its first frame); the command
#: prints them as one line each.
notices = logging.getLogger("editgraph.sources")

#: Relative source paths resolve against this directory when set (recipes set it to
#: their own folder), else against the working directory.
source_root: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "source_root", default=None
)


class SourceMemo:
    """The last ``size`` sources checked, by content: (hash, pixel limit) -> (converted
    bytes, or None when sent as they are; media type)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: dict[tuple[bytes, int | None], tuple[bytes | None, str]] = {}
        #: What was said about converted bytes (an animated image), to say it again.
        self.notices: dict[tuple[bytes, int | None], str] = {}
        #: The bytes last prepared as they are, and their content hash (see source_hash).
        self.last: tuple[bytes, str] | None = None

    def get(self, key: tuple[bytes, int | None]) -> tuple[bytes | None, str] | None:
        return self._entries.get(key)

    def put(self, key: tuple[bytes, int | None], value: tuple[bytes | None, str]) -> None:
        if len(self._entries) >= self.size:
            oldest = next(iter(self._entries))
            del self._entries[oldest]
            self.notices.pop(oldest, None)
        self._entries[key] = value


#: When set (a batch sets it for its pass), bytes already checked are not decoded again:
#: the same bytes give the same answer.
prepared_sources: contextvars.ContextVar[SourceMemo | None] = contextvars.ContextVar(
    "prepared_sources", default=None
)

URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


def fetch(url: str, *, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> httpx.Response:
    """GET ``url``: redirects followed, a User-Agent as CDNs require, the body held to
    ``max_bytes`` (counted after decompression) and the whole fetch to one deadline.

    Returns a response whose content is the decoded body. Raises ``httpx.HTTPError``
    when the URL cannot be fetched, ``BodyTooLarge`` past the cap, and
    ``UnreadableEncoding`` for a body that cannot be bounded or decoded.
    """
    started = time.monotonic()
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING}
    with httpx.stream(
        "GET", url, follow_redirects=True, timeout=httpx.Timeout(20.0), headers=headers
    ) as response:
        body = CappedBody(response.headers, max_bytes)
        for raw in response.iter_raw():
            body.feed(raw)
            if time.monotonic() - started > _FETCH_DEADLINE:
                raise httpx.ReadTimeout(
                    f"not whole after {_FETCH_DEADLINE:g} s", request=response.request
                )
        content = body.body()
    kept = [(name, value) for name, value in response.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(
        response.status_code, headers=kept, content=content, request=response.request
    )


def read_source(
    src: object, name: str | None, *, max_pixels: int | None = DEFAULT_MAX_SOURCE_PIXELS
) -> tuple[bytes, str, str | None, str]:
    """(bytes, description, URL to pass as is, default name) of a source.

    A file larger than ``MAX_SOURCE_FILE_BYTES``, or whose header declares more than
    ``max_pixels`` pixels, is a GraphError before the rest of it is read.
    """
    if isinstance(src, Image.Image):
        buffer = io.BytesIO()
        src.save(buffer, format="PNG")
        return buffer.getvalue(), "<PIL image>", None, "image"
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "<bytes>", None, "image"
    if isinstance(src, str) and URL_SCHEME.match(src):
        stem = safe_stem(Path(urlparse(src).path).stem)
        label = name or stem
        # Recorded (manifest, cache, provenance) and shown in messages without the query
        # string, userinfo or fragment: a presigned URL's token is a secret; the full URL
        # is only sent.
        parts = urlsplit(src)
        shown = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], query="",
                                          fragment=""))
        if not src.lower().startswith(("http://", "https://")):
            raise GraphError(
                f"source {label!r}: {shown}: only http(s) URLs are fetched; download it "
                "and pass the file, or pass the bytes"
            )
        try:
            response = fetch(src)
        except httpx.HTTPError as exc:
            raise GraphError(
                f"source {label!r}: cannot fetch {shown}: {type(exc).__name__}: "
                f"{str(exc).replace(src, shown)}"
            ) from None
        except BodyTooLarge as exc:
            raise GraphError(
                f"source {label!r}: {shown} is larger than {exc.limit:,} bytes (the download "
                "cap); pass a smaller image"
            ) from None
        except UnreadableEncoding as exc:
            raise GraphError(f"source {label!r}: cannot fetch {shown}: {exc}") from None
        if response.is_error:
            raise GraphError(
                f"source {label!r}: cannot fetch {shown}: HTTP {response.status_code} "
                f"{response.reason_phrase}"
            )
        return response.content, shown, src, stem
    if isinstance(src, (str, os.PathLike)):
        path = (src if isinstance(src, Path) else Path(src)).expanduser()
        stem = safe_stem(path.stem)
        label = name or stem
        root = source_root.get()
        if not path.is_absolute() and root is not None:
            path = root / path
        try:
            mode = os.stat(path).st_mode  # before opening: opening a pipe blocks
            if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
                # A pipe would block forever, a device (/dev/zero) read until memory ends;
                # a folder is refused by the read below.
                raise GraphError(f"source {label!r}: {path} is not a regular file (a pipe, "
                                 "device or socket); pass an image file")
            data = _read_file(path, label, str(src), max_pixels)
        except FileNotFoundError:
            raise GraphError(f"source {label!r}: no such file: {path}") from None
        except OSError as exc:
            raise GraphError(f"source {label!r}: cannot read {path}: {exc.strerror}") from None
        return data, str(src), None, stem
    raise GraphError(
        f"source {name or 'image'!r}: expected a path, an http(s) URL, bytes or a PIL "
        f"image, got {type(src).__name__}"
    )


def _read_file(path: Path, label: str, described: str, max_pixels: int | None) -> bytes:
    """The bytes of the regular file ``path``, once its size in bytes and the pixel size
    its header declares are within bounds (checked before the rest is read)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_SOURCE_FILE_BYTES:
            raise GraphError(
                f"source {label!r}: {described} is {size:,} bytes, more than the "
                f"{MAX_SOURCE_FILE_BYTES:,}-byte cap on a source file (as on a URL's); pass a "
                "smaller image"
            )
        head = handle.read(_HEAD_BYTES)
        if len(head) < _HEAD_BYTES:
            return head  # all of it: prepare_source checks it whole
        if max_pixels is not None:
            declared = declared_size(head) or _pillow_size(handle, label, described)
            if declared is not None:
                _check_pixels(declared, label, described, max_pixels)
        handle.seek(0)
        return handle.read()


def _pillow_size(handle: io.BufferedReader, name: str, described: str) -> tuple[int, int] | None:
    """The pixel size Pillow reads from the header of the open file (nothing decoded);
    None when Pillow cannot tell (the full check then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            handle.seek(0)
            with Image.open(handle) as image:
                return image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise GraphError(
            f"source {name!r}: {described} is too large to decode safely ({exc})"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def safe_stem(stem: str) -> str:
    """A default node name made from a file or URL stem (see ``names.portable_stem``)."""
    return portable_stem(stem)


def check_image(data: bytes, name: str, described: str) -> str:
    """The media type of ``data``, after decoding it fully; GraphError if it is not an image."""
    return prepare_source(data, name, described, max_pixels=None)[1]


def prepare_source(
    data: bytes, name: str, described: str, *, max_pixels: int | None = DEFAULT_MAX_SOURCE_PIXELS
) -> tuple[bytes, str]:
    """(the bytes to send, their media type) of a source, after decoding it fully.

    GraphError naming the source when it is empty, not an image, larger than
    ``max_pixels`` (None: no limit but Pillow's) or flagged by Pillow as a decompression
    bomb. JPEG, PNG and WebP stills are kept as they are; any other format is converted
    to PNG; a photo turned by its EXIF orientation is sent upright, an animated image as
    its first frame (logged on ``editgraph.sources``, naming the source). Within
    ``prepared_sources`` (a batch), bytes already checked are not decoded again.
    """
    memo = prepared_sources.get()
    if memo is None or not data:
        sent, media_type, notice = _prepare(data, name, described, max_pixels)
    else:
        digest = hashlib.sha256(data).digest()
        key = (digest, max_pixels)
        known = memo.get(key)
        if known is None:
            sent, media_type, notice = _prepare(data, name, described, max_pixels)
            memo.put(key, (None if sent is data else sent, media_type))
            if notice is not None:
                memo.notices[key] = notice
        else:
            converted, media_type = known
            sent = data if converted is None else converted
            notice = memo.notices.get(key)
        memo.last = (data, digest.hex()) if sent is data else None
    if notice is not None:
        notices.warning("source %r: %s", name, notice)
    return sent, media_type


def source_hash(data: bytes) -> str:
    """The content hash of ``data``; bytes ``prepare_source`` just hashed in a batch are
    not hashed again (a large input costs one pass over its bytes)."""
    memo = prepared_sources.get()
    last = None if memo is None else memo.last
    if last is not None and last[0] is data:
        return last[1]
    return hashlib.sha256(data).hexdigest()


def _prepare(
    data: bytes, name: str, described: str, max_pixels: int | None
) -> tuple[bytes, str, str | None]:
    """(bytes to send, media type, a notice for the user or None); see prepare_source."""
    if not data:
        raise GraphError(f"source {name!r}: {described} is empty (0 bytes)")
    given = data
    declared = declared_size(data)
    if declared is not None and max_pixels is not None:
        _check_pixels(declared, name, described, max_pixels)
    try:
        # Pillow only warns below twice its own limit: here that warning refuses too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image_format = image.format or ""
                if max_pixels is not None:
                    _check_pixels(image.size, name, described, max_pixels)
                image.load()
                frames = getattr(image, "n_frames", 1)
                # MPO: a camera's JPEG with more pictures after it (a depth map, a
                # preview); not an animation.
                animated = frames > 1 and image_format != "MPO"
                turned = image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9)
                if turned:
                    data, image_format = _upright(image, image_format)
                elif image_format not in _SENT_AS_IS or animated:
                    data = _as_png(image)
                    image_format = "PNG"
    except UnidentifiedImageError:
        raise GraphError(
            f"source {name!r}: {described} is not a readable image (not a format Pillow "
            "recognises)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise GraphError(
            f"source {name!r}: {described} is too large to decode safely ({exc})"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise GraphError(
            f"source {name!r}: {described} is not a readable image ({exc})"
        ) from None
    if data is not given and len(data) > MAX_SOURCE_FILE_BYTES:
        raise GraphError(
            f"source {name!r}: {described} is {len(data):,} bytes once made ready to send "
            f"(upright or as PNG), more than the {MAX_SOURCE_FILE_BYTES:,}-byte cap on a "
            "source; pass a smaller image"
        )
    notice = (
        f"{described} is animated ({frames} frames); its first frame is sent, as ops and "
        "Preview use it" if animated else None
    )
    return data, media_type_of(image_format) or "image/png", notice


def _check_pixels(size: tuple[int, int], name: str, described: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise GraphError(
            f"source {name!r}: {described} is {width} x {height} = {width * height:,} pixels, "
            f"more than max_source_pixels={max_pixels:,}; resize it first (FLUX.2 works at "
            "up to 1920 x 1920)"
        )


def _upright(image: Image.Image, image_format: str) -> tuple[bytes, str]:
    """(bytes, format) of ``image`` turned as its EXIF orientation says, with no EXIF or
    XMP (no tag left to turn it again, no stale thumbnail) and its colour profile kept:
    a JPEG as JPEG at ``_UPRIGHT_JPEG_QUALITY`` with its own chroma subsampling, any
    other image (its first frame) as PNG, lossless. The same bytes give the same bytes."""
    upright = ImageOps.exif_transpose(image)
    for key in ("exif", "xmp", "XML:com.adobe.xmp", "Raw profile type exif"):
        upright.info.pop(key, None)  # Pillow would write some of them from info
    profile = image.info.get("icc_profile")
    if image_format in ("JPEG", "MPO") and upright.mode in ("L", "RGB"):
        options: dict[str, object] = {"quality": _UPRIGHT_JPEG_QUALITY}
        if profile:
            options["icc_profile"] = profile
        sampling = JpegImagePlugin.get_sampling(image)
        if sampling != -1:
            options["subsampling"] = sampling
        buffer = io.BytesIO()
        upright.save(buffer, format="JPEG", **options)
        return buffer.getvalue(), "JPEG"
    return _as_png(upright, profile), "PNG"


def _as_png(image: Image.Image, profile: bytes | None = None) -> bytes:
    """``image`` (its first frame) as the PNG bytes Pillow writes with default settings,
    with the colour ``profile`` when given and the mode is kept (a CMYK profile does not
    describe the RGB it becomes)."""
    if image.mode not in _PNG_MODES:
        alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if alpha else "RGB")
        profile = None
    buffer = io.BytesIO()
    if profile:
        image.save(buffer, format="PNG", icc_profile=profile)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()

"""Pixel sizes read from image headers, without decoding: PNG, JPEG and WebP.

Pillow's ``Image.open`` already warns, or raises, on a decompression bomb; reading the
few header bytes first lets a result or a source of the wrong size, or a pixel bomb, be
refused before Pillow (or its process-wide warning filters) is involved at all.

``inspect_image`` is how a provider checks a result: its format from the signature, its
size from the header and its end (JPEG EOI, PNG IEND, the WebP RIFF length) — the
checks that catch a truncated or wrong-sized download, at a few microseconds instead of
the milliseconds a full decode of a megabyte costs.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["ImageFacts", "declared_size", "inspect_image"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (every SOFn but DHT C4, JPG C8 and DAC CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers that stand alone, with no length field.
_STANDALONE = frozenset([0x01, *range(0xD0, 0xDA)])


class ImageFacts(NamedTuple):
    """What the header and the end of an encoded image say."""

    media_type: str  # image/png, image/jpeg or image/webp
    width: int
    height: int
    complete: bool  # ends with its format's end marker


_PNG_END = b"IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"


def inspect_image(data: bytes) -> ImageFacts | None:
    """Format, declared size and completeness of a PNG, JPEG or WebP, decoding nothing.

    None when the signature is none of the three or the header cannot be read (callers
    then let Pillow judge the bytes).
    """
    size = declared_size(data)
    if size is None:
        return None
    if data.startswith(_PNG_SIGNATURE):
        return ImageFacts("image/png", *size, data.endswith(_PNG_END))
    if data.startswith(b"\xff\xd8"):
        # Some encoders pad after EOI; a truncated download ends inside the scan.
        return ImageFacts("image/jpeg", *size, data.rstrip(b"\x00\r\n").endswith(_JPEG_EOI))
    riff_length = int.from_bytes(data[4:8], "little") + 8
    return ImageFacts("image/webp", *size, len(data) in (riff_length, riff_length + 1))


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the header of a PNG, JPEG or WebP declares it; None otherwise.

    None also means "could not tell" (a truncated or unusual header): callers then let
    Pillow judge the bytes.
    """
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    position = 2
    end = len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        length = data[position + 2] << 8 | data[position + 3]  # no slice: ~20 per JPEG
        if marker in _SOF_MARKERS:
            if position + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return int(width), int(height)
        if length < 2:
            return None
        position += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None

"""Checking a generated image before it is stored: format, pixel size, completeness.

A result is judged by its signature, the size its header declares and its end marker
(JPEG EOI, PNG IEND, the WebP RIFF length), not by a full decode: a megabyte of JPEG
takes milliseconds of CPU to decode and these checks microseconds, and they catch what
goes wrong on the way (a truncated download, a wrong size, another format, a pixel
bomb). Only bytes whose header cannot be read this way go to Pillow, off the event loop.
"""

from __future__ import annotations

import asyncio
import io

from PIL import Image, UnidentifiedImageError

from ..pixels import inspect_image
from ..requests import media_type_of

__all__ = ["MAX_RESULT_PIXELS", "UnusableResult", "verified_media_type"]

#: Largest result accepted, in pixels (FLUX.2 makes at most 1920 x 1920 = 3.7 MP).
MAX_RESULT_PIXELS = 64_000_000

#: The formats a result may come in (Pillow opens no other: no GIF or TIFF bombs).
_RESULT_FORMATS = ("PNG", "JPEG", "WEBP")


class UnusableResult(Exception):
    """The bytes are not a complete image of the requested size (the message says how)."""


async def verified_media_type(data: bytes, width: int, height: int) -> str:
    """The media type of ``data`` once it is known to be a complete PNG, JPEG or WebP of
    ``width`` x ``height`` pixels; ``UnusableResult`` otherwise."""
    facts = inspect_image(data)
    if facts is None:
        # An unusual header: Pillow decides, off the event loop.
        return await asyncio.to_thread(_decoded_media_type, data, width, height)
    _check_size(facts.width, facts.height, width, height)
    if not facts.complete:
        raise UnusableResult(
            f"the {facts.media_type.split('/')[1].upper()} result is cut short (no end marker)"
        )
    return facts.media_type


def _check_size(actual_width: int, actual_height: int, width: int, height: int) -> None:
    if actual_width * actual_height > MAX_RESULT_PIXELS:
        raise UnusableResult(
            f"the result is {actual_width} x {actual_height} pixels, more than "
            f"{MAX_RESULT_PIXELS:,}; it was not decoded"
        )
    if (actual_width, actual_height) != (width, height):
        raise UnusableResult(
            f"the result is {actual_width} x {actual_height} pixels, not the "
            f"{width} x {height} requested"
        )


def _decoded_media_type(data: bytes, width: int, height: int) -> str:
    try:
        with Image.open(io.BytesIO(data), formats=_RESULT_FORMATS) as image:
            image_format = image.format or ""
            _check_size(*image.size, width, height)
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnusableResult("the result is not a decodable PNG, JPEG or WebP image") from exc
    media_type = media_type_of(image_format)
    if media_type is None:  # pragma: no cover - Pillow opened one of _RESULT_FORMATS
        raise UnusableResult(f"the result has an unexpected format {image_format!r}")
    return media_type

"""Result checks without a decode: format, declared size and end marker (pixels.py,
providers/_results.py), on real PNG, JPEG and WebP bytes made by Pillow."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from editgraph.pixels import inspect_image
from editgraph.providers._results import UnusableResult, verified_media_type

FORMATS = [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]


def encoded(image_format: str, size: tuple[int, int] = (96, 64)) -> bytes:
    """A real image of ``size`` in ``image_format``, with some detail to encode."""
    image = Image.new("RGB", size, (20, 120, 200))
    image.paste((240, 200, 10), (10, 10, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


@pytest.mark.parametrize(("image_format", "media_type"), FORMATS)
def test_a_whole_image_reads_as_complete_with_its_size(image_format: str, media_type: str) -> None:
    """The signature, the header's size and the end marker of a whole file agree."""
    facts = inspect_image(encoded(image_format))
    assert facts is not None
    assert (facts.media_type, facts.width, facts.height, facts.complete) == (
        media_type, 96, 64, True)


@pytest.mark.parametrize(("image_format", "media_type"), FORMATS)
def test_a_cut_image_reads_as_incomplete(image_format: str, media_type: str) -> None:
    """The same bytes missing their last 40: the header still reads, the end does not."""
    facts = inspect_image(encoded(image_format)[:-40])
    assert facts is not None and facts.media_type == media_type and not facts.complete


@pytest.mark.parametrize(("image_format", "media_type"), FORMATS)
def test_a_result_is_accepted_only_whole_and_of_the_requested_size(
    image_format: str, media_type: str
) -> None:
    """verified_media_type: the type for a whole image; a clear refusal otherwise."""
    data = encoded(image_format)
    assert asyncio.run(verified_media_type(data, 96, 64)) == media_type
    with pytest.raises(UnusableResult, match="cut short"):
        asyncio.run(verified_media_type(data[: len(data) // 2], 96, 64))
    with pytest.raises(UnusableResult, match="96 x 64 pixels, not the 64 x 64 requested"):
        asyncio.run(verified_media_type(data, 64, 64))


def test_bytes_that_are_no_image_are_refused_by_pillow() -> None:
    """No known signature: Pillow decides (off the loop), and refuses."""
    with pytest.raises(UnusableResult, match="not a decodable PNG, JPEG or WebP"):
        asyncio.run(verified_media_type(b"GIF89a" + b"\0" * 100, 96, 64))

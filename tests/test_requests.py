"""The records that cross the provider boundary."""

from __future__ import annotations

import pydantic
import pytest

import editgraph as eg
from editgraph.requests import media_type_of


def test_generated_image_is_built_positionally_and_hides_its_bytes() -> None:
    """GeneratedImage(data, media_type, ...) works positionally; its repr omits the bytes."""
    image = eg.GeneratedImage(b"\x89PNG-bytes", "image/png", "https://x/y.png", 10.0, 1)
    assert (image.url, image.url_expires_at, image.unknown_outcomes) == ("https://x/y.png", 10.0, 1)
    assert "PNG-bytes" not in repr(image)


def test_reference_bytes_and_urls_stay_out_of_dumps_and_reprs() -> None:
    """How a reference is sent (URL, bytes) is never dumped or shown; what it is, is."""
    reference = eg.Reference(hash="ab" * 32, media_type="image/png", source="car.png",
                             url="https://x/car.png?token=s3cret", data=b"secret-bytes")
    assert reference.model_dump() == {"hash": "ab" * 32, "media_type": "image/png",
                                      "source": "car.png"}
    assert "secret-bytes" not in repr(reference)


def test_edit_request_is_frozen() -> None:
    """An EditRequest cannot be changed after it is made."""
    request = eg.EditRequest(node="n", model="m", prompt="p", width=256, height=256, seed=1)
    with pytest.raises(pydantic.ValidationError):
        request.prompt = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("image_format", "media_type"),
    [("JPEG", "image/jpeg"), ("jpeg", "image/jpeg"), ("MPO", "image/jpeg"),
     ("PNG", "image/png"), ("WEBP", "image/webp"), ("TIFF", None), (None, None)],
)
def test_media_types_of_pillow_formats(image_format: str | None, media_type: str | None) -> None:
    """Pillow format names (and output_format spellings) map to the media types sent."""
    assert media_type_of(image_format) == media_type

"""Tests for the offline Preview provider."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json

import pytest
from PIL import Image, ImageChops

from editgraph.errors import ProviderError
from editgraph.providers.base import Provider
from editgraph.providers.preview import Preview
from editgraph.requests import EditRequest, GeneratedImage, Reference

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def solid_png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    """A small solid-colour PNG, as a user's source image would arrive."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def reference(
    data: bytes | None, source: str = "source.png", url: str | None = None
) -> Reference:
    """A Reference to ``data`` (or to ``url`` only, when ``data`` is None)."""
    digest = hashlib.sha256(data if data is not None else (url or "").encode()).hexdigest()
    return Reference(hash=digest, media_type="image/png", source=source, data=data, url=url)


def make_request(**changes: object) -> EditRequest:
    """An EditRequest with sensible defaults, overridden by ``changes``."""
    fields: dict[str, object] = {
        "node": "night",
        "model": "black-forest-labs/FLUX.2-pro",
        "prompt": "Make image 1 a night scene, wet asphalt",
        "width": 1024,
        "height": 768,
        "seed": 7,
    }
    fields.update(changes)
    return EditRequest.model_validate(fields)


def generate(request: EditRequest) -> GeneratedImage:
    """Run Preview().generate on ``request`` in a fresh event loop."""
    return asyncio.run(Preview().generate(request))


def decode(result: GeneratedImage) -> Image.Image:
    """The result's bytes fully decoded as RGB."""
    image = Image.open(io.BytesIO(result.data))
    image.load()
    return image.convert("RGB")


def pixel_count(image: Image.Image, colour: tuple[int, int, int]) -> int:
    """How many pixels of ``image`` are exactly ``colour``."""
    colours = image.getcolors(maxcolors=image.width * image.height) or []
    return sum(count for count, value in colours if value == colour)


def mean_x(image: Image.Image, colour: tuple[int, int, int]) -> float:
    """The mean x coordinate of the pixels of ``image`` that are exactly ``colour``."""
    xs = [
        x
        for y in range(0, image.height, 4)
        for x in range(0, image.width, 4)
        if image.getpixel((x, y)) == colour
    ]
    assert xs, f"no pixels of {colour}"
    return sum(xs) / len(xs)


def test_is_a_provider_named_preview() -> None:
    """Preview meets the Provider protocol and is named "preview" (part of cache keys)."""
    provider = Preview()
    assert isinstance(provider, Provider)
    assert provider.name == "preview"
    assert repr(provider) == "Preview()"


@pytest.mark.parametrize(
    ("width", "height"), [(1024, 768), (256, 256), (768, 1024), (1920, 256), (512, 1920)]
)
def test_image_has_the_requested_size(width: int, height: int) -> None:
    """The image is exactly width x height, with and without references and colours."""
    request = make_request(
        width=width,
        height=height,
        prompt="Paint the car from image 1 #2E4057 like image 2",
        references=(reference(solid_png(RED)), reference(solid_png(BLUE), "blue.png")),
    )
    assert decode(generate(request)).size == (width, height)


def test_jpeg_is_the_default_output() -> None:
    """Without output_format the result is a decodable JPEG labelled image/jpeg."""
    result = generate(make_request())
    assert result.media_type == "image/jpeg"
    assert Image.open(io.BytesIO(result.data)).format == "JPEG"
    assert result.url is None
    assert result.unknown_outcomes == 0


def test_png_output_is_png() -> None:
    """output_format="png" gives PNG bytes labelled image/png."""
    result = generate(make_request(output_format="png"))
    assert result.media_type == "image/png"
    assert Image.open(io.BytesIO(result.data)).format == "PNG"


@pytest.mark.parametrize("output_format", ["jpeg", "png"])
def test_same_request_gives_identical_bytes(output_format: str) -> None:
    """Two renders of one request, by different Preview objects, are byte-for-byte equal."""
    request = make_request(
        output_format=output_format,
        prompt="Blend image 1 and image 2 in #E8AA14",
        references=(reference(solid_png(RED)), reference(solid_png(BLUE), "blue.png")),
    )
    assert generate(request).data == generate(request).data


def test_different_seed_gives_different_bytes_and_tint() -> None:
    """Another seed changes the bytes and visibly changes the background tint."""
    first = decode(generate(make_request(seed=1, output_format="png")))
    second = decode(generate(make_request(seed=2, output_format="png")))
    assert first.tobytes() != second.tobytes()
    corner = (first.width // 2, first.height - 3)  # background, below the footer text
    assert first.getpixel(corner) != second.getpixel(corner)


def test_different_prompt_gives_different_bytes() -> None:
    """The prompt's text is drawn, so another prompt gives another image."""
    first = generate(make_request(prompt="Make image 1 a night scene"))
    second = generate(make_request(prompt="Make image 1 a day scene"))
    assert first.data != second.data


@pytest.mark.parametrize(
    ("prompt", "colour"),
    [
        ("Paint the car #2E4057", (0x2E, 0x40, 0x57)),
        ("Trim in #e8aa14, please", (0xE8, 0xAA, 0x14)),
        ("A neon sign in #f60", (0xFF, 0x66, 0x00)),
    ],
)
def test_hex_colour_band_shows_the_colour(prompt: str, colour: tuple[int, int, int]) -> None:
    """Each #RGB / #RRGGBB in the prompt appears as a solid swatch of that colour."""
    image = decode(generate(make_request(prompt=prompt, output_format="png")))
    assert pixel_count(image, colour) > 5_000


def test_swatches_follow_the_prompt_order() -> None:
    """Swatches appear left to right in the order the prompt names the colours."""
    prompt = "A #FF0000 car beside a #0000FF bus"
    image = decode(generate(make_request(prompt=prompt, output_format="png")))
    assert mean_x(image, RED) < mean_x(image, BLUE)


def test_structured_prompt_palette_is_shown() -> None:
    """A structured prompt (JSON text) still gets a swatch per palette colour."""
    prompt = json.dumps(
        {"scene": "the car from image 1", "color_palette": ["#FF6F61"]}, separators=(",", ":")
    )
    image = decode(generate(make_request(prompt=prompt, output_format="png")))
    assert pixel_count(image, (0xFF, 0x6F, 0x61)) > 5_000


def test_image_number_is_not_a_colour() -> None:
    """ "image #123" names a reference, so it gets no #112233 swatch."""
    image = decode(
        generate(make_request(prompt="Put image #123 on a beach", output_format="png"))
    )
    assert pixel_count(image, (0x11, 0x22, 0x33)) == 0


def test_reference_thumbnail_appears() -> None:
    """A pure red reference puts a block of red pixels in the image; none without it."""
    with_red = make_request(references=(reference(solid_png(RED)),), output_format="png")
    without = make_request(output_format="png")
    assert pixel_count(decode(generate(with_red)), RED) > 20_000
    assert pixel_count(decode(generate(without)), RED) == 0


def test_jpeg_reference_thumbnail_appears() -> None:
    """A large JPEG reference (decoded at reduced scale) is shown too."""
    buffer = io.BytesIO()
    Image.new("RGB", (1600, 1200), RED).save(buffer, format="JPEG", quality=95)
    request = make_request(references=(reference(buffer.getvalue(), "red.jpg"),))
    red, green, blue = decode(generate(request)).split()
    reddish = Image.eval(red, lambda v: 255 if v > 220 else 0)
    not_green = Image.eval(green, lambda v: 255 if v < 40 else 0)
    not_blue = Image.eval(blue, lambda v: 255 if v < 40 else 0)
    mask = ImageChops.multiply(ImageChops.multiply(reddish, not_green), not_blue)
    assert pixel_count(mask.convert("RGB"), (255, 255, 255)) > 20_000


def test_references_appear_in_order() -> None:
    """Image 1 is drawn left of image 2."""
    request = make_request(
        references=(
            reference(solid_png(RED), "red.png"),
            reference(solid_png(BLUE), "blue.png"),
        ),
        output_format="png",
    )
    image = decode(generate(request))
    assert mean_x(image, RED) < mean_x(image, BLUE)


def test_transparent_reference_is_shown_over_white() -> None:
    """A reference with an alpha channel is flattened onto white, not black."""
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 48), (0, 0, 0, 0)).save(buffer, format="PNG")
    request = make_request(references=(reference(buffer.getvalue()),), output_format="png")
    image = decode(generate(request))
    assert pixel_count(image, (255, 255, 255)) > 20_000


def test_url_only_reference_gets_a_placeholder() -> None:
    """A reference with only a URL is drawn as a placeholder box; nothing is fetched."""
    url = "https://example.com/car.png"
    request = make_request(references=(reference(None, source=url, url=url),))
    assert decode(generate(request)).size == (1024, 768)


def test_undecodable_reference_raises_provider_error() -> None:
    """Bytes that are not an image fail the call with a ProviderError naming the node."""
    request = make_request(references=(reference(b"not an image", "junk.png"),))
    with pytest.raises(ProviderError, match=r"node 'night': reference image 1 \(junk.png\)"):
        generate(request)


def test_text_outside_the_builtin_font_is_drawn() -> None:
    """Accents, dashes and other non-ASCII text render without error."""
    request = make_request(node="café", prompt="Un café — très noir × 2 ☕ " * 40)
    assert decode(generate(request)).size == (1024, 768)

"""Region-edit geometry: the crop box, the model size, and the pixel guarantee end to end."""

from __future__ import annotations

import io
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageDraw
from test_ops import asset, changed_pixels, near_mask

from editgraph import ops
from editgraph.regions import MODEL_PIXELS, crop_box, mask_area, model_size


@given(st.integers(1, 6000), st.integers(1, 6000))
def test_model_size_is_valid_and_never_over_a_megapixel(width: int, height: int) -> None:
    """Any crop gets multiples of 16 within 256..1920 and at most 1024*1024 pixels."""
    side_w, side_h = model_size(width, height)
    assert side_w % 16 == 0 and side_h % 16 == 0
    assert 256 <= side_w <= 1920 and 256 <= side_h <= 1920
    assert side_w * side_h <= MODEL_PIXELS


@given(st.integers(64, 4000), st.floats(0.5, 2.0))
def test_model_size_keeps_the_aspect_near_one_megapixel(width: int, ratio: float) -> None:
    """Up to 2:1 either way, the aspect stays within 2% and the area above 0.9 MP."""
    height = max(1, round(width / ratio))
    side_w, side_h = model_size(width, height)
    assert abs(math.log(side_w / side_h / (width / height))) < 0.02
    assert side_w * side_h >= 0.9 * MODEL_PIXELS


def test_model_size_examples() -> None:
    """Square crops edit at 1024x1024; a 4:3 crop at 1168x880; extreme ones are clamped."""
    assert model_size(100, 100) == (1024, 1024)
    assert model_size(2000, 2000) == (1024, 1024)
    assert model_size(400, 300) == (1168, 880)
    assert model_size(300, 400) == (880, 1168)
    assert model_size(1000, 100) == (1920, 256)


def test_crop_box_grows_by_the_margin_and_the_feather_and_is_clamped() -> None:
    """The margin is a fraction of the region's longer side; feather is the least growth."""
    assert crop_box((1000, 800), (400, 300, 600, 400), margin=0.25) == (350, 250, 650, 450)
    assert crop_box((1000, 800), (400, 300, 600, 400), margin=0.0, feather=16) == (
        384, 284, 616, 416)
    assert crop_box((1000, 800), (10, 700, 200, 790), margin=0.5) == (0, 605, 295, 800)


def test_mask_area_is_the_bounding_box_of_the_half_white_pixels() -> None:
    """mask_area ignores pixels under 128 and is None for an empty mask."""
    mask = Image.new("L", (50, 40), 0)
    mask.paste(127, (0, 0, 50, 40))
    assert mask_area(mask) is None
    mask.paste(200, (10, 5, 20, 30))
    assert mask_area(mask) == (10, 5, 20, 30)


@pytest.mark.parametrize("feather", [0, 4, 16])
def test_region_pipeline_changes_nothing_farther_than_feather(feather: int) -> None:
    """Crop, scale to model size, edit, scale back, composite: far pixels are exact.

    The stand-in for the model inverts the crop, so every pixel the composite lets
    through differs from the input; PNG output is decoded and compared pixel by pixel.
    """
    photo = asset("coffee.jpg")  # 600 x 400
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse((230, 120, 330, 190), fill=255)  # the coffee's surface
    area = mask_area(mask)
    assert area is not None
    box = crop_box(photo.size, area, margin=0.25, feather=feather)
    size = model_size(box[2] - box[0], box[3] - box[1])
    scaled = ops.crop([photo], box=box, width=size[0], height=size[1])
    assert scaled.size == size
    edited = ImageChops.invert(scaled)  # what the model returns, at the model's size
    result = ops.composite([photo, edited, mask], box=box, feather=feather)
    with Image.open(io.BytesIO(ops.encode_png(result))) as decoded:
        decoded.load()
        changed = changed_pixels(photo, decoded)
    assert changed <= near_mask(mask, feather)
    # Everything in the mask was edited (inverted, after a round trip through the model size).
    assert {(x, 155) for x in range(240, 320)} <= changed

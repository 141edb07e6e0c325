"""Region-edit geometry: the crop box, the model size, and the pixel guarantee end to end."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageDraw
from test_ops import asset, changed_pixels, near_mask

import editgraph as eg
from editgraph import ops
from editgraph.nodes import EditNode
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


# ---------------------------------------------------------------------- region edits in a graph

ROOT = Path(__file__).resolve().parents[1]
JAR = ROOT / "examples" / "assets" / "jar.png"
JAR_MASK = ROOT / "examples" / "assets" / "jar_label_mask.png"


def decoded(data: bytes) -> Image.Image:
    """Decode image bytes fully."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image


def test_a_region_edit_expands_into_crop_edit_and_composite(tmp_path: Path) -> None:
    """NAME.crop (op), NAME.edit (the model call on the crop), NAME (the composite)."""
    g = eg.Graph(cache_dir=tmp_path / "cache", output_format="png",
                 provider=eg.providers.Preview())
    jar = g.image(JAR, name="jar")
    swatch = g.image(ROOT / "examples" / "assets" / "swatch_navy.png", name="swatch")
    label = g.edit(f"Recolour the label of {jar} like {swatch}", region=(104, 236, 280, 380),
                   name="label", seed=3)
    assert label.name == "label"
    assert list(g.edits) == ["label.crop", "label.edit", "label"]
    assert [g.dag.nodes[name]["kind"] for name in g.edits] == ["op", "edit", "op"]
    edit = g.edits["label.edit"]
    assert isinstance(edit, EditNode)
    assert edit.references == ("label.crop", "swatch")
    assert edit.prompt == "Recolour the label of image 1 like image 2"
    width, height = edit.parameters["width"], edit.parameters["height"]
    assert width % 16 == 0 and height % 16 == 0 and width * height <= MODEL_PIXELS
    assert width * height >= 0.9 * MODEL_PIXELS
    run = g.run()
    assert list(run) == ["label.crop", "label.edit", "label"]
    assert run["label.crop"].image.size == (width, height)
    assert run["label.edit"].request.references[0].source == "label.crop"
    assert run["label"].image.size == (384, 512)
    assert [result.cost for result in run.values()] == [0.0, 0.03, 0.0]


@pytest.mark.parametrize("feather", [0, 16])
def test_pixels_outside_the_feathered_mask_equal_the_input(tmp_path: Path, feather: int) -> None:
    """Every pixel farther than feather from the mask is image 1's own, pixel by pixel."""
    g = eg.Graph(cache_dir=tmp_path / "cache", output_format="png")
    jar = g.image(JAR, name="jar")
    g.edit(f"Make the label on {jar} navy", mask=JAR_MASK, feather=feather, name="label")
    run = g.run(provider=eg.providers.Preview())
    with Image.open(JAR) as original, Image.open(JAR_MASK) as mask:
        changed = changed_pixels(original.convert("RGB"), run["label"].image.convert("RGB"))
        assert changed and changed <= near_mask(mask, feather)
        # Inside the mask the edit shows through (the preview tints the crop).
        assert (190, 300) in changed
    assert "label.mask" in g.sources and g.sources["label.mask"].source == str(JAR_MASK)


def test_the_preview_provider_shows_the_crop_it_was_given(tmp_path: Path) -> None:
    """Preview's image for NAME.edit is the crop itself, tinted, under a label band."""
    g = eg.Graph(cache_dir=tmp_path / "cache", output_format="png")
    jar = g.image(JAR, name="jar")
    g.edit(f"Make the label on {jar} #FF6F61", region=(104, 236, 280, 380), name="label")
    run = g.run(provider=eg.providers.Preview())
    crop = run["label.crop"].image.convert("RGB")
    shown = run["label.edit"].image.convert("RGB")
    expected = Image.blend(crop, Image.new("RGB", crop.size, (255, 111, 97)), 0.45)
    below_band = (0, 80, crop.width, crop.height)
    assert ImageChops.difference(shown.crop(below_band), expected.crop(below_band)).getbbox() is None


def test_region_edits_take_masks_from_images_handles_and_ops(tmp_path: Path) -> None:
    """mask= takes a PIL image, a source handle, or an op over sources (known before the run)."""
    g = eg.Graph(cache_dir=tmp_path / "cache")
    jar = g.image(JAR, name="jar")
    with Image.open(JAR_MASK) as mask_file:
        mask_image = mask_file.convert("L")
    g.edit(f"Gold label on {jar}", mask=mask_image, name="gold")
    assert g.sources["gold.mask"].source == "<PIL image>"
    mask_source = g.image(JAR_MASK, name="label_mask")
    g.edit(f"Red label on {jar}", mask=mask_source, name="red")
    assert g.edits["red"].references == ("jar", "red.edit", "label_mask")
    drawn = g.op(ops.box_mask, width=384, height=512, box=(104, 236, 280, 380), name="drawn")
    g.edit(f"Green label on {jar}", mask=drawn, name="green")
    assert g.edits["green"].references == ("jar", "green.edit", "drawn")
    # image 1 may be an edit's output: its size is the edit's.
    g.edit(f"Blue label on {g['gold']}", region=(0, 0, 100, 100), name="blue")
    assert g.edits["blue.crop"].references == ("gold",)


def test_region_edit_errors_are_raised_when_declared(tmp_path: Path) -> None:
    """Bad regions and masks are GraphErrors naming the node and the field; nothing is added."""
    g = eg.Graph(cache_dir=tmp_path / "cache")
    jar = g.image(JAR, name="jar")
    night = g.edit(f"{jar} at night", name="night", width=384, height=512)
    cases: list[tuple[dict[str, object], str]] = [
        ({"region": (0, 0, 500, 100)}, r"region: \(0, 0, 500, 100\) reaches outside image 1"),
        ({"region": (50, 50, 10, 100)}, r"region: .*right > left"),
        ({"mask": Image.new("L", (10, 10), 255)}, r"mask: it is 10x10, but image 1 is 384x512"),
        ({"mask": Image.new("L", (384, 512), 0)}, r"mask: no pixel of it is at least half white"),
        ({"mask": night}, r"mask: 'night' is made by a model"),
        ({"region": (0, 0, 10, 10), "width": 512}, r"width: a region edit is made at a size"),
        ({"region": (0, 0, 10, 10), "feather": -1}, r"feather: must be an int from 0"),
        ({"region": (0, 0, 10, 10), "margin": "wide"}, r"margin: must be a number"),
        ({"region": (0, 0, 10, 10), "mask": JAR_MASK}, r"region: give region= or mask=, not both"),
    ]
    before = (list(g.sources), list(g.edits))
    for arguments, message in cases:
        with pytest.raises(eg.GraphError, match=rf"node 'label': {message}"):
            g.edit(f"Recolour {jar}", name="label", **arguments)  # type: ignore[call-overload]
        assert (list(g.sources), list(g.edits)) == before, arguments
    with pytest.raises(eg.GraphError, match="names no image"):
        g.edit("Recolour the label", region=(0, 0, 10, 10), name="label")
    with pytest.raises(eg.GraphError, match="cannot be a sweep"):
        g.edit(f"Recolour {jar}", region=(0, 0, 10, 10), seed=[1, 2])


def test_region_edit_recipe_runs_offline_and_is_cached_the_second_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`editgraph run recipes/region_edit.py` works with Preview; run twice, all cached."""
    from click.testing import CliRunner

    from editgraph.cli import main

    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    recipe = str(ROOT / "recipes" / "region_edit.py")
    first = CliRunner().invoke(main, ["run", recipe, "--out", "out"])
    assert first.exit_code == 0, first.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [entry["node"] for entry in manifest["edits"]] == [
        "label.crop", "label.edit", "label", "side_by_side"]
    assert [entry["kind"] for entry in manifest["edits"]] == ["op", "edit", "op", "op"]
    second = CliRunner().invoke(main, ["run", recipe, "--out", "out"])
    assert second.exit_code == 0, second.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all(entry["cached"] for entry in manifest["edits"])
    assert "4 cached" in second.stdout
    with Image.open(JAR) as original, Image.open(JAR_MASK) as mask, \
            Image.open(tmp_path / "out" / "label.png") as result:
        changed = changed_pixels(original.convert("RGB"), result.convert("RGB"))
        assert changed and changed <= near_mask(mask, 16)

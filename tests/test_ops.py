"""Operations: the decorator, op keys, PNG output, feathering and every built-in's geometry."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw

import editgraph as eg
from editgraph import ops
from editgraph.keys import canonical_json, content_hash
from editgraph.nodes import EditNode
from editgraph.requests import SCHEMA_VERSION

ASSETS = Path(__file__).resolve().parents[1] / "examples" / "assets"


def asset(name: str) -> Image.Image:
    """A sample photo or drawing from examples/assets, decoded."""
    with Image.open(ASSETS / name) as image:
        image.load()
        return image


def same(a: Image.Image, b: Image.Image) -> bool:
    """True when two images have the same size, mode and every pixel."""
    return a.size == b.size and a.mode == b.mode and ImageChops.difference(a, b).getbbox() is None


def near_mask(mask: Image.Image, feather: int) -> set[tuple[int, int]]:
    """Pixels within Euclidean distance < feather of the mask (>= 128), by brute force."""
    inside = {
        (index % mask.width, index // mask.width)
        for index, value in enumerate(mask.convert("L").tobytes()) if value >= 128
    }
    edge = [
        (x, y) for x, y in inside
        if any(n not in inside for n in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)))
    ]
    disc = [(dx, dy) for dx in range(-feather, feather + 1) for dy in range(-feather, feather + 1)
            if dx * dx + dy * dy < feather * feather]
    near = set(inside)
    for x, y in edge:
        near.update((x + dx, y + dy) for dx, dy in disc)
    return near


def changed_pixels(before: Image.Image, after: Image.Image) -> set[tuple[int, int]]:
    """Coordinates of every pixel that differs between two images of one size."""
    diff = ImageChops.difference(before.convert("RGB"), after.convert("RGB")).convert("L")
    width = diff.width
    return {(index % width, index // width) for index, value in enumerate(diff.tobytes()) if value}


# ---------------------------------------------------------------------- the decorator


@eg.operation(version="1")
def invert(images: list[Image.Image], amount: int = 255) -> Image.Image:
    """A user operation: each channel becomes amount - value."""
    return images[0].convert("RGB").point(lambda value: max(0, amount - value))


def test_operation_records_qualified_name_and_version() -> None:
    """The decorator keeps the function's module-qualified name and the version."""
    assert isinstance(invert, eg.Operation)
    assert invert.name == f"{__name__}.invert"
    assert invert.version == "1"
    assert ops.crop.name == "editgraph.ops.crop"
    assert invert.__doc__ == "A user operation: each channel becomes amount - value."


def test_operation_refuses_an_empty_version() -> None:
    """A version is required: it is what tells the cache the function changed."""
    with pytest.raises(eg.GraphError, match="version"):
        eg.operation(version="")
    with pytest.raises(eg.GraphError, match="version"):
        eg.operation(version=2)  # type: ignore[arg-type]


def test_operation_refuses_var_keyword_parameters() -> None:
    """Every parameter must be named, so it can be checked and hashed."""
    with pytest.raises(eg.GraphError, match=r"\*\*params"):
        @eg.operation(version="1")
        def loose(images: list[Image.Image], **params: int) -> Image.Image:
            """Takes anything."""
            return images[0]


def test_calling_an_operation_runs_it() -> None:
    """An operation is still a function: called directly, it checks and runs."""
    image = Image.new("RGB", (4, 4), (10, 20, 30))
    assert invert([image]).getpixel((0, 0)) == (245, 235, 225)
    assert invert([image], amount=100).getpixel((0, 0)) == (90, 80, 70)


def test_parameters_are_checked_with_the_node_and_field_named() -> None:
    """Unknown, missing and ill-typed parameters are GraphErrors naming node and field."""
    with pytest.raises(eg.GraphError, match=r"node 'cut': size: unknown parameter .*box"):
        ops.crop.check_parameters({"box": (0, 0, 1, 1), "size": 3}, node="cut")
    with pytest.raises(eg.GraphError, match=r"node 'cut': box: required"):
        ops.crop.check_parameters({}, node="cut")
    with pytest.raises(eg.GraphError, match=r"node 'fit': fit: .*'cover'"):
        ops.resize.check_parameters({"width": 8, "height": 8, "fit": "stretch"}, node="fit")
    with pytest.raises(eg.GraphError, match=r"node 'cut': box: .*right > left"):
        ops.crop.check_parameters({"box": (10, 0, 5, 5)}, node="cut")
    with pytest.raises(eg.GraphError, match=r"node 'p': colour: "):
        ops.pad.check_parameters({"width": 8, "height": 8, "colour": "#12345"}, node="p")
    with pytest.raises(eg.GraphError, match=r"operation .*invert: amount: "):
        invert.check_parameters({"amount": "lots"})


def test_parameters_without_json_form_are_refused() -> None:
    """An untyped parameter must still have a canonical JSON form to be hashed."""

    @eg.operation(version="1")
    def tag(images: list[Image.Image], label=None) -> Image.Image:  # type: ignore[no-untyped-def]
        """Ignores its label."""
        return images[0]

    assert tag.check_parameters({"label": ["a", 1]}) == {"label": ["a", 1]}
    with pytest.raises(eg.GraphError, match="label: object has no canonical JSON form"):
        tag.check_parameters({"label": object()})


def test_input_counts_are_checked() -> None:
    """Each built-in says how many inputs it takes; other counts are refused."""
    ops.crop.check_inputs(1)
    with pytest.raises(eg.GraphError, match=r"node 'c': inputs: .*crop takes 1 input"):
        ops.crop.check_inputs(2, node="c")
    with pytest.raises(eg.GraphError, match="2 to 3"):
        ops.composite.check_inputs(1)
    with pytest.raises(eg.GraphError, match="at least 1"):
        ops.grid.check_inputs(0)
    ops.grid.check_inputs(9)
    ops.box_mask.check_inputs(0)


def test_a_failing_function_is_an_operation_error() -> None:
    """What the function raises becomes an OperationError, the original as its cause."""

    @eg.operation(version="1")
    def broken(images: list[Image.Image]) -> Image.Image:
        """Always fails."""
        raise ZeroDivisionError("no")

    @eg.operation(version="1")
    def not_an_image(images: list[Image.Image]) -> Image.Image:
        """Returns the wrong type."""
        return "pixels"  # type: ignore[return-value]

    with pytest.raises(eg.OperationError, match="broken failed: ZeroDivisionError: no") as info:
        broken([])
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(eg.OperationError, match="returned str, not a PIL.Image.Image"):
        not_an_image([])


# ---------------------------------------------------------------------- keys and PNG


def test_op_key_is_sha256_over_name_version_parameters_and_inputs() -> None:
    """The key is sha256 of the canonical JSON of exactly those four things (and the schema)."""
    params = ops.crop.check_parameters({"box": (1, 2, 3, 4)})
    key = ops.crop.key(params, ["aa", "bb"])
    material = {
        "schema": SCHEMA_VERSION, "operation": "editgraph.ops.crop", "version": "1",
        "parameters": {"box": [1, 2, 3, 4], "width": None, "height": None},
        "inputs": ["aa", "bb"],
    }
    assert key == content_hash(canonical_json(material))


def test_op_key_changes_with_each_ingredient_only() -> None:
    """Version, parameters, inputs and their order change the key; spelling does not."""
    bumped = eg.operation(version="2")(invert.function)
    base = invert.key(invert.check_parameters({}), ["aa"])
    assert base == invert.key(invert.check_parameters({"amount": 255}), ["aa"])
    assert base != bumped.key(bumped.check_parameters({}), ["aa"])
    assert base != invert.key(invert.check_parameters({"amount": 200}), ["aa"])
    assert base != invert.key(invert.check_parameters({}), ["ab"])
    crop_a = ops.crop.key(ops.crop.check_parameters({"box": (0, 0, 4, 4)}), ["aa"])
    crop_b = ops.crop.key(ops.crop.check_parameters({"box": [0, 0, 4, 4]}), ["aa"])
    assert crop_a == crop_b
    grid_ab = ops.grid.key(ops.grid.check_parameters({}), ["aa", "bb"])
    assert grid_ab != ops.grid.key(ops.grid.check_parameters({}), ["bb", "aa"])


def test_encode_png_is_deterministic_and_lossless() -> None:
    """PNG output: the same image gives the same bytes, which decode to the same pixels."""
    image = asset("cat.jpg")
    data = ops.encode_png(image)
    assert data == ops.encode_png(image.copy())
    assert data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as decoded:
        assert same(decoded.convert("RGB"), image)


# ---------------------------------------------------------------------- feathering


def test_feather_is_exactly_the_euclidean_ramp() -> None:
    """Every pixel of a feathered irregular mask is 255*(1 - d/feather) for its true distance."""
    mask = Image.new("L", (90, 70), 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse((20, 15, 55, 45), fill=255)
    draw.rectangle((70, 5, 72, 60), fill=200)  # >= 128: in the mask
    draw.point((5, 65), fill=255)
    draw.rectangle((0, 0, 8, 8), fill=100)  # < 128: not in the mask
    feather = 9
    alpha = ops.feather_mask(mask, feather)
    inside = {(i % 90, i // 90) for i, v in enumerate(mask.tobytes()) if v >= 128}
    # The nearest mask pixel of a pixel outside the mask is always on the mask's edge.
    edge = [(x, y) for x, y in inside
            if any(n not in inside for n in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)))]
    for y in range(70):
        for x in range(90):
            distance = 0.0 if (x, y) in inside else min(
                math.hypot(x - px, y - py) for px, py in edge
            )
            expected = 0 if distance >= feather else round(255 * (1 - distance / feather))
            assert alpha.getpixel((x, y)) == expected, (x, y)


def test_feather_zero_is_the_thresholded_mask() -> None:
    """Without feathering the mask is just in (255) or out (0)."""
    mask = Image.linear_gradient("L").resize((32, 32))
    alpha = ops.feather_mask(mask, 0)
    assert set(alpha.tobytes()) == {0, 255}
    assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((0, 31)) == 255


def test_feather_of_an_empty_mask_is_empty() -> None:
    """An empty mask stays empty, whatever the feather."""
    assert ops.feather_mask(Image.new("L", (20, 20), 0), 5).getbbox() is None


# ---------------------------------------------------------------------- built-ins


def test_crop_cuts_the_box_exactly() -> None:
    """crop returns the box's pixels, and scales them when given a size."""
    car = asset("car.png")
    cut = ops.crop([car], box=(100, 50, 300, 250))
    assert cut.size == (200, 200)
    assert same(cut, car.crop((100, 50, 300, 250)))
    scaled = ops.crop([car], box=(100, 50, 300, 250), width=64, height=48)
    assert scaled.size == (64, 48)
    with pytest.raises(eg.OperationError, match=r"outside the 512x320 image"):
        ops.crop([car], box=(400, 0, 600, 100))
    with pytest.raises(eg.OperationError, match="both width and height"):
        ops.crop([car], box=(0, 0, 10, 10), width=5)


def test_resize_fill_cover_and_contain() -> None:
    """fill stretches, cover fills and crops evenly, contain fits inside keeping the aspect."""
    photo = asset("coffee.jpg")  # 600 x 400
    assert ops.resize([photo], width=300, height=300, fit="fill").size == (300, 300)
    cover = ops.resize([photo], width=300, height=300)
    assert cover.size == (300, 300)
    # cover: scaled to 450 x 300, then 75 px cut from each side.
    expected = photo.resize((450, 300), Image.Resampling.LANCZOS).crop((75, 0, 375, 300))
    assert same(cover, expected)
    contain = ops.resize([photo], width=300, height=300, fit="contain")
    assert contain.size == (300, 200)
    tall = ops.resize([asset("character.png")], width=300, height=300, fit="contain")
    assert tall.size == (225, 300)


def test_pad_centres_the_image_on_a_coloured_canvas() -> None:
    """pad keeps every pixel of the image, centred, and fills the rest with the colour."""
    bird = asset("bird.png")  # 384 x 384
    padded = ops.pad([bird], width=512, height=400, colour="#2E4057")
    assert padded.size == (512, 400)
    assert same(padded.crop((64, 8, 448, 392)), bird)
    assert padded.getpixel((0, 0)) == (46, 64, 87)
    assert padded.getpixel((511, 399)) == (46, 64, 87)
    assert ops.pad([bird], width=400, height=400, colour=(1, 2, 3)).getpixel((3, 3)) == (1, 2, 3)
    with pytest.raises(eg.OperationError, match="larger than 300x300"):
        ops.pad([bird], width=300, height=300)


def test_grid_lays_tiles_out_in_rows_with_gaps() -> None:
    """grid: cells as large as the largest input, images centred, gap around and between."""
    tiles = [asset("bird.png"), asset("bag.png"), asset("top.png"), asset("logo.png"),
             asset("swatch_navy.png")]
    sheet = ops.grid(tiles, columns=2, gap=10, background="black")
    assert sheet.size == (2 * 384 + 3 * 10, 3 * 384 + 4 * 10)
    assert same(sheet.crop((10, 10, 394, 394)), tiles[0])
    assert same(sheet.crop((404, 10, 788, 394)), tiles[1])
    assert same(sheet.crop((10, 404, 394, 788)), tiles[2])
    # logo.png is 256 px: centred in its 384 px cell.
    assert same(sheet.crop((404 + 64, 404 + 64, 404 + 320, 404 + 320)), tiles[3])
    assert sheet.getpixel((5, 5)) == (0, 0, 0)
    assert sheet.getpixel((398, 200)) == (0, 0, 0)
    row = ops.grid(tiles[:3], gap=0)
    assert row.size == (3 * 384, 384)


def test_mask_from_alpha() -> None:
    """The alpha channel becomes the mask; an opaque image gives an all-white mask."""
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.paste((255, 0, 0, 200), (2, 2, 5, 5))
    mask = ops.mask_from_alpha([rgba])
    assert mask.mode == "L" and mask.getpixel((3, 3)) == 200 and mask.getpixel((8, 8)) == 0
    assert set(ops.mask_from_alpha([asset("car.png")]).tobytes()) == {255}


def test_box_mask_is_white_inside_and_feathers_outward() -> None:
    """box_mask: 255 in the box, a linear ramp outside it, 0 from feather px on."""
    mask = ops.box_mask([], width=100, height=80, box=(30, 20, 60, 50), feather=10)
    assert mask.size == (100, 80) and mask.mode == "L"
    assert mask.getpixel((30, 20)) == 255 and mask.getpixel((59, 49)) == 255
    assert mask.getpixel((25, 30)) == 128  # 5 px out of 10: halfway
    assert mask.getpixel((20, 30)) == 0  # 10 px out
    assert mask.getpixel((23, 13)) == 3  # diagonal: hypot(7, 7) ~ 9.9 px -> 255 * 0.01
    assert mask.getpixel((22, 13)) == 0  # hypot(8, 7) ~ 10.6 px
    assert mask.getpixel((24, 14)) == round(255 * (1 - math.hypot(6, 6) / 10))
    hard = ops.box_mask([], width=100, height=80, box=(30, 20, 60, 50))
    assert set(hard.tobytes()) == {0, 255}
    with pytest.raises(eg.OperationError, match="outside the 100x80 mask"):
        ops.box_mask([], width=100, height=80, box=(30, 20, 160, 50))


def test_composite_pastes_into_the_box_and_leaves_the_rest() -> None:
    """composite scales the overlay into the box; every pixel outside the box is the base's."""
    room, logo = asset("room.png"), asset("logo.png")
    box = (200, 100, 328, 228)
    out = ops.composite([room, logo], box=box)
    assert out.size == room.size
    assert same(out.crop(box), logo.resize((128, 128), Image.Resampling.LANCZOS))
    assert changed_pixels(room, out) <= {(x, y) for x in range(200, 328) for y in range(100, 228)}
    whole = ops.composite([asset("car.png"), asset("shoes.png")])
    assert same(whole, asset("shoes.png"))


def test_composite_feather_without_mask_blends_the_edges_in() -> None:
    """Without a mask, feather fades the overlay's edge into the base over that width."""
    base = Image.new("RGB", (100, 100), (0, 0, 0))
    overlay = Image.new("RGB", (60, 60), (255, 255, 255))
    out = ops.composite([base, overlay], box=(20, 20, 80, 80), feather=10)
    assert out.getpixel((20, 50)) == (0, 0, 0)  # the box edge: alpha 0
    assert out.getpixel((50, 50)) == (255, 255, 255)  # inside: alpha 255
    assert 0 < out.getpixel((25, 50))[0] < 255
    with pytest.raises(eg.OperationError, match="too wide"):
        ops.composite([base, overlay], box=(20, 20, 80, 80), feather=30)


def test_composite_through_a_feathered_mask_keeps_far_pixels_exactly() -> None:
    """With a mask, every pixel farther than feather from it is the base's, pixel by pixel."""
    base = asset("cat.jpg")  # 451 x 300
    overlay = ImageChops.invert(base)
    mask = Image.new("L", base.size, 0)
    ImageDraw.Draw(mask).ellipse((150, 80, 260, 190), fill=255)
    feather = 12
    out = ops.composite([base, overlay, mask], feather=feather)
    changed = changed_pixels(base, out)
    assert changed and changed <= near_mask(mask, feather)
    inside = [(x, y) for x in range(160, 250) for y in range(120, 150)]
    assert all(out.getpixel(p) == overlay.getpixel(p) for p in inside)
    # feather 0: the mask is an alpha channel as it is (soft values kept).
    soft = ops.box_mask([], width=451, height=300, box=(100, 100, 200, 200), feather=20)
    out = ops.composite([base, overlay, soft])
    assert changed_pixels(base, out) <= near_mask(soft.point(lambda v: 255 if v else 0), 1)
    with pytest.raises(eg.OperationError, match="must have the base's size"):
        ops.composite([base, overlay, Image.new("L", (10, 10), 255)])


def test_composite_honours_the_overlays_alpha() -> None:
    """A transparent overlay pixel leaves the base pixel as it was."""
    base = Image.new("RGB", (20, 20), (10, 10, 10))
    overlay = Image.new("RGBA", (20, 20), (200, 0, 0, 0))
    overlay.paste((200, 0, 0, 255), (5, 5, 10, 10))
    out = ops.composite([base, overlay])
    assert out.getpixel((0, 0)) == (10, 10, 10) and out.getpixel((6, 6)) == (200, 0, 0)


# ---------------------------------------------------------------------- op nodes in a graph

#: How much ``brighten`` adds: a test changes it to stand for a new release of the function.
BRIGHTEN = {"amount": 40}


def brighten_function(images: list[Image.Image]) -> Image.Image:
    """Adds BRIGHTEN["amount"] to every channel (its behaviour is what versions track)."""
    return images[0].convert("RGB").point(lambda value: min(255, value + BRIGHTEN["amount"]))


def op_graph(cache: Path, brighten: eg.Operation) -> eg.Graph:
    """car -> bright (op) -> poster (edit) -> sheet (op over car and poster); car -> night."""
    g = eg.Graph(cache_dir=cache)
    car = g.image(ASSETS / "car.png", name="car")
    bright = g.op(brighten, car, name="bright")
    poster = g.edit(f"A poster of {bright}", name="poster")
    g.edit(f"{car} at night", name="night")
    g.op(ops.grid, car, poster, gap=4, name="sheet")
    return g


def test_ops_run_once_and_are_cached_like_edits(tmp_path: Path) -> None:
    """A second run serves every op and edit from the cache; ops never reach the provider."""
    from edit_providers import CountingProvider

    brighten = eg.operation(version="1")(brighten_function)
    provider = CountingProvider()
    first = op_graph(tmp_path / "cache", brighten).run(provider=provider)
    assert list(first) == ["bright", "poster", "night", "sheet"]
    assert sorted(provider.nodes) == ["night", "poster"]
    assert first["bright"].media_type == "image/png" and first["bright"].cost == 0.0
    expected = brighten_function([asset("car.png")])
    assert same(first["bright"].image.convert("RGB"), expected)
    again = op_graph(tmp_path / "cache", brighten).run(provider=provider)
    assert all(result.cached for result in again.values())
    assert sorted(provider.nodes) == ["night", "poster"]


def test_a_version_bump_reruns_the_op_and_only_its_descendants(tmp_path: Path) -> None:
    """New behaviour under a new version re-runs that op and what depends on it, nothing else."""
    from edit_providers import CountingProvider

    cache = tmp_path / "cache"
    op_graph(cache, eg.operation(version="1")(brighten_function)).run(provider=CountingProvider())
    BRIGHTEN["amount"] = 80
    try:
        # Same version: the cache still answers (this is why the version must be bumped).
        stale = op_graph(cache, eg.operation(version="1")(brighten_function))
        assert stale.plan(provider=CountingProvider()).to_run == []
        bumped = op_graph(cache, eg.operation(version="2")(brighten_function))
        plan = bumped.plan(provider=CountingProvider())
        assert plan.to_run == ["bright", "poster", "sheet"]
        assert "version 1 -> " in plan.reasons["bright"] and "version 2" in plan.reasons["bright"]
        provider = CountingProvider()
        run = bumped.run(provider=provider)
    finally:
        BRIGHTEN["amount"] = 40
    assert provider.nodes == ["poster"]
    assert {name for name, result in run.items() if not result.cached} == {
        "bright", "poster", "sheet"}
    assert run["night"].cached


def test_ops_take_no_concurrency_slot(tmp_path: Path) -> None:
    """With the only slot held by a blocked edit, ops on other branches still finish."""
    import asyncio

    from edit_providers import GatedProvider
    from test_execute import TIMEOUT, Recorder

    from editgraph.execute import execute
    from editgraph.store import DiskStore

    async def scenario() -> None:
        g = eg.Graph(cache_dir=tmp_path / "cache")
        car = g.image(ASSETS / "car.png", name="car")
        g.edit(f"Blocked edit of {car}", name="blocked")
        cut = g.op(ops.crop, car, box=(0, 0, 64, 64), name="cut")
        g.op(ops.pad, cut, width=80, height=80, name="padded")
        gate = asyncio.Event()
        provider = GatedProvider({"blocked": gate})
        recorder = Recorder(["padded"])
        store = DiskStore(tmp_path / "cache")
        running = asyncio.ensure_future(execute(
            list(g.edits.values()), g.sources, provider=provider, store=store,
            concurrency=1, progress=recorder,
        ))
        await asyncio.wait_for(provider.started["blocked"].wait(), TIMEOUT)
        await asyncio.wait_for(recorder.events["padded"].wait(), TIMEOUT)
        assert not gate.is_set() and ("padded", False) in recorder.finished
        gate.set()
        run = await asyncio.wait_for(running, TIMEOUT)
        store.close()
        assert run.failures == {} and run["padded"].image.size == (80, 80)

    asyncio.run(scenario())


def test_a_failing_op_fails_only_itself_and_its_descendants(tmp_path: Path) -> None:
    """An op error is an OperationError naming the node; other branches finish."""
    from edit_providers import CountingProvider

    g = eg.Graph(cache_dir=tmp_path / "cache")
    car = g.image(ASSETS / "car.png", name="car")
    # A box beyond a source is refused when declared; beyond an op's output, when it runs.
    strip = g.op(ops.crop, car, box=(0, 0, 500, 100), name="strip")
    cut = g.op(ops.crop, strip, box=(400, 0, 600, 100), name="cut")  # beyond its 500 px
    g.edit(f"Frame {cut}", name="framed")
    g.edit(f"{car} at dusk", name="dusk")
    with pytest.raises(eg.RunError) as info:
        g.run(provider=CountingProvider())
    failures = info.value.failures
    assert isinstance(failures["cut"], eg.OperationError)
    assert str(failures["cut"]).startswith("node 'cut': crop: box (400, 0, 600, 100) reaches")
    assert "strip" in info.value.run
    assert isinstance(failures["framed"], eg.InputFailedError)
    assert set(failures) == {"cut", "framed"}
    assert info.value.run is not None and "dusk" in info.value.run


def test_g_op_checks_everything_when_declared() -> None:
    """Bad functions, inputs and parameters are GraphErrors naming the node and the field."""
    g = eg.Graph()
    car = g.image(ASSETS / "car.png", name="car")
    sweep = g.edit(f"{car} in colour", seed=[1, 2], name="colours")
    with pytest.raises(eg.GraphError, match="not an operation; decorate"):
        g.op(brighten_function, car)  # type: ignore[arg-type]
    with pytest.raises(eg.GraphError, match=r"node 'cut': box: required"):
        g.op(ops.crop, car, name="cut")
    with pytest.raises(eg.GraphError, match=r"node 'cut': inputs: .* takes 1 input"):
        g.op(ops.crop, car, car, name="cut", box=(0, 0, 4, 4))
    with pytest.raises(eg.GraphError, match=r"pass \*sweep"):
        g.op(ops.grid, sweep)  # type: ignore[arg-type]
    with pytest.raises(eg.GraphError, match=r"no node named 'nope'"):
        g.op(ops.grid, "nope")
    assert "cut" not in g
    sheet = g.op(ops.grid, *sweep, columns=2)
    assert sheet.name == "grid" and g.dag.nodes["grid"]["kind"] == "op"
    assert g.op(ops.crop, car, box=(0, 0, 4, 4)).name == "crop"
    assert g.op(ops.crop, car, box=(0, 0, 8, 8)).name == "crop_2"


def test_handles_of_ops_work_in_prompts(tmp_path: Path) -> None:
    """An op's handle becomes "image N" in an edit's prompt, like any node."""
    g = eg.Graph(cache_dir=tmp_path / "cache")
    car = g.image(ASSETS / "car.png", name="car")
    cut = g.op(ops.crop, car, box=(0, 0, 256, 256), name="cut")
    g.edit(f"Make {cut} blue, like {car}", name="blue")
    node = g.edits["blue"]
    assert isinstance(node, EditNode)
    assert node.prompt == "Make image 1 blue, like image 2" and node.references == ("cut", "car")


def test_plan_manifest_report_and_show_list_ops(tmp_path: Path) -> None:
    """Ops appear as op nodes: in the plan, the manifest, the saved files, the report, show."""
    from click.testing import CliRunner
    from edit_providers import CountingProvider

    from editgraph.cli import main
    from editgraph.display import dag_svg

    g = op_graph(tmp_path / "cache", eg.operation(version="1")(brighten_function))
    plan = g.plan(provider=CountingProvider())
    steps = {step.name: step for step in plan.steps}
    assert steps["bright"].kind == "op" and steps["bright"].estimated_cost == 0.0
    assert "op, run $0" in str(plan) and "brighten_function()" in str(plan)
    run = g.run(provider=CountingProvider())
    entries = {entry.node: entry for entry in run.manifest.edits}
    assert entries["sheet"].kind == "op" and entries["sheet"].provider == "local"
    assert entries["sheet"].model == "editgraph.ops.grid" and entries["sheet"].version == "1"
    assert entries["sheet"].parameters == {"columns": None, "gap": 4, "background": "white"}
    assert [reference.source for reference in entries["sheet"].references] == [
        str(ASSETS / "car.png"), "poster"]
    assert entries["poster"].kind == "edit"
    out = run.save(tmp_path / "out")
    assert eg.provenance(out / "sheet.png").model == "editgraph.ops.grid"
    report = run.report(tmp_path / "report.html").read_text()
    assert "editgraph.ops.grid (version 1), run locally" in report
    svg = dag_svg(g)
    assert "grid(gap=4" in svg and "op (local)" in svg
    recipe = tmp_path / "ops_recipe.py"
    recipe.write_text(
        "import editgraph as eg\n\n\ndef recipe() -> eg.Graph:\n"
        "    g = eg.Graph()\n"
        f"    car = g.image({str(ASSETS / 'car.png')!r}, name='car')\n"
        "    g.op(eg.ops.crop, car, box=(0, 0, 64, 64), name='cut')\n"
        "    return g\n"
    )
    shown = CliRunner().invoke(main, ["show", str(recipe)])
    assert shown.exit_code == 0, shown.output
    assert "1 source, 0 edits, 1 op" in shown.stdout and "cut (op)" in shown.stdout


def test_replay_reruns_a_saved_run_with_ops_from_the_cache(tmp_path: Path) -> None:
    """A saved run with built-in ops replays: same keys, every output verified."""
    from edit_providers import CountingProvider

    from editgraph.replay import replay

    g = eg.Graph(cache_dir=tmp_path / "cache")
    car = g.image(ASSETS / "car.png", name="car")
    cut = g.op(ops.crop, car, box=(0, 40, 256, 296), name="cut")
    blue = g.edit(f"Make {cut} blue", name="blue")
    g.op(ops.grid, cut, blue, name="pair")
    provider = CountingProvider()
    g.run(provider=provider).save(tmp_path / "out")
    result = replay(tmp_path / "out", provider=provider, cache_dir=tmp_path / "cache",
                    verify=True)
    assert result.edits == ["cut", "blue", "pair"]
    assert result.cached == ["cut", "blue", "pair"] and result.mismatches == {}
    assert provider.nodes == ["blue"]


def test_the_comic_recipe_lays_its_strip_out_without_a_model_call(tmp_path: Path) -> None:
    """recipes/comic.py: four model calls (the panels); grid and title are local ops."""
    from editgraph.recipe import build_recipe
    from editgraph.testing import FakeTogether

    graph = build_recipe(Path(__file__).resolve().parents[1] / "recipes" / "comic.py")
    kinds = {name: graph.dag.nodes[name]["kind"] for name in graph.edits}
    assert kinds == {"panel1": "edit", "panel2": "edit", "panel3": "edit", "panel4": "edit",
                     "panels": "op", "strip": "op"}
    with FakeTogether() as fake:
        provider = eg.providers.Together(api_key="test-key", base_url=fake.base_url)
        run = graph.run(provider=provider, cache_dir=tmp_path / "cache")
        assert len(fake.billed) == 4
    assert run["strip"].image.width == 4 * 768 + 5 * 12
    assert run.cost == pytest.approx(4 * 0.03)


def test_replay_refuses_an_op_it_cannot_find_loaded(tmp_path: Path) -> None:
    """An op whose operation is not loaded here is a GraphError, and nothing is imported."""
    from edit_providers import CountingProvider

    from editgraph.replay import replay

    g = eg.Graph(cache_dir=tmp_path / "cache")
    car = g.image(ASSETS / "car.png", name="car")
    g.op(eg.operation(version="1")(brighten_function), car, name="bright")
    g.run(provider=CountingProvider()).save(tmp_path / "out")
    manifest = tmp_path / "out" / "manifest.json"
    text = manifest.read_text().replace(f"{__name__}.brighten_function", "antigravity.fly")
    manifest.write_text(text)
    import sys

    with pytest.raises(eg.GraphError, match=r"op 'bright': operation 'antigravity.fly' is not"):
        replay(tmp_path / "out", provider=CountingProvider(), cache_dir=tmp_path / "cache")
    assert "antigravity" not in sys.modules

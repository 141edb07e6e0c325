"""Draw the pictures of docs/operations.md: each built-in of ``eg.ops`` on sample images.

Run it from anywhere: ``python examples/ops_pictures.py``. Each picture shows the
inputs, an arrow, and what the operation made of them, computed by the operation
itself (called directly, as ``eg.ops.crop([image], box=...)``). The output is
deterministic, so the files only change in version control when an operation does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

import editgraph as eg

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "assets"
IMAGES = HERE.parent / "docs" / "images"

PANEL = 200  # every input and output is shown fitted in a square of this size
INK = (34, 34, 40)
BOX = (230, 40, 60)


def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in font, laid out the same with or without libraqm."""
    default = ImageFont.load_default(size=size)
    assert isinstance(default, ImageFont.FreeTypeFont), "Pillow needs FreeType support"
    return default.font_variant(layout_engine=ImageFont.Layout.BASIC)


def load(name: str) -> Image.Image:
    """A sample image, decoded, as RGB."""
    with Image.open(ASSETS / name) as image:
        return image.convert("RGB")


def outlined(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """A copy of ``image`` with ``box`` drawn on it (to show where an operation looks)."""
    copy = image.convert("RGB")
    ImageDraw.Draw(copy).rectangle(box, outline=BOX, width=max(2, image.width // 120))
    return copy


def panel(image: Image.Image, caption: str) -> Image.Image:
    """``image`` fitted in a PANEL square on a light chequer (transparency shows), captioned."""
    shown = eg.ops.resize([image], width=PANEL, height=PANEL, fit="contain")
    tile = Image.new("RGB", (PANEL, PANEL), (236, 236, 240))
    draw = ImageDraw.Draw(tile)
    for y in range(0, PANEL, 10):
        for x in range((y // 10) % 2 * 10, PANEL, 20):
            draw.rectangle((x, y, x + 9, y + 9), fill=(250, 250, 252))
    shown_rgba = shown.convert("RGBA")
    tile.paste(shown_rgba, ((PANEL - shown.width) // 2, (PANEL - shown.height) // 2), shown_rgba)
    captioned = Image.new("RGB", (PANEL, PANEL + 28), "white")
    captioned.paste(tile, (0, 0))
    ImageDraw.Draw(captioned).text((PANEL // 2, PANEL + 14), caption, fill=INK, font=font(14),
                                   anchor="mm")
    return captioned


def arrow() -> Image.Image:
    """A right arrow, as tall as a captioned panel."""
    image = Image.new("RGB", (48, PANEL + 28), "white")
    draw = ImageDraw.Draw(image)
    middle = PANEL // 2
    draw.line((6, middle, 38, middle), fill=INK, width=4)
    draw.polygon([(42, middle), (30, middle - 10), (30, middle + 10)], fill=INK)
    return image


def picture(name: str, inputs: list[tuple[Image.Image, str]], output: Image.Image,
            caption: str) -> None:
    """Write docs/images/ops_NAME.png: the inputs, an arrow, the output."""
    tiles = [panel(image, text) for image, text in inputs] + [arrow(), panel(output, caption)]
    sheet = eg.ops.grid(tiles, gap=8, background="white")
    IMAGES.mkdir(parents=True, exist_ok=True)
    sheet.save(IMAGES / f"ops_{name}.png", optimize=True)


def region_picture() -> None:
    """docs/images/ops_region_edit.png: a region edit run offline with the Preview provider."""
    with tempfile.TemporaryDirectory() as cache:
        g = eg.Graph(output_format="png", cache_dir=cache)
        jar = g.image(ASSETS / "jar.png", name="jar")
        g.edit(f"Make the label on the jar in {jar} the colour #2E4057", name="label",
               mask=ASSETS / "jar_label_mask.png", feather=16)
        run = g.run(provider=eg.providers.Preview(), progress=False)
        with Image.open(ASSETS / "jar_label_mask.png") as mask:
            inputs = [(load("jar.png"), "image 1"), (mask.convert("RGB"), "mask"),
                      (run["label.crop"].image, "label.crop"),
                      (run["label.edit"].image, "label.edit (Preview)")]
            picture("region_edit", inputs, run["label"].image, "label (composite)")


def main() -> None:
    """Draw one picture per built-in, and one of a region edit."""
    car, bird, logo, room = load("car.png"), load("bird.png"), load("logo.png"), load("room.png")
    box = (40, 60, 300, 300)
    picture("crop", [(outlined(car, box), "car.png, box")],
            eg.ops.crop([car], box=box), "crop(box=(40, 60, 300, 300))")
    picture("resize", [(car, "car.png 512x320")],
            eg.ops.resize([car], width=320, height=320, fit="cover"),
            "resize(320, 320, fit='cover')")
    picture("resize_contain", [(car, "car.png 512x320")],
            eg.ops.pad([eg.ops.resize([car], width=320, height=320, fit="contain")],
                       width=320, height=320, colour="#2E4057"),
            "contain, then pad(colour)")
    picture("pad", [(bird, "bird.png 384x384")],
            eg.ops.pad([bird], width=512, height=384, colour="#E8AA14"),
            "pad(512, 384, '#E8AA14')")
    window = (300, 90, 440, 230)
    picture("composite", [(room, "base: room.png"), (logo, "overlay: logo.png")],
            eg.ops.composite([room, logo], box=window, feather=6),
            "composite(box, feather=6)")
    mask = eg.ops.box_mask([], width=512, height=384, box=(60, 60, 250, 330), feather=0)
    night = room.point(lambda value: value // 3)
    picture("composite_mask", [(room, "base"), (night, "overlay"), (mask, "mask")],
            eg.ops.composite([room, night, mask], feather=24), "feather=24")
    bag = load("bag.png")
    picture("grid", [(bird, "1"), (logo, "2"), (car, "3"), (bag, "4")],
            eg.ops.grid([bird, logo, car, bag], columns=2, gap=12,
                        background="black"),
            "grid(columns=2, gap=12)")
    cut_out = Image.new("RGBA", logo.size, (0, 0, 0, 0))
    circle = Image.new("L", logo.size, 0)
    ImageDraw.Draw(circle).ellipse((40, 20, 216, 196), fill=255)
    cut_out.paste(logo, (0, 0), circle)
    picture("mask_from_alpha", [(cut_out, "RGBA logo")], eg.ops.mask_from_alpha([cut_out]),
            "mask_from_alpha()")
    picture("box_mask", [], eg.ops.box_mask([], width=400, height=300, box=(100, 80, 300, 220),
                                            feather=40),
            "box_mask(feather=40)")
    region_picture()


if __name__ == "__main__":
    main()

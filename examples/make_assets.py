"""Draw the small sample images in examples/assets/ (car, swatches, garments, ...).

Run it from anywhere: ``python examples/make_assets.py``. The drawings are plain shapes
on a white background, made with Pillow alone, so they can ship with the project (they
are its own work, CC0). The output is deterministic: running it twice writes the same
bytes, so the files only change in version control when this script does.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ASSETS = Path(__file__).resolve().parent / "assets"

Colour = tuple[int, int, int]
Point = tuple[float, float]

WHITE: Colour = (255, 255, 255)
INK: Colour = (34, 34, 40)
SHADOW: Colour = (226, 226, 230)

SWATCHES: dict[str, str] = {"navy": "#2E4057", "mustard": "#E8AA14", "coral": "#FF6F61"}


def hex_colour(code: str) -> Colour:
    """``"#2E4057"`` as ``(46, 64, 87)``."""
    digits = code.lstrip("#")
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` px, laid out the same with or without libraqm."""
    default = ImageFont.load_default(size=size)
    assert isinstance(default, ImageFont.FreeTypeFont), "Pillow needs FreeType support"
    return default.font_variant(layout_engine=ImageFont.Layout.BASIC)


class Sketch:
    """A canvas drawn at 4x and scaled down, so that edges come out smooth.

    Coordinates and widths are given in final pixels.
    """

    SCALE = 4

    def __init__(self, width: int, height: int, background: Colour = WHITE) -> None:
        self.size = (width, height)
        self.image = Image.new("RGB", (width * self.SCALE, height * self.SCALE), background)
        self.draw = ImageDraw.Draw(self.image)

    def _points(self, points: Sequence[Point]) -> list[tuple[float, float]]:
        return [(x * self.SCALE, y * self.SCALE) for x, y in points]

    def _box(self, box: Sequence[float]) -> list[float]:
        return [value * self.SCALE for value in box]

    def polygon(
        self,
        points: Sequence[Point],
        fill: Colour,
        outline: Colour | None = INK,
        width: float = 2,
    ) -> None:
        """A filled polygon with an outline."""
        self.draw.polygon(
            self._points(points),
            fill=fill,
            outline=outline,
            width=round(width * self.SCALE) if outline else 0,
        )

    def rect(
        self,
        box: Sequence[float],
        fill: Colour | None,
        outline: Colour | None = INK,
        width: float = 2,
        radius: float = 0,
    ) -> None:
        """A (rounded) rectangle ``(left, top, right, bottom)``."""
        self.draw.rounded_rectangle(
            self._box(box),
            radius=radius * self.SCALE,
            fill=fill,
            outline=outline,
            width=round(width * self.SCALE),
        )

    def ellipse(
        self,
        box: Sequence[float],
        fill: Colour | None,
        outline: Colour | None = INK,
        width: float = 2,
    ) -> None:
        """An ellipse inside ``(left, top, right, bottom)``."""
        self.draw.ellipse(
            self._box(box), fill=fill, outline=outline, width=round(width * self.SCALE)
        )

    def circle(
        self,
        centre: Point,
        radius: float,
        fill: Colour | None,
        outline: Colour | None = INK,
        width: float = 2,
    ) -> None:
        """A circle around ``centre``."""
        x, y = centre
        self.ellipse((x - radius, y - radius, x + radius, y + radius), fill, outline, width)

    def line(self, points: Sequence[Point], fill: Colour = INK, width: float = 2) -> None:
        """A polyline with rounded joints."""
        self.draw.line(
            self._points(points), fill=fill, width=round(width * self.SCALE), joint="curve"
        )

    def arc(
        self,
        box: Sequence[float],
        start: float,
        end: float,
        fill: Colour = INK,
        width: float = 2,
    ) -> None:
        """Part of an ellipse's outline, angles in degrees clockwise from 3 o'clock."""
        self.draw.arc(self._box(box), start, end, fill=fill, width=round(width * self.SCALE))

    def chord(
        self,
        box: Sequence[float],
        start: float,
        end: float,
        fill: Colour,
        outline: Colour | None = INK,
        width: float = 2,
    ) -> None:
        """A filled segment of an ellipse."""
        self.draw.chord(
            self._box(box),
            start,
            end,
            fill=fill,
            outline=outline,
            width=round(width * self.SCALE),
        )

    def text(
        self, xy: Point, text: str, size: int, fill: Colour = INK, anchor: str = "la"
    ) -> None:
        """Text in the built-in font, ``size`` in final pixels."""
        self.draw.text(
            self._points([xy])[0], text, font=font(size * self.SCALE), fill=fill, anchor=anchor
        )

    def finish(self) -> Image.Image:
        """The drawing at its final size."""
        return self.image.resize(self.size, Image.Resampling.LANCZOS)


def draw_car() -> Image.Image:
    """A red four-door car seen from the side."""
    red, dark_red = hex_colour("#C8102E"), hex_colour("#8E0B20")
    glass, grey = hex_colour("#BFD9EA"), hex_colour("#9A9AA2")
    sketch = Sketch(512, 320)
    sketch.ellipse((40, 250, 472, 284), SHADOW, outline=None)
    body = [
        (36, 228),
        (38, 186),
        (58, 168),
        (128, 156),
        (178, 104),
        (206, 94),
        (330, 94),
        (360, 104),
        (412, 152),
        (462, 166),
        (478, 188),
        (478, 228),
        (470, 240),
        (42, 240),
    ]
    sketch.polygon(body, red, width=2.5)
    sketch.polygon([(190, 110), (206, 102), (262, 102), (262, 152), (148, 156)], glass)
    sketch.polygon([(274, 102), (328, 102), (352, 110), (392, 152), (274, 152)], glass)
    sketch.line([(268, 98), (268, 236)], dark_red, 2)
    sketch.line([(150, 160), (150, 236)], dark_red, 2)
    sketch.line([(398, 158), (398, 232)], dark_red, 2)
    sketch.line([(40, 196), (476, 196)], dark_red, 1.5)
    sketch.rect((220, 168, 244, 174), grey, width=1, radius=3)
    sketch.rect((340, 168, 364, 174), grey, width=1, radius=3)
    sketch.polygon(
        [(448, 168), (474, 174), (476, 186), (452, 184)], hex_colour("#FFF3B0"), width=1.5
    )
    sketch.polygon(
        [(40, 176), (56, 172), (56, 190), (38, 190)], hex_colour("#FF4A3D"), width=1.5
    )
    sketch.polygon([(352, 116), (366, 122), (364, 134), (348, 130)], dark_red, width=1.5)
    for centre_x in (124, 390):
        sketch.chord(
            (centre_x - 50, 184, centre_x + 50, 288), 180, 360, hex_colour("#3A3A40"), width=2
        )
        sketch.circle((centre_x, 236), 40, hex_colour("#26262B"), width=2)
        sketch.circle((centre_x, 236), 24, hex_colour("#C9CBD1"), width=2)
        sketch.circle((centre_x, 236), 7, grey, width=1.5)
        for dx, dy in ((0, -15), (14, -5), (9, 12), (-9, 12), (-14, -5)):
            sketch.circle((centre_x + dx, 236 + dy), 2.5, grey, width=1)
    return sketch.finish()


def draw_swatch(code: str) -> Image.Image:
    """A 256x256 square of one colour with its hex code written small in a corner."""
    colour = hex_colour(code)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    image = Image.new("RGB", (256, 256), colour)
    ImageDraw.Draw(image).text(
        (244, 244), code, font=font(14), fill=INK if luminance > 140 else WHITE, anchor="rd"
    )
    return image


def draw_bird() -> Image.Image:
    """A small blue songbird perched on a branch."""
    blue, dark_blue = hex_colour("#3A7BD5"), hex_colour("#24518F")
    belly, beak = hex_colour("#F4E3C1"), hex_colour("#F29E1F")
    brown, leaf = hex_colour("#7A5230"), hex_colour("#6BAA4A")
    sketch = Sketch(384, 384)
    sketch.line([(20, 300), (200, 286), (364, 300)], brown, 10)
    sketch.line([(250, 291), (300, 262)], brown, 5)
    sketch.polygon([(300, 262), (332, 244), (318, 270)], leaf, width=1.5)
    sketch.polygon([(70, 296), (40, 270), (76, 276)], leaf, width=1.5)
    sketch.polygon([(96, 212), (40, 262), (60, 270), (124, 236)], dark_blue)
    sketch.ellipse((90, 150, 270, 280), blue)
    sketch.chord((110, 196, 262, 282), 0, 180, belly)
    sketch.circle((250, 150), 50, blue)
    sketch.polygon([(292, 138), (338, 156), (292, 168)], beak)
    sketch.circle((262, 140), 9, WHITE, width=1.5)
    sketch.circle((264, 141), 5, INK, outline=None)
    sketch.polygon([(120, 190), (210, 176), (236, 208), (186, 244), (110, 226)], dark_blue)
    sketch.line([(164, 190), (206, 196)], blue, 2)
    sketch.line([(154, 206), (206, 212)], blue, 2)
    for x in (176, 206):
        sketch.line([(x, 276), (x - 4, 292)], beak, 3)
        sketch.line([(x - 12, 294), (x - 4, 292), (x + 6, 294)], beak, 3)
    return sketch.finish()


def draw_top() -> Image.Image:
    """A plain short-sleeved T-shirt, laid flat."""
    shirt, rib = hex_colour("#4A90C2"), hex_colour("#2F6E9E")
    sketch = Sketch(384, 384)
    outline = [
        (132, 52),
        (160, 46),
        (224, 46),
        (252, 52),
        (340, 96),
        (316, 166),
        (282, 150),
        (284, 340),
        (100, 340),
        (102, 150),
        (68, 166),
        (44, 96),
    ]
    sketch.polygon(outline, shirt, width=2.5)
    sketch.chord((154, 18, 230, 84), 0, 180, WHITE, outline=None)
    sketch.arc((154, 18, 230, 84), 0, 180, rib, 7)
    sketch.arc((154, 18, 230, 84), 0, 180, INK, 2)
    sketch.line([(86, 110), (102, 150)], rib, 2)
    sketch.line([(298, 110), (282, 150)], rib, 2)
    sketch.line([(66, 156), (48, 104)], rib, 1.5)
    sketch.line([(318, 156), (336, 104)], rib, 1.5)
    sketch.line([(100, 326), (284, 326)], rib, 1.5)
    return sketch.finish()


def draw_jacket() -> Image.Image:
    """A zipped jacket with a collar, long sleeves and two pockets, laid flat."""
    cloth, seam = hex_colour("#6B7B3A"), hex_colour("#4C5829")
    zipper, lining = hex_colour("#B8B8C0"), hex_colour("#3A4220")
    sketch = Sketch(384, 416)
    sleeve_left = [(112, 60), (58, 110), (26, 330), (66, 340), (104, 190)]
    sleeve_right = [(272, 60), (326, 110), (358, 330), (318, 340), (280, 190)]
    sketch.polygon(sleeve_left, cloth, width=2.5)
    sketch.polygon(sleeve_right, cloth, width=2.5)
    sketch.rect((22, 324, 70, 352), seam, width=2, radius=4)
    sketch.rect((314, 324, 362, 352), seam, width=2, radius=4)
    body = [(112, 60), (160, 40), (224, 40), (272, 60), (284, 372), (100, 372)]
    sketch.polygon(body, cloth, width=2.5)
    sketch.polygon([(160, 40), (192, 88), (224, 40), (214, 30), (170, 30)], lining, width=2)
    sketch.polygon([(160, 40), (150, 20), (184, 34), (192, 88)], cloth, width=2)
    sketch.polygon([(224, 40), (234, 20), (200, 34), (192, 88)], cloth, width=2)
    sketch.rect((98, 352, 286, 380), seam, width=2, radius=3)
    sketch.line([(192, 88), (192, 380)], zipper, 4)
    sketch.line([(192, 88), (192, 380)], INK, 1)
    sketch.rect((186, 96, 198, 116), zipper, width=1.5, radius=2)
    sketch.line([(124, 250), (166, 250), (160, 320), (120, 320)], seam, 2)
    sketch.line([(260, 250), (218, 250), (224, 320), (264, 320)], seam, 2)
    return sketch.finish()


def draw_bag() -> Image.Image:
    """A leather handbag with a top handle, a flap and a clasp."""
    leather, dark = hex_colour("#A0522D"), hex_colour("#6E3519")
    gold = hex_colour("#D9A520")
    sketch = Sketch(384, 384)
    sketch.ellipse((64, 330, 320, 352), SHADOW, outline=None)
    sketch.arc((112, 40, 272, 200), 180, 360, dark, 14)
    sketch.arc((112, 40, 272, 200), 180, 360, INK, 1.5)
    sketch.polygon([(92, 130), (292, 130), (330, 336), (54, 336)], leather, width=2.5)
    sketch.polygon([(92, 130), (292, 130), (304, 206), (80, 206)], dark, width=2)
    sketch.rect((172, 192, 212, 224), gold, width=2, radius=6)
    sketch.rect((184, 202, 200, 214), dark, width=1, radius=3)
    sketch.line([(72, 318), (312, 318)], dark, 1.5)
    for x in (104, 280):
        sketch.rect((x - 8, 120, x + 8, 140), gold, width=1.5, radius=3)
    return sketch.finish()


def draw_shoes() -> Image.Image:
    """A pair of low sneakers seen from the side, one behind the other."""
    upper, trim = hex_colour("#E94F37"), hex_colour("#F7F7F7")
    sole, collar = hex_colour("#F2F2F2"), hex_colour("#3A3A40")
    sketch = Sketch(512, 320)
    sketch.ellipse((40, 262, 480, 296), SHADOW, outline=None)
    for dx, dy in ((100, -48), (0, 0)):

        def at(points: Sequence[Point], dx: float = dx, dy: float = dy) -> list[Point]:
            return [(x + dx, y + dy) for x, y in points]

        sketch.rect((40 + dx, 230 + dy, 376 + dx, 262 + dy), sole, width=2.5, radius=12)
        for x in range(60, 370, 22):
            sketch.line(at([(x, 256), (x + 10, 256)]), hex_colour("#B9B9C0"), 2)
        body = [
            (46, 232),
            (48, 160),
            (70, 144),
            (104, 150),
            (132, 138),
            (160, 150),
            (290, 190),
            (350, 204),
            (372, 222),
            (374, 232),
        ]
        sketch.polygon(at(body), upper, width=2.5)
        sketch.polygon(
            at([(62, 152), (86, 142), (112, 154), (106, 164), (74, 162)]), collar, width=1.5
        )
        sketch.polygon(
            at([(300, 232), (306, 210), (336, 202), (362, 210), (374, 232)]), trim, width=1.5
        )
        sketch.polygon(at([(120, 222), (236, 186), (250, 196), (140, 230)]), trim, width=1.5)
        for step in range(5):
            x, y = 140 + step * 30, 150 + step * 9
            sketch.line(at([(x, y), (x + 22, y + 2)]), WHITE, 4.5)
            sketch.line(at([(x, y), (x + 22, y + 2)]), INK, 1)
    return sketch.finish()


def draw_character() -> Image.Image:
    """A cartoon character standing front-on: the same one across comic panels."""
    skin, hair = hex_colour("#F2C29B"), hex_colour("#5A3A22")
    shirt, trousers = hex_colour("#2A9D8F"), hex_colour("#264653")
    shoe, scarf = hex_colour("#3B2F2F"), hex_colour("#E9C46A")
    sketch = Sketch(384, 512)
    sketch.ellipse((104, 478, 280, 498), SHADOW, outline=None)
    sketch.rect((146, 330, 188, 470), trousers, radius=8)
    sketch.rect((196, 330, 238, 470), trousers, radius=8)
    sketch.ellipse((132, 456, 192, 486), shoe)
    sketch.ellipse((192, 456, 252, 486), shoe)
    sketch.polygon([(130, 200), (100, 318), (120, 326), (150, 232)], shirt)
    sketch.polygon([(254, 200), (284, 318), (264, 326), (234, 232)], shirt)
    sketch.circle((108, 328), 16, skin)
    sketch.circle((276, 328), 16, skin)
    sketch.rect((132, 186, 252, 346), shirt, radius=26)
    sketch.line([(150, 210), (150, 330)], hex_colour("#21867A"), 2)
    sketch.line([(234, 210), (234, 330)], hex_colour("#21867A"), 2)
    sketch.rect((176, 160, 208, 192), skin, radius=6)
    sketch.rect((150, 180, 234, 204), scarf, radius=10)
    sketch.polygon([(210, 196), (228, 250), (208, 254), (196, 200)], scarf, width=2)
    sketch.circle((192, 110), 66, skin)
    sketch.chord((122, 36, 262, 150), 170, 370, hair)
    sketch.polygon([(130, 100), (150, 60), (170, 88)], hair, outline=None)
    sketch.ellipse((120, 100, 134, 128), skin, width=2)
    sketch.ellipse((250, 100, 264, 128), skin, width=2)
    for x in (168, 216):
        sketch.ellipse((x - 9, 100, x + 9, 122), WHITE, width=1.5)
        sketch.circle((x + 1, 112), 5, INK, outline=None)
        sketch.line([(x - 10, 90), (x + 10, 88)], hair, 3)
    sketch.circle((150, 134), 8, hex_colour("#F0A08A"), outline=None)
    sketch.circle((234, 134), 8, hex_colour("#F0A08A"), outline=None)
    sketch.arc((172, 118, 212, 150), 20, 160, INK, 2.5)
    sketch.text((192, 20), "ROBIN", 14, hex_colour("#6A6A72"), anchor="ma")
    return sketch.finish()


def draw_room() -> Image.Image:
    """An empty room in one-point perspective: window, door and a wooden floor."""
    back, side = hex_colour("#EDE6DA"), hex_colour("#DCD2C2")
    ceiling, floor = hex_colour("#F7F4EE"), hex_colour("#C8A27A")
    board, sky = hex_colour("#A9835C"), hex_colour("#BFE0F5")
    sketch = Sketch(512, 384)
    sketch.polygon([(0, 0), (512, 0), (392, 80), (120, 80)], ceiling, outline=None)
    sketch.polygon([(0, 0), (120, 80), (120, 264), (0, 384)], side, outline=None)
    sketch.polygon([(512, 0), (392, 80), (392, 264), (512, 384)], side, outline=None)
    sketch.polygon([(120, 264), (392, 264), (512, 384), (0, 384)], floor, outline=None)
    sketch.rect((120, 80, 392, 264), back, outline=None)
    for step in range(1, 10):
        top_x = 120 + step * 272 / 10
        bottom_x = step * 512 / 10
        sketch.line([(top_x, 264), (bottom_x, 384)], board, 1.5)
    sketch.line([(120, 80), (392, 80), (392, 264), (120, 264), (120, 80)], INK, 2)
    sketch.line([(0, 0), (120, 80)], INK, 2)
    sketch.line([(512, 0), (392, 80)], INK, 2)
    sketch.line([(0, 384), (120, 264)], INK, 2)
    sketch.line([(512, 384), (392, 264)], INK, 2)
    sketch.rect((120, 256, 392, 264), WHITE, width=1)
    sketch.rect((196, 114, 316, 206), sky, width=3)
    sketch.line([(256, 114), (256, 206)], INK, 3)
    sketch.line([(196, 160), (316, 160)], INK, 3)
    sketch.rect((188, 206, 324, 214), WHITE, width=1.5)
    sketch.polygon([(420, 100), (470, 66), (470, 340), (420, 290)], hex_colour("#B98A5E"))
    sketch.circle((430, 200), 3.5, hex_colour("#D9A520"), width=1)
    return sketch.finish()


def draw_logo() -> Image.Image:
    """A made-up brand mark: a mountain in a circle over the word PEAK."""
    navy, mustard = hex_colour("#2E4057"), hex_colour("#E8AA14")
    sketch = Sketch(256, 256)
    sketch.circle((128, 104), 74, navy, outline=None)
    sketch.polygon(
        [(70, 150), (116, 76), (138, 110), (156, 88), (192, 150)], WHITE, outline=None
    )
    sketch.polygon(
        [(116, 76), (104, 96), (114, 92), (122, 100), (128, 90)], mustard, outline=None
    )
    sketch.circle((166, 66), 12, mustard, outline=None)
    sketch.text((128, 196), "PEAK", 34, navy, anchor="ma")
    return sketch.finish()


#: Where the jar's label sits in jar.png (left, top, right, bottom): the region edit
#: recipe's mask covers exactly this.
JAR_LABEL = (104, 236, 280, 380)


def draw_jar() -> Image.Image:
    """A honey jar with a cream paper label reading "PEAK / WILDFLOWER HONEY"."""
    honey, glass = hex_colour("#E0A526"), hex_colour("#F3E2B8")
    lid, lid_dark = hex_colour("#3C3C44"), hex_colour("#26262C")
    cream, navy = hex_colour("#F6EEDC"), hex_colour("#2E4057")
    sketch = Sketch(384, 512)
    sketch.ellipse((60, 452, 324, 484), SHADOW, outline=None)
    sketch.rect((72, 128, 312, 468), glass, radius=36, width=2.5)
    sketch.rect((80, 176, 304, 460), honey, outline=None, radius=30)
    sketch.line([(96, 150), (96, 440)], WHITE, 6)
    sketch.rect((108, 60, 276, 132), lid, radius=10, width=2.5)
    for x in range(124, 270, 16):
        sketch.line([(x, 68), (x, 124)], lid_dark, 3)
    left, top, right, bottom = JAR_LABEL
    sketch.rect((left, top, right, bottom), cream, radius=8, width=2)
    sketch.rect((left + 10, top + 10, right - 10, bottom - 10), None, outline=navy,
                width=1.5, radius=4)
    sketch.text(((left + right) / 2, top + 30), "PEAK", 40, navy, anchor="ma")
    sketch.text(((left + right) / 2, top + 84), "WILDFLOWER", 17, navy, anchor="ma")
    sketch.text(((left + right) / 2, top + 106), "HONEY", 17, navy, anchor="ma")
    return sketch.finish()


def draw_jar_label_mask() -> Image.Image:
    """The mask of jar.png's label: white on the label, black elsewhere (greyscale)."""
    mask = Image.new("L", (384, 512), 0)
    ImageDraw.Draw(mask).rounded_rectangle(JAR_LABEL, radius=8, fill=255)
    return mask


def drawings() -> dict[str, Callable[[], Image.Image]]:
    """Every asset this script makes, by file name."""
    made: dict[str, Callable[[], Image.Image]] = {
        "car.png": draw_car,
        "bird.png": draw_bird,
        "top.png": draw_top,
        "jacket.png": draw_jacket,
        "bag.png": draw_bag,
        "shoes.png": draw_shoes,
        "character.png": draw_character,
        "room.png": draw_room,
        "logo.png": draw_logo,
        "jar.png": draw_jar,
        "jar_label_mask.png": draw_jar_label_mask,
    }
    for name, code in SWATCHES.items():
        made[f"swatch_{name}.png"] = functools.partial(draw_swatch, code)
    return made


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as a small PNG (no metadata, so the bytes depend only on the pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main() -> None:
    """Write every drawing into examples/assets/, printing each file's size."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    for name, draw in drawings().items():
        data = png_bytes(draw())
        (ASSETS / name).write_bytes(data)
        print(f"{name:18} {len(data) / 1024:6.1f} KB")


if __name__ == "__main__":
    main()

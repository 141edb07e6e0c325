"""A four-panel comic strip keeping one character consistent, assembled without a model.

Makes six images: ``panel1`` to ``panel4`` (each panel takes the character sheet as
image 1 and the previous panel as image 2, so the character's face, hair, teal shirt
and yellow scarf carry over), ``panels`` (the four laid out in one row by
``eg.ops.grid``, black gutters) and ``strip`` (the title lettered above them by a small
operation of this recipe). Layout and lettering are local operations: four model calls
per strip, where asking the model to assemble the strip took five.
"""

from PIL import Image, ImageDraw, ImageFont

import editgraph as eg

BEATS = (
    "stands on a windy hill holding a red kite, looking up hopefully",
    "runs downhill as the kite lifts off, scarf flying behind",
    "is pulled off balance when a gust tugs the kite string",
    "sits in the grass laughing, the kite caught in a tree above",
)


@eg.operation(version="1", inputs=1)
def title_banner(images: list[Image.Image], text: str, height: int = 96,
                 background: str = "black", ink: str = "white") -> Image.Image:
    """The strip with ``text`` lettered, centred, in a band of ``height`` px above it."""
    (strip,) = images
    banner = Image.new("RGB", (strip.width, strip.height + height), background)
    banner.paste(strip.convert("RGB"), (0, height))
    # The basic layout engine draws the same pixels with or without libraqm installed.
    font = ImageFont.load_default(size=height // 2).font_variant(
        layout_engine=ImageFont.Layout.BASIC)
    ImageDraw.Draw(banner).text((strip.width // 2, height // 2), text, fill=ink, font=font,
                                anchor="mm")
    return banner


def recipe(
    title: str = "Robin and the Kite",
    style: str = "clean line art, flat colours, bold outlines",
    seed: int = 5,
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=768, height=768)
    sheet = g.image("../examples/assets/character.png", name="sheet")
    panels: list[eg.Handle] = []
    for number, beat in enumerate(BEATS, 1):
        if not panels:
            prompt = (
                f"Comic panel, {style}: the character from image 1 {beat}. Keep the "
                "character's face, hair, teal shirt and yellow scarf exactly as on the "
                "character sheet"
            )
            refs = [sheet]
        else:
            prompt = (
                f"Next comic panel, {style}, same place and palette as image 2: the "
                f"character from image 1 {beat}. Keep the character exactly as on the "
                "character sheet in image 1"
            )
            refs = [sheet, panels[-1]]
        panels.append(g.edit(prompt, refs=refs, name=f"panel{number}", seed=seed))
    row = g.op(eg.ops.grid, *panels, gap=12, background="black", name="panels")
    g.op(title_banner, row, text=title, name="strip")
    return g

"""A die-cut sticker sheet from a seed sweep: pick one variant, refine it, mock it up.

Makes ``variants`` + 3 images: ``sheet[0]`` … (the same sticker-sheet prompt with one
seed each, an eg.Sweep), ``contact_sheet`` (every variant side by side, laid out by
``eg.ops.grid`` without a model call, to choose from), ``refined`` (the variant chosen
with ``pick``, cleaned up with white die-cut borders and a soft shadow) and ``laptop``
(the refined stickers stuck on a laptop lid).
"""

import editgraph as eg


def recipe(
    variants: int = 4,
    pick: int = 2,
    first_seed: int = 100,
    mood: str = "cheerful",
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=1024, height=1024)
    bird = g.image("../examples/assets/bird.png")
    character = g.image("../examples/assets/character.png")
    sheet = g.edit(
        f"A sheet of six {mood} vinyl stickers in a flat cartoon style on a light grey "
        f"background: the bird from {bird} singing, flying and sleeping, and the "
        f"character from {character} waving, jumping and reading",
        name="sheet",
        seed=[first_seed + index for index in range(variants)],
    )
    g.op(eg.ops.grid, *sheet, columns=2, gap=16, name="contact_sheet")
    refined = g.edit(
        f"Refine the stickers in {sheet.pick(pick)}: a thick white die-cut border around "
        "each one, a soft drop shadow, crisp outlines, even spacing on a 3 by 2 grid",
        name="refined",
        output_format="png",
    )
    g.edit(
        f"Photo of a silver laptop lid on a wooden desk covered with the stickers from "
        f"{refined}, a few slightly tilted, daylight from a window",
        name="laptop",
        width=1024,
        height=768,
    )
    return g

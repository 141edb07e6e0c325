"""A four-panel comic strip keeping one character consistent, assembled into a strip.

Makes five images: ``panel1`` to ``panel4`` (each panel takes the character sheet as
image 1 and the previous panel as image 2, so the character's face, hair, teal shirt
and yellow scarf carry over) and ``strip`` (the four panels laid out in one row, with
the sheet as a fifth reference).
"""

import editgraph as eg

BEATS = (
    "stands on a windy hill holding a red kite, looking up hopefully",
    "runs downhill as the kite lifts off, scarf flying behind",
    "is pulled off balance when a gust tugs the kite string",
    "sits in the grass laughing, the kite caught in a tree above",
)


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
    g.edit(
        "A comic strip of four panels in one row, left to right in this order: images "
        f'1, 2, 3 and 4, thin black gutters, the title "{title}" lettered above the '
        "panels; the character matches the sheet in image 5",
        refs=[*panels, sheet],
        name="strip",
        width=1536,
        height=512,
    )
    return g

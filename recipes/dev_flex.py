"""One chain across three FLUX.2 models: flex for typography, dev for drafts, pro to finish.

Makes four images: ``draft`` (a quick launch-poster draft on flux.2-dev with few
steps), ``lettering`` (the title set on flux.2-flex, whose steps and guidance are
tuned for text), ``colour`` (a colour grade on dev) and ``final`` (a clean finish on
flux.2-pro, which takes neither steps nor guidance). Each edit picks its own model.
"""

import editgraph as eg


def recipe(
    title: str = "DSCOVR",
    flex_steps: int = 40,
    flex_guidance: float = 7.5,
    dev_steps: int = 20,
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=768, height=1024)
    rocket = g.image("../examples/assets/rocket.jpg")
    draft = g.edit(
        f"A vintage space-agency poster of the launch in {rocket}, bold shapes, "
        "limited palette, space at the top for a title",
        name="draft",
        model="flux.2-dev",
        steps=dev_steps,
        guidance=3.0,
    )
    lettering = g.edit(
        f'Add the title "{title}" in tall condensed capitals across the top of {draft}, '
        'and "LAUNCH 2015" in small type at the bottom; keep the illustration',
        name="lettering",
        model="flux.2-flex",
        steps=flex_steps,
        guidance=flex_guidance,
    )
    colour = g.edit(
        f"Grade {lettering} in three colours: navy #2E4057, coral #FF6F61 and cream "
        "#F5F0E6; same text and layout",
        name="colour",
        model="flux.2-dev",
        steps=dev_steps,
        guidance=3.0,
    )
    g.edit(
        f"Clean up {colour} as a print-ready poster: crisp edges, subtle paper texture, "
        "same text, layout and colours",
        name="final",
        output_format="png",
    )
    return g

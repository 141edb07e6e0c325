"""A JSON-structured product shot of a coffee cup, then lighting and angle edits.

Makes four images: ``hero`` (a studio shot from a structured prompt, eg.StructuredPrompt
with subjects, a hex colour palette, lighting, camera f-number and ISO, the cup taken
from the coffee photo), ``moody`` (the hero relit with a single hard side light),
``overhead`` (the moody shot seen from directly above) and ``banner`` (a wide banner
built from the hero and the overhead shot side by side).
"""

import editgraph as eg


def recipe(
    surface: str = "polished concrete",
    accent: str = "#E8AA14",
    f_number: float = 2.8,
    iso: int = 100,
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=1024, height=1024)
    coffee = g.image("../examples/assets/coffee.jpg")
    hero = g.edit(
        eg.StructuredPrompt(
            scene=f"Professional studio product photography on a {surface} surface",
            subjects=[
                {
                    "type": "product",
                    "description": f"The cup of coffee on its saucer from {coffee}, "
                    "fresh crema, a thin wisp of steam",
                    "pose": "stationary on the surface",
                    "position": "centre foreground",
                    "color_palette": ["white porcelain", "espresso brown"],
                }
            ],
            style="Ultra-realistic commercial product photography",
            color_palette=["#2B1B12", "#F5F0E6", accent],
            lighting="Three-point softbox setup, soft diffused highlights",
            mood="Calm, premium, inviting",
            background=f"A seamless backdrop fading to color {accent} at the top",
            composition="Rule of thirds, the cup slightly left of centre",
            camera={
                "angle": "45 degrees above the table",
                "distance": "close-up",
                "focus": "the rim of the cup",
                "lens": "100mm macro",
                "depth_of_field": "shallow, background softly blurred",
                "f-number": f_number,
                "ISO": iso,
            },
            effects=["subtle reflection on the surface"],
        ),
        name="hero",
    )
    moody = g.edit(
        f"Relight {hero} with a single hard light from the right and deep shadows on the "
        "left, a warm rim light on the steam; keep the cup, the saucer and the framing",
        name="moody",
    )
    overhead = g.edit(
        f"Show the scene of {moody} from directly above (a flat lay): the cup and saucer "
        "seen as circles, the same light direction and surface",
        name="overhead",
    )
    g.edit(
        f"A wide web banner: on the left the cup from {hero}, on the right the flat lay "
        f"from {overhead}, separated by a thin vertical line in color {accent}",
        name="banner",
        width=1536,
        height=640,
    )
    return g

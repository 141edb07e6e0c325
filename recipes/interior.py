"""Furnish an empty room with hex-coded colours and a gradient wall, then a variant.

Makes four images: ``furnished`` (a sofa, rug and lamp in exact hex colours, each code
tied to an object), ``gradient`` (the back wall painted as a gradient between two hex
colours), ``evening`` (the same room at night with warm lamps) and ``swatch`` (a
colourway variant: the sofa recoloured to match a paint-swatch image).
"""

import editgraph as eg


def recipe(
    sofa: str = "#2E4057",
    rug: str = "#E8AA14",
    gradient_start: str = "#02eb3c",
    gradient_end: str = "#edfa3c",
    style: str = "Scandinavian",
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=1024, height=768)
    room = g.image("../examples/assets/room.png")
    coral = g.image("../examples/assets/swatch_coral.png", name="coral")
    furnished = g.edit(
        f"Furnish the empty room in {room} in a {style} style: a three-seat sofa in color "
        f"{sofa} (deep navy) against the back wall, a round rug in color {rug} (mustard) "
        "on the wooden floor, a white floor lamp beside the sofa; keep the window, the "
        "door and the perspective",
        name="furnished",
    )
    gradient = g.edit(
        f"Paint the back wall of {furnished} as a smooth vertical gradient starting with "
        f"{gradient_start} at the floor and finishing with {gradient_end} at the ceiling; "
        "everything else stays the same",
        name="gradient",
    )
    g.edit(
        f"Make {gradient} an evening scene: dark blue sky in the window, the floor lamp "
        "on with a warm glow, soft shadows; same furniture and colours",
        name="evening",
    )
    g.edit(
        f"Change the colour of the sofa in {gradient} to the colour of the swatch in "
        f"{coral}; keep the wall gradient, the rug and the light",
        name="swatch",
    )
    return g

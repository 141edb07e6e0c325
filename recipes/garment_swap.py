"""Swap a garment onto a person by image index, then change the background.

Makes three images: ``swap`` (the top of the person from image 2 replaced with the
one from image 1), ``backdrop`` (the dressed person in front of a brick wall taken
from a texture photo) and ``catalogue`` (a clean catalogue shot of the result on a
plain background in a hex colour).
"""

import editgraph as eg


def recipe(
    backdrop_colour: str = "#F4F1EA",
    keep: str = "the face, the hair and the pose",
    seed: int = 3,
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=768, height=1024)
    top = g.image("../examples/assets/top.png")
    person = g.image("../examples/assets/person.jpg")
    brick = g.image("../examples/assets/brick.jpg")
    swap = g.edit(
        "Replace the top of the person from image 2 with the one from image 1; keep "
        f"{keep} of the person from image 2 unchanged, the fabric drapes naturally",
        refs=[top, person],
        name="swap",
        seed=seed,
    )
    backdrop = g.edit(
        "Replace the background of image 1 with the brick wall from image 2, soft "
        "daylight from the right; keep the person and the top from image 1 unchanged",
        refs=[swap, brick],
        name="backdrop",
    )
    g.edit(
        f"Catalogue photo of the person from {backdrop} standing on a seamless studio "
        f"background in color {backdrop_colour}, full even light, same top and pose",
        name="catalogue",
        output_format="png",
    )
    return g

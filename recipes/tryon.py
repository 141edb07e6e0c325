"""Dress a person in a jacket, a bag and shoes from four references, then restage them.

Makes three images: ``outfit`` (the person wearing the jacket, holding the bag and
wearing the shoes, written in natural language: the handles become "image 1" to
"image 4" by themselves), ``street`` (the same outfit walking down a city street in a
new pose) and ``detail`` (a close-up of the bag and jacket from the street shot, with
the original bag as a second reference so its clasp stays right).
"""

import editgraph as eg


def recipe(
    setting: str = "a rainy city street at dusk, shop windows glowing",
    pose: str = "walking towards the camera, mid-stride",
    seed: int = 11,
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=768, height=1024)
    person = g.image("../examples/assets/person.jpg")
    jacket = g.image("../examples/assets/jacket.png")
    bag = g.image("../examples/assets/bag.png")
    shoes = g.image("../examples/assets/shoes.png")
    outfit = g.edit(
        f"Full-body photo of the person in {person} wearing the olive jacket from "
        f"{jacket}, carrying the leather handbag from {bag} over one arm and wearing the "
        f"red sneakers from {shoes}; keep the person's face and hair, studio light, "
        "plain grey background",
        name="outfit",
        seed=seed,
    )
    street = g.edit(
        f"The person from {outfit}, {pose}, on {setting}; the jacket, the bag and the "
        "sneakers stay exactly as they are",
        name="street",
    )
    g.edit(
        f"Close-up of the handbag and the jacket from {street}; the bag's gold clasp "
        f"and flap match the bag in {bag}, shallow depth of field",
        name="detail",
        width=1024,
        height=1024,
    )
    return g

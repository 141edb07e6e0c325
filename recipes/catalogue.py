"""One product photo per batch item: a clean cut-out on a hex backdrop, then a lifestyle shot.

Written for ``editgraph batch``: ``photo`` is the only parameter annotated
``pathlib.Path``, so each input image of ``--over`` becomes one item. Makes two images
per item: ``cutout`` (the product alone, centred on a seamless backdrop of colour
``backdrop``) and ``lifestyle`` (the same product in use in ``setting``, lit to match).

    editgraph batch recipes/catalogue.py --over examples/catalogue/
    editgraph batch recipes/catalogue.py --over 'photos/*.jpg' --set backdrop=#E8E2D6
"""

from pathlib import Path

import editgraph as eg


def recipe(
    photo: Path = Path("../examples/assets/bag.png"),
    backdrop: str = "#F2EFEA",
    setting: str = "a sunlit café table by a window",
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=1024, height=1024)
    product = g.image(photo, name="product")
    cutout = g.edit(
        f"Cut out the product from {product} and place it centred on a seamless studio "
        f"backdrop in color {backdrop}, soft contact shadow, nothing else in the frame; "
        "keep the product's shape, colours and details exactly",
        name="cutout",
    )
    g.edit(
        f"A lifestyle photograph of the product from {cutout} in use in {setting}, natural "
        "light, shallow depth of field; the product keeps its shape, colours and details",
        name="lifestyle",
        width=1024,
        height=768,
    )
    return g

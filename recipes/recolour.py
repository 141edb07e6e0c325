"""Recolour a car with a hex colour, match a paint swatch, then set it in a night scene.

Makes four images: ``hex`` (the car in the hex colour), ``swatch`` (the car in the
colour of a paint swatch, two references), ``night`` (that car on a wet street at
night) and ``poster`` (a poster of the night shot with a quoted title).
"""

import editgraph as eg


def recipe(colour: str = "#2E4057", title: str = "Midnight Edition") -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=1024, height=768)
    car = g.image("../examples/assets/car.png")
    swatch = g.image("../examples/assets/swatch_mustard.png", name="paint")
    hex_car = g.edit(
        f"Repaint the body of the car in {car} in color {colour}; keep the wheels, "
        "windows and background unchanged",
        name="hex",
    )
    matched = g.edit(
        f"Change the colour of the car in {hex_car} to the colour of the swatch in {swatch}",
        name="swatch",
    )
    night = g.edit(
        f"Place the car from {matched} on a wet city street at night, neon reflections "
        "on the asphalt, the car keeps its colour",
        name="night",
        seed=7,
    )
    g.edit(
        f"A movie-style poster of {night} with the title \"{title}\" in bold letters at "
        "the top",
        name="poster",
        output_format="png",
    )
    return g

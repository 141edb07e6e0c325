"""Recolour a product's label and nothing else: a region edit through a mask.

Makes three images from one model call: ``label.crop`` (the label and a margin around
it, cut from the photo and scaled to about one megapixel for the model), ``label.edit``
(the model's edit of that crop) and ``label`` (the edit scaled back and composited onto
the photo through the label's mask, feathered by ``feather`` px: every pixel farther
than that from the label is the photo's own, exactly). ``side_by_side`` then puts the
photo and the result next to each other (a local operation: free).
"""

import editgraph as eg


def recipe(colour: str = "#2E4057", ink: str = "cream", feather: int = 16) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", output_format="png")
    jar = g.image("../examples/assets/jar.png")
    label = g.edit(
        f"Make the paper label on the jar in {jar} the colour {colour} with {ink} lettering; "
        "keep the words, the font, the border and the jar exactly as they are",
        mask="../examples/assets/jar_label_mask.png",
        feather=feather,
        name="label",
    )
    g.op(eg.ops.grid, jar, label, gap=16, name="side_by_side")
    return g

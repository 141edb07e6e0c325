"""Region edits: which part of image 1 to crop, at what size to edit it, and where it goes.

A region edit crops the region (plus a margin) out of image 1, edits that crop at a
model-valid size close to one megapixel, scales the result back and composites it onto
image 1 through the feathered mask (``eg.ops.crop`` and ``eg.ops.composite`` do the
pixel work). These pure functions decide the geometry; the graph wires the nodes.
"""

from __future__ import annotations

import math

from PIL import Image

__all__ = ["MODEL_PIXELS", "Box", "crop_box", "mask_area", "model_size"]

#: The pixel count a crop is scaled to (about): FLUX.2's native 1024 x 1024.
MODEL_PIXELS = 1024 * 1024

Box = tuple[int, int, int, int]


def mask_area(mask: Image.Image) -> Box | None:
    """The bounding box of the mask's pixels (those at least half white); None if empty."""
    inside = mask.convert("L").point(lambda value: 255 if value >= 128 else 0)
    return inside.getbbox()


def crop_box(image_size: tuple[int, int], area: Box, *, margin: float = 0.25,
             feather: int = 0) -> Box:
    """The part of the image to crop for editing ``area``.

    ``area`` grows on every side by ``margin`` times its longer side (context for the
    model), and at least by ``feather`` px (the feathered edge must lie inside the
    edited crop); the result is clamped to the image.
    """
    width, height = image_size
    x0, y0, x1, y1 = area
    grow = max(math.ceil(margin * max(x1 - x0, y1 - y0)), feather)
    return (max(0, x0 - grow), max(0, y0 - grow), min(width, x1 + grow), min(height, y1 + grow))


def model_size(width: int, height: int, *, min_size: int = 256, max_size: int = 1920,
               multiple: int = 16, pixels: int = MODEL_PIXELS) -> tuple[int, int]:
    """A model-valid size for a ``width`` x ``height`` crop: close to ``pixels``, never over.

    Sides are multiples of ``multiple`` from ``min_size`` to ``max_size``; among those,
    the size whose aspect ratio is nearest the crop's and whose area is nearest
    ``pixels`` wins (never above it, so a megapixel-priced model bills one megapixel).
    """
    aspect = width / height
    best: tuple[float, int, int] | None = None
    for side_w in range(min_size, max_size + 1, multiple):
        ideal = side_w / aspect
        for side_h in {math.floor(ideal / multiple) * multiple, math.ceil(ideal / multiple) * multiple}:
            side_h = min(max(side_h, min_size), max_size)
            if side_w * side_h > pixels:
                continue
            score = (
                abs(math.log(side_w * side_h / pixels))
                + 4 * abs(math.log(side_w / side_h / aspect))
            )
            if best is None or score < best[0]:
                best = (score, side_w, side_h)
    assert best is not None  # min_size squared is far below any sensible pixel target
    return best[1], best[2]

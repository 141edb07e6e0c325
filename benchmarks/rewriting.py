"""Rewriting hostile prompts: 30,000 characters that once made rewriting quadratic.

``" 'a" * 10_000`` (every quote opening, none closing) took 15-21 s in ``g.edit`` when
each opening quote searched the rest of the text for its closing mark. DESIGN asks for
milliseconds. Each prompt is rewritten through ``g.edit`` with a handle in front, so the
figure includes validation and hex-colour checks, not just the scan.

``python -m benchmarks.rewriting`` prints the figures alone.
"""

from __future__ import annotations

import io
import time

from PIL import Image

import editgraph as eg

#: The case the attack reported.
REPORTED = "apostrophe quotes ' 'a' x 10,000"
#: The hostile prompts, each about 30,000 characters.
PROMPTS = {
    REPORTED: " 'a" * 10_000,
    "unclosed curly quotes": "\u201ca " * 10_000,
    "spaces after 'image'": "image" + " " * 30_000 + "x",
    "spaces after a comma in 'images 1 ,'": "images 1 ," + " " * 30_000 + "x",
    "hash token glued to '_'": "#" + "a" * 30_000 + "_",
    "quoted bad hex tokens between '@@'": "@@ '#zz' " * 3_333,
}


def measure(repeats: int = 3) -> dict[str, float]:
    """Best milliseconds of ``g.edit`` for each hostile prompt."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="PNG")
    graph = eg.Graph(model="flux.2-pro", width=1024, height=768)
    source = graph.image(buffer.getvalue(), name="source")
    best: dict[str, float] = {}
    for index, (label, text) in enumerate(PROMPTS.items()):
        times = []
        for attempt in range(repeats):
            started = time.perf_counter()
            graph.edit(f"{source}{text}", name=f"e{index}-{attempt}")
            times.append(time.perf_counter() - started)
        best[label] = min(times) * 1000
    return best


if __name__ == "__main__":
    for label, milliseconds in measure().items():
        print(f"{milliseconds:8.1f} ms  {label}")

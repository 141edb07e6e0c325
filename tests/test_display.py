"""Tests for display.py: a graph as a drawing, and the notebook views of graphs, runs and sweeps."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from edit_providers import png_bytes
from PIL import Image
from test_drawing import SVG, boxes, parse, texts

import editgraph as eg
from editgraph.display import dag_svg, thumbnail_uri
from editgraph.store import DiskStore

RED = png_bytes((255, 0, 0))
BLUE = png_bytes((0, 0, 255))


def diamond(cache: Path) -> eg.Graph:
    """car and swatch; blue (both); night (blue); a two-seed sweep of posters (night, car)."""
    graph = eg.Graph(cache_dir=cache, width=256, height=256,
                     provider=eg.providers.Preview())
    car = graph.image(RED, name="car")
    swatch = graph.image(BLUE, name="swatch")
    blue = graph.edit(f"Colour {car} like {swatch} <b>&amp;</b>", name="blue")
    night = eg.chain(blue, ["Make image 1 a night scene"], name="night")
    graph.edit(f"A poster of {night} with {car}", name="poster", seed=[1, 2])
    return graph


def test_svg_has_a_box_per_node_and_a_label_per_edge(tmp_path: Path) -> None:
    """Every source and edit is a box; each edge carries the "image N" it becomes."""
    graph = diamond(tmp_path / "cache")
    root = parse(dag_svg(graph))
    assert set(boxes(root)) == {"car", "swatch", "blue", "night-1", "poster[0]", "poster[1]"}
    labels = sorted(text for text in texts(root) if text.startswith("image "))
    assert labels == sorted(
        f"image {index}" for _, _, index in graph.dag.edges(data="index")
    )
    assert labels.count("image 2") == 3  # swatch->blue, car->poster[0], car->poster[1]
    assert len(root.findall(f".//{SVG}path[@marker-end]")) == graph.dag.number_of_edges()


def test_sources_and_edits_are_drawn_differently(tmp_path: Path) -> None:
    """Sources are dashed, rounded boxes; edits are solid ones in another colour."""
    root = parse(dag_svg(diamond(tmp_path / "cache")))
    styles = {}
    for group in root.iter(f"{SVG}g"):
        rect, name = group.find(f"{SVG}rect"), group.find(f"{SVG}text")
        if rect is not None and name is not None:
            styles[name.text] = (rect.get("stroke"), rect.get("stroke-dasharray"))
    assert styles["car"] == styles["swatch"] and styles["car"][1]
    assert styles["blue"] == styles["night-1"] and styles["blue"][1] is None
    assert styles["car"][0] != styles["blue"][0]


def test_columns_follow_topological_generations(tmp_path: Path) -> None:
    """Sources in the first column, then one column per generation, left to right."""
    graph = diamond(tmp_path / "cache")
    found = boxes(parse(dag_svg(graph)))
    x = {name: box[0] for name, box in found.items()}
    assert x["car"] == x["swatch"] < x["blue"] < x["night-1"] < x["poster[0]"] == x["poster[1]"]


def test_cached_edits_are_marked(tmp_path: Path) -> None:
    """Edits named in cached= get the cached mark; others do not."""
    svg = dag_svg(diamond(tmp_path / "cache"), cached=["blue"])
    marks = [text for text in texts(parse(svg)) if "cached" in text and text != "cached edit"]
    assert marks == ["✓ cached"]
    title = next(t for t in parse(svg).iter(f"{SVG}title") if (t.text or "").startswith("blue"))
    assert "cached" in (title.text or "")


def test_empty_graph_draws() -> None:
    """A graph with no nodes still draws (a short note), and parses."""
    assert "empty graph" in "".join(texts(parse(dag_svg(eg.Graph()))))


def test_graph_repr_html_marks_cached_edits_once_a_store_is_open(tmp_path: Path) -> None:
    """Before any run: no marks. After a run: every edit cached. A changed step is not."""
    graph = diamond(tmp_path / "cache")
    assert "✓ cached" not in graph._repr_html_()
    graph.run()
    assert graph._repr_html_().count("✓ cached") == 4
    changed = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256,
                       provider=eg.providers.Preview())
    car, swatch = changed.image(RED, name="car"), changed.image(BLUE, name="swatch")
    blue = changed.edit(f"Colour {car} like {swatch} <b>&amp;</b>", name="blue")
    eg.chain(blue, ["Make image 1 a dusk scene"], name="night")
    changed.plan()  # opens the store, reads the cache, spends nothing
    view = changed._repr_html_()
    assert view.count("✓ cached") == 1 and "1 cached" in view


class _BrokenStore(DiskStore):
    """A store whose index cannot be read (a damaged or unreachable backend)."""

    def get_history(self, name: str, graph: str = "__main__") -> None:
        """Fails as a broken backend would."""
        raise RuntimeError("the backend is unreachable")


def test_graph_repr_html_falls_back_to_text(tmp_path: Path) -> None:
    """When drawing fails the view is text naming the error, never an exception."""
    graph = diamond(tmp_path / "cache")
    graph._store = _BrokenStore(tmp_path / "broken")
    view = graph._repr_html_()
    assert view.startswith("<pre>&lt;Graph 2 sources, 4 edits&gt;")
    assert "RuntimeError: the backend is unreachable" in view


def thumbnails_in(view: str) -> list[Image.Image]:
    """The images embedded in an HTML view as data URIs."""
    found = []
    for payload in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', view):
        found.append(Image.open(io.BytesIO(base64.b64decode(payload))))
    return found


def test_run_repr_html_is_a_grid_of_thumbnails(tmp_path: Path) -> None:
    """One small JPEG per edit, with its name, escaped prompt, state, time and cost."""
    graph = diamond(tmp_path / "cache")
    first = graph.run()
    view = first._repr_html_()
    images = thumbnails_in(view)
    assert len(images) == 4 and all(max(image.size) <= 224 for image in images)
    for name in first:
        assert f'<span class="eg-name">{name}</span>' in view
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in view and "<b>" not in view
    assert "4 run, 0 cached" in view and "$0.0300" in view
    second = graph.run()._repr_html_()
    assert "0 run, 4 cached" in second and second.count("from the cache") == 4


def test_node_result_repr_html_shows_its_image(tmp_path: Path) -> None:
    """A result shows its image (scaled to at most 640 px) with its name and prompt."""
    result = diamond(tmp_path / "cache").run()["night-1"]
    view = result._repr_html_()
    (image,) = thumbnails_in(view)
    assert image.size == (256, 256)
    assert "night-1" in view and "Make image 1 a night scene" in view


def test_sweep_repr_html_shows_variants_side_by_side(tmp_path: Path) -> None:
    """Before a run: names, seeds and prompts; after it: one thumbnail per variant."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256,
                     provider=eg.providers.Preview())
    car = graph.image(RED, name="car")
    sweep = graph.edit(f"Paint {car} blue", seed=[3, 4, 5], name="paint")
    before = sweep._repr_html_()
    assert before.count("not run yet") == 3 and "seed 4" in before
    assert "pick(2) · paint[2]" in before
    graph.run()
    after = sweep._repr_html_()
    assert len(thumbnails_in(after)) == 3 and "not run yet" not in after


def test_thumbnail_uri_of_bytes_that_are_not_an_image() -> None:
    """Unreadable bytes give no thumbnail (the views show a placeholder)."""
    assert thumbnail_uri(b"not an image") is None
    uri = thumbnail_uri(png_bytes((1, 2, 3), (600, 300)), 100)
    assert uri is not None and thumbnails_in(f'src="{uri}"')[0].size == (100, 50)

"""Tests for drawing.py: the pure SVG drawing of a DAG given as nodes and edges."""

from __future__ import annotations

import re
from xml.etree import ElementTree

from editgraph.drawing import DrawnEdge, DrawnNode, draw_dag

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ElementTree.Element:
    """The SVG as XML: a drawing that does not parse is broken."""
    return ElementTree.fromstring(svg)


def texts(root: ElementTree.Element) -> list[str]:
    """Every text element's content, unescaped."""
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def boxes(root: ElementTree.Element) -> dict[str, tuple[float, float, float, float]]:
    """Each node's box (x, y, width, height), by the name written in it."""
    found = {}
    for group in root.iter(f"{SVG}g"):
        rect = group.find(f"{SVG}rect")
        name = group.find(f"{SVG}text")
        if rect is not None and name is not None:
            found["".join(name.itertext())] = tuple(
                float(rect.get(field, "0")) for field in ("x", "y", "width", "height")
            )
    return found  # type: ignore[return-value]


def test_an_edge_that_skips_columns_never_crosses_a_box() -> None:
    """car -> last skips two columns: its straight runs pass between boxes, not under them."""
    nodes = [DrawnNode("car", "source"), DrawnNode("a", "edit"), DrawnNode("b", "edit"),
             DrawnNode("c", "edit"), DrawnNode("last", "edit")]
    edges = [DrawnEdge("car", "a", 1), DrawnEdge("a", "b", 1), DrawnEdge("car", "c", 1),
             DrawnEdge("b", "last", 1), DrawnEdge("c", "last", 2), DrawnEdge("car", "last", 3)]
    root = parse(draw_dag(nodes, edges))
    found = boxes(root)
    for path in root.iter(f"{SVG}path"):
        for x1, y1, x2, y2 in re.findall(
            r"([\d.]+),([\d.]+) L([\d.]+),([\d.]+)", path.get("d", "")
        ):
            for x, y, width, height in found.values():
                overlaps = float(x1) < x + width and float(x2) > x
                assert not (overlaps and y <= float(y1) <= y + height), path.get("d")


def test_names_and_prompts_are_escaped() -> None:
    """Markup in a name, prompt or source is text in the drawing, never an element."""
    hostile = "<script>alert('x')</script> & <img src=x onerror=alert(1)>"
    nodes = [DrawnNode("a<b>", "source", hostile), DrawnNode("e&\"'", "edit", hostile)]
    svg = draw_dag(nodes, [DrawnEdge("a<b>", "e&\"'", 1)])
    root = parse(svg)
    tags = {element.tag.removeprefix(SVG) for element in root.iter()}
    assert not tags & {"script", "img", "b"}
    assert "a<b>" in texts(root) and "e&\"'" in texts(root)
    assert "<script>" not in svg


def test_no_nodes_draw_a_short_note() -> None:
    """Nothing to draw is still a drawing that parses, saying so."""
    assert "empty graph" in "".join(texts(parse(draw_dag([], []))))


def test_a_box_links_where_it_is_told() -> None:
    """A node with href is wrapped in a link, its address escaped."""
    svg = draw_dag([DrawnNode("blue", "edit", "x", href='#a"b')], [])
    links = list(parse(svg).iter(f"{SVG}a"))
    assert [link.get("href") for link in links] == ['#a"b']

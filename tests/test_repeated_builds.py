"""One recipe built again and again (a batch builds it per item): what is remembered
between builds (checked parameters, rewritten prompts, the report's links to input
folders) answers exactly as working it out afresh would, and never hides an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edit_providers import png_bytes

import editgraph as eg
from editgraph.report import _link

RED = png_bytes((255, 0, 0))
BLUE = png_bytes((0, 0, 255))


def test_a_prompt_rewritten_before_is_renumbered_for_a_graph_whose_inputs_are_one() -> None:
    """The same f-string prompt in a graph whose two sources hold the same bytes names
    one image, as a fresh rewrite does, though another graph remembered two."""
    first = eg.Graph()
    a, b = first.image(RED, name="a"), first.image(BLUE, name="b")
    first.edit(f"Put {a} beside {b}", name="pair")
    second = eg.Graph()
    c, d = second.image(RED, name="a"), second.image(RED, name="b")
    second.edit(f"Put {c} beside {d}", name="pair")
    assert first.edits["pair"].prompt == "Put image 1 beside image 2"
    assert first.edits["pair"].references == ("a", "b")
    assert second.edits["pair"].prompt == "Put image 1 beside image 1"
    assert second.edits["pair"].references == ("a",)


def test_a_remembered_prompt_still_refuses_another_graphs_handle() -> None:
    """A prompt rewritten for one graph, then given a handle of another graph, raises
    naming the node and the handle."""
    first = eg.Graph()
    photo = first.image(RED, name="photo")
    first.edit(f"Recolour {photo}", name="recolour")
    second = eg.Graph()
    second.image(RED, name="photo")
    with pytest.raises(eg.GraphError, match=r"node 'recolour'.*'photo' belongs to another graph"):
        second.edit(f"Recolour {photo}", name="recolour")


def test_a_remembered_prompt_still_refuses_a_missing_reference() -> None:
    """An @name that one graph had and the next lacks is an error in the next."""
    first = eg.Graph()
    first.image(RED, name="swatch")
    first.image(BLUE, name="car")
    first.edit("Paint @car like @swatch", name="paint")
    second = eg.Graph()
    second.image(BLUE, name="car")
    with pytest.raises(eg.GraphError, match=r"node 'paint'.*unknown reference @swatch"):
        second.edit("Paint @car like @swatch", name="paint")


def test_checked_parameters_are_not_reused_across_types() -> None:
    """A seed of 1 checked once does not let True through as a seed later, and the
    error names the later node."""
    first = eg.Graph()
    first.image(RED, name="car")
    first.edit("Recolour @car", name="one", seed=1, width=512, height=512)
    second = eg.Graph()
    second.image(RED, name="car")
    with pytest.raises(eg.GraphError, match=r"node 'two': seed"):
        second.edit("Recolour @car", name="two", seed=True, width=512, height=512)


def test_checked_parameters_are_copies() -> None:
    """Two graphs with the same edit parameters each get their own dict: changing one
    edit's parameters leaves the other's (and what is remembered) as checked."""
    graphs = []
    for _ in range(2):
        graph = eg.Graph()
        graph.image(RED, name="car")
        graph.edit("Recolour @car", name="recolour", width=512, height=512)
        graphs.append(graph)
    graphs[0].edits["recolour"].parameters["width"] = 64
    assert graphs[1].edits["recolour"].parameters["width"] == 512
    third = eg.Graph()
    third.image(RED, name="car")
    third.edit("Recolour @car", name="recolour", width=512, height=512)
    assert third.edits["recolour"].parameters["width"] == 512


def test_graph_defaults_checked_before_still_refuse_a_bad_one() -> None:
    """Good defaults checked once do not let a bad width through for the next graph."""
    eg.Graph(width=512, height=512)
    with pytest.raises(eg.GraphError, match=r"width: 500 is not allowed"):
        eg.Graph(width=500, height=512)


def test_the_dag_follows_the_graph_as_it_grows_and_rolls_back() -> None:
    """The networkx DAG read, then the graph grown, then a failed chain rolled back:
    the DAG shown each time holds exactly the graph's nodes, kinds and edges."""
    graph = eg.Graph()
    car = graph.image(RED, name="car")
    assert list(graph.dag.nodes(data="kind")) == [("car", "source")]
    graph.edit(f"Recolour {car}", name="recolour")
    assert list(graph.dag.nodes(data="kind")) == [("car", "source"), ("recolour", "edit")]
    assert list(graph.dag.edges(data="index")) == [("car", "recolour", 1)]
    with pytest.raises(eg.GraphError):
        eg.chain(graph["recolour"], ["Make it brighter", "Use image 7"], name="step")
    assert list(graph.dag) == ["car", "recolour"] == list(graph)
    assert "step-1" not in graph and len(graph) == 2


@pytest.mark.parametrize("relative", [
    "inputs/a.png", "../inputs/a b.png", "../../elsewhere/x/y.png", "a.png", "sub/sub/%.png",
])
def test_a_report_link_is_the_relative_path_quoted(tmp_path: Path, relative: str) -> None:
    """A link to an input from the report's folder is the relative path, quoted, as
    relpath gives it: whichever folder the input is in, however often it is asked."""
    folder = tmp_path / "batch" / "out"
    target = os.path.normpath(folder / relative)
    for _ in range(2):
        assert _link(str(folder), target) == relative.replace(" ", "%20").replace("%.", "%25.")

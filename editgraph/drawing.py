"""Pure SVG drawing of a DAG: boxes in columns, arrows labelled "image N".

The layout follows networkx's topological generations (one column per generation), so
no system binary such as Graphviz is needed. It draws plain nodes and edges, knows
nothing of graphs, runs or stores, and escapes every name, label and link it is given.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import networkx as nx

__all__ = ["DrawnEdge", "DrawnNode", "draw_dag"]

_BOX_W = 210
_BOX_H = 64
_INPUT_SPACING = 16  # vertical room per "image N" arriving at one box
_COLUMN_GAP = 120
_ROW_GAP = 24
_WAYPOINT_H = 6  # room an edge crossing a column takes in it
_MARGIN = 16
_LEGEND_H = 30
_NAME_CHARS = 24  # about what fits in a box at 13 px bold
_LINE_CHARS = 32  # about what fits in a box at 11 px



class _Style(NamedTuple):
    """How one kind of box is drawn."""

    fill: str
    stroke: str
    rx: int
    dash: str


_STYLES = {
    "source": _Style(fill="#eef2f7", stroke="#64748b", rx=12, dash="5 3"),
    "edit": _Style(fill="#ffffff", stroke="#2563eb", rx=4, dash=""),
    "op": _Style(fill="#fffbeb", stroke="#b45309", rx=4, dash="2 2"),
    "cached": _Style(fill="#ecfdf3", stroke="#16a34a", rx=4, dash=""),
    "cached op": _Style(fill="#ecfdf3", stroke="#16a34a", rx=4, dash="2 2"),
}


@dataclass(frozen=True)
class DrawnNode:
    """One box of the drawing: a source or an edit, with the text shown under its name."""

    name: str
    kind: Literal["source", "edit", "op"]
    label: str = ""
    cached: bool = False
    href: str | None = None


@dataclass(frozen=True)
class DrawnEdge:
    """An arrow from ``source`` into ``target``, which sees it as "image ``index``"."""

    source: str
    target: str
    index: int


def draw_dag(nodes: Sequence[DrawnNode], edges: Sequence[DrawnEdge]) -> str:
    """The SVG drawing of a DAG given as plain nodes and edges: sources and edits as
    boxes, each edge labelled with the "image N" it becomes, cached edits marked."""
    if not nodes:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="240" height="40" '
            'font-family="sans-serif"><text x="8" y="24" font-size="13" fill="#64748b">'
            "an empty graph</text></svg>"
        )
    layout = _Layout(nodes, edges)
    columns = len(layout.columns)
    width = 2 * _MARGIN + columns * _BOX_W + (columns - 1) * _COLUMN_GAP
    total_height = 2 * _MARGIN + layout.tallest + _LEGEND_H
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{total_height:.0f}" viewBox="0 0 {width:.0f} {total_height:.0f}" '
            'style="max-width:100%;height:auto" role="img" '
            f'aria-label="{_attr(_summary(nodes, edges))}" '
            "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\">"
        ),
        (
            '<defs><marker id="eg-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M0,0 L10,5 L0,10 z" fill="#94a3b8"/></marker></defs>'
        ),
    ]
    labels = []
    for edge, points in layout.routes():
        parts.append(
            f'<path d="{_smooth_path(points)}" fill="none" stroke="#94a3b8" '
            'stroke-width="1.5" marker-end="url(#eg-arrow)"/>'
        )
        x2, y2 = points[-1]
        # Labels go on top of every arrow; the white halo keeps them readable.
        labels.append(
            f'<text x="{x2 - 10:.1f}" y="{y2 - 4:.1f}" font-size="11" text-anchor="end" '
            'fill="#334155" stroke="#ffffff" stroke-width="3" paint-order="stroke">'
            f"image {edge.index}</text>"
        )
    for node in nodes:
        x, y = layout.position[node.name]
        parts.append(_box(node, x, y, layout.height[node.name]))
    parts += labels
    parts.append(_legend(total_height - _LEGEND_H + 6))
    parts.append("</svg>")
    return "".join(parts)


#: A waypoint of the layout: (edge number, column) where an edge crosses a column.
_Waypoint = tuple[int, int]


class _Layout:
    """Boxes in columns by topological generation; an edge that skips columns passes
    through a waypoint in each column it crosses (between the boxes, never under one)."""

    def __init__(self, nodes: Sequence[DrawnNode], edges: Sequence[DrawnEdge]) -> None:
        dag = nx.DiGraph()
        dag.add_nodes_from(node.name for node in nodes)
        dag.add_edges_from((edge.source, edge.target) for edge in edges)
        self.edges = sorted(edges, key=lambda edge: edge.index)
        self.inputs: dict[str, list[DrawnEdge]] = {node.name: [] for node in nodes}
        for edge in self.edges:
            self.inputs[edge.target].append(edge)
        self.height: dict[str, float] = {
            name: max(_BOX_H, _INPUT_SPACING * len(edges_in) + 16)
            for name, edges_in in self.inputs.items()
        }
        layer = {
            name: number
            for number, generation in enumerate(nx.topological_generations(dag))
            for name in generation
        }
        declared = {node.name: position for position, node in enumerate(nodes)}
        parents: dict[str | _Waypoint, list[str | _Waypoint]] = {name: [] for name in declared}
        by_column: list[list[str | _Waypoint]] = [[] for _ in range(max(layer.values()) + 1)]
        for name in declared:
            by_column[layer[name]].append(name)
        self.waypoints: dict[int, list[_Waypoint]] = {}
        for number, edge in enumerate(self.edges):
            previous: str | _Waypoint = edge.source
            crossing = []
            for crossed in range(layer[edge.source] + 1, layer[edge.target]):
                waypoint = (number, crossed)
                by_column[crossed].append(waypoint)
                parents[waypoint] = [previous]
                crossing.append(waypoint)
                previous = waypoint
            parents[edge.target].append(previous)
            self.waypoints[number] = crossing

        # Order each column by the mean row of what feeds it, to keep arrows short.
        row: dict[str | _Waypoint, float] = {}
        self.columns: list[list[str | _Waypoint]] = []
        for items in by_column:

            def barycentre(item: str | _Waypoint) -> tuple[float, float]:
                above = [row[parent] for parent in parents[item]]
                tie = item[0] - 0.5 if isinstance(item, tuple) else declared[item]
                return (sum(above) / len(above) if above else -1.0, tie)

            column = sorted(items, key=barycentre)
            row.update((item, index) for index, item in enumerate(column))
            self.columns.append(column)

        def item_height(item: str | _Waypoint) -> float:
            return _WAYPOINT_H if isinstance(item, tuple) else self.height[item]

        column_heights = [
            sum(item_height(item) for item in column) + _ROW_GAP * (len(column) - 1)
            for column in self.columns
        ]
        self.tallest = max(column_heights)
        self.position: dict[str, tuple[float, float]] = {}
        self.waypoint_y: dict[_Waypoint, float] = {}
        for number, column in enumerate(self.columns):
            x = _MARGIN + number * (_BOX_W + _COLUMN_GAP)
            y = _MARGIN + (self.tallest - column_heights[number]) / 2
            for item in column:
                if isinstance(item, tuple):
                    self.waypoint_y[item] = y + _WAYPOINT_H / 2
                else:
                    self.position[item] = (x, y)
                y += item_height(item) + _ROW_GAP

    def routes(self) -> list[tuple[DrawnEdge, list[tuple[float, float]]]]:
        """Each edge with the points its arrow passes: out of its source's right side,
        across each waypoint, into its own slot on the left side of its target."""
        routes = []
        for number, edge in enumerate(self.edges):
            source_x, source_y = self.position[edge.source]
            target_x, target_y = self.position[edge.target]
            arriving = self.inputs[edge.target]
            slot = arriving.index(edge) + 1
            points = [(source_x + _BOX_W, source_y + self.height[edge.source] / 2)]
            for waypoint in self.waypoints[number]:
                x = _MARGIN + waypoint[1] * (_BOX_W + _COLUMN_GAP)
                y = self.waypoint_y[waypoint]
                points += [(x, y), (x + _BOX_W, y)]
            points.append(
                (target_x - 1, target_y + self.height[edge.target] * slot / (len(arriving) + 1))
            )
            routes.append((edge, points))
        return routes


def _smooth_path(points: Sequence[tuple[float, float]]) -> str:
    """An SVG path through ``points``: S-curves between columns, straight across them."""
    (x, y), *rest = points
    path = [f"M{x:.1f},{y:.1f}"]
    for number, (next_x, next_y) in enumerate(rest):
        if number % 2 == 0:  # between columns: a curve leaving and arriving level
            bend = max(30.0, (next_x - x) / 2)
            path.append(
                f"C{x + bend:.1f},{y:.1f} {next_x - bend:.1f},{next_y:.1f} "
                f"{next_x:.1f},{next_y:.1f}"
            )
        else:  # across a column, between its boxes
            path.append(f"L{next_x:.1f},{next_y:.1f}")
        x, y = next_x, next_y
    return " ".join(path)


def _box(node: DrawnNode, x: float, y: float, height: float) -> str:
    style = _STYLES[("cached op" if node.kind == "op" else "cached") if node.cached
                    else node.kind]
    dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
    label_lines = textwrap.wrap(" ".join(node.label.split()), _LINE_CHARS)
    shown = (height - 34) // 14
    if len(label_lines) > shown:
        label_lines = label_lines[: max(1, int(shown))]
        label_lines[-1] = _clip(label_lines[-1] + " …", _LINE_CHARS)
    tooltip = f"{node.name} ({'cached ' if node.cached else ''}{node.kind})\n{node.label}"
    parts = [
        f"<g><title>{_text(tooltip)}</title>",
        (
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{_BOX_W}" height="{height:.0f}" '
            f'rx="{style.rx}" fill="{style.fill}" stroke="{style.stroke}" '
            f'stroke-width="1.5"{dash}/>'
        ),
        (
            f'<text x="{x + 10:.1f}" y="{y + 20:.1f}" font-size="13" font-weight="600" '
            f'fill="#0f172a">{_text(_clip(node.name, _NAME_CHARS - (7 if node.cached else 0)))}'
            "</text>"
        ),
    ]
    if node.cached:
        parts.append(
            f'<text x="{x + _BOX_W - 8:.1f}" y="{y + 19:.1f}" font-size="11" '
            'text-anchor="end" font-weight="600" fill="#16a34a">✓ cached</text>'
        )
    for number, line in enumerate(label_lines):
        parts.append(
            f'<text x="{x + 10:.1f}" y="{y + 38 + 14 * number:.1f}" font-size="11" '
            f'fill="#475569">{_text(line)}</text>'
        )
    parts.append("</g>")
    drawn = "".join(parts)
    if node.href is not None:
        drawn = f'<a href="{_attr(node.href)}">{drawn}</a>'
    return drawn


def _legend(y: float) -> str:
    parts = []
    x = float(_MARGIN)
    for kind, label in (("source", "source"), ("edit", "edit"), ("op", "op (local)"),
                        ("cached", "cached edit")):
        style = _STYLES[kind]
        dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
        parts.append(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="22" height="14" rx="{min(5, style.rx)}" '
            f'fill="{style.fill}" stroke="{style.stroke}" stroke-width="1.5"{dash}/>'
            f'<text x="{x + 28:.0f}" y="{y + 11:.0f}" font-size="11" fill="#475569">'
            f"{label}</text>"
        )
        x += 40 + 7 * len(label)
    parts.append(
        f'<text x="{x:.0f}" y="{y + 11:.0f}" font-size="11" fill="#475569">'
        "arrows: what the edit calls “image N”</text>"
    )
    return "".join(parts)


def _summary(nodes: Sequence[DrawnNode], edges: Sequence[DrawnEdge]) -> str:
    sources = sum(node.kind == "source" for node in nodes)
    operations = sum(node.kind == "op" for node in nodes)
    edits = len(nodes) - sources - operations
    if not operations:
        return f"a graph of {sources} sources and {edits} edits, {len(edges)} inputs"
    return (f"a graph of {sources} sources, {edits} edits and {operations} ops, "
            f"{len(edges)} inputs")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _text(text: str) -> str:
    """``text`` escaped for SVG/HTML element content."""
    return html.escape(text, quote=False)


def _attr(text: str) -> str:
    """``text`` escaped for a quoted SVG/HTML attribute."""
    return html.escape(text, quote=True)

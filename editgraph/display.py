"""Notebook views of graphs, runs, results and sweeps, and the thumbnails they show.

The DAG drawing itself is :mod:`editgraph.drawing` (pure SVG); this module feeds it a
graph, and renders the notebook views through autoescaping Jinja2 templates. Every
name, prompt and path is escaped before it reaches SVG or HTML.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import jinja2
from PIL import Image, ImageOps

from .drawing import DrawnEdge, DrawnNode, draw_dag
from .errors import EditGraphError
from .nodes import EditNode, OpNode, SourceNode
from .plan import PlanStep, make_plan
from .providers.registry import default_provider
from .store import Store

if TYPE_CHECKING:
    from .graph import Graph, Sweep
    from .runs import NodeResult, Run

__all__ = [
    "dag_svg",
    "graph_html",
    "node_result_html",
    "run_html",
    "sweep_html",
    "templates",
    "thumbnail_uri",
]


def dag_svg(graph: Graph, *, cached: Collection[str] = ()) -> str:
    """An SVG drawing of ``graph``: sources, edits and ops as boxes, each edge labelled
    with the "image N" it becomes; edits and ops named in ``cached`` are marked as cached."""
    nodes = []
    for name, kind in graph.dag.nodes(data="kind"):
        if kind == "source":
            nodes.append(DrawnNode(name, "source", graph.sources[name].source))
            continue
        node = graph.edits[name]
        if isinstance(node, OpNode):
            nodes.append(DrawnNode(name, "op", node.description, cached=name in cached))
        else:
            nodes.append(DrawnNode(name, "edit", node.prompt, cached=name in cached))
    edges = [
        DrawnEdge(source, target, index)
        for source, target, index in graph.dag.edges(data="index")
    ]
    return draw_dag(nodes, edges)


# ---------------------------------------------------------------------------- thumbnails


def thumbnail_uri(data: bytes, size: int = 256, *, quality: int = 80) -> str | None:
    """A small JPEG of the image in ``data`` as a ``data:`` URI (at most ``size`` px a
    side), or None when the bytes are not an image Pillow can read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            image.load()
            shown = ImageOps.exif_transpose(image)
    # Pillow reports undecodable bytes as any of these, depending on the format.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    if shown.mode in ("RGBA", "LA", "PA") or "transparency" in shown.info:
        rgba = shown.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        shown = flat
    shown = shown.convert("RGB")
    shown.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    shown.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------- notebook views

templates = jinja2.Environment(
    loader=jinja2.PackageLoader("editgraph", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _render(macro: str, **context: Any) -> str:
    module = templates.get_template("notebook.html.j2").make_module()
    return str(getattr(module, macro)(**context))


def run_html(run: Run) -> str:
    """The notebook view of a run: a grid of thumbnails with name, prompt, state, time, cost."""
    cards = []
    for result in run.values():
        cards.append({
            "name": result.name,
            "prompt": result.request.prompt,
            "cached": result.cached,
            "elapsed": result.elapsed,
            "cost": result.cost,
            "size": f"{result.width}×{result.height}",
            "thumbnail": thumbnail_uri(result.data, 224),
        })
    cached = sum(result.cached for result in run.values())
    return _render(
        "run", cards=cards, cached=cached, generated=len(run) - cached,
        failures={name: str(error) for name, error in run.failures.items()},
        cost=run.cost, provider=run.provider,
    )


def node_result_html(result: NodeResult) -> str:
    """The notebook view of one result: its image, with its name, prompt and state."""
    return _render(
        "result", name=result.name, prompt=result.request.prompt, cached=result.cached,
        elapsed=result.elapsed, cost=result.cost, size=f"{result.width}×{result.height}",
        image=thumbnail_uri(result.data, 640, quality=88), key=result.key,
    )


def graph_html(graph: Graph, *, store: Store | None) -> str:
    """The notebook view of a graph: its drawing, with the cached edits marked.

    The cached marks come from a plan against ``store`` when the graph already has one
    open (a plan reads the cache only; nothing is spent). A display hook must never
    break a notebook cell, so on any error this falls back to text.
    """
    try:
        steps = _plan_steps(graph, store)
        cached = [name for name, step in steps.items() if step.cached]
        drawing = dag_svg(graph, cached=cached)
        note = (
            f"{len(graph.sources)} sources, {len(graph.edits)} edits"
            + (f", {len(cached)} cached" if store is not None else "")
        )
        return (
            f'<div class="editgraph-graph">{drawing}<div style="font-size:12px;color:#475569;'
            f'font-family:system-ui,sans-serif">{_text(note)}</div></div>'
        )
    except Exception as error:  # noqa: BLE001 - shown in the fallback text, not swallowed
        return (
            f"<pre>{_text(repr(graph))}\n(the drawing failed: "
            f"{_text(type(error).__name__)}: {_text(str(error))})</pre>"
        )


def sweep_html(sweep: Sweep, *, store: Store | None) -> str:
    """The notebook view of a sweep: its variants side by side, with images once run."""
    graph = sweep[0].graph
    try:
        steps = _plan_steps(graph, store)
        variants = []
        for index, handle in enumerate(sweep):
            node = graph.edits[handle.name]
            assert isinstance(node, EditNode)  # a sweep's variants are edits
            step = steps.get(handle.name)
            thumbnail = None
            if store is not None and step is not None and step.cached and step.key:
                record = store.get_record(step.key)
                if record is not None:
                    thumbnail = thumbnail_uri(store.get_blob(record.output_hash), 224)
            variants.append({
                "index": index, "name": handle.name, "prompt": node.prompt,
                "seed": node.parameters.get("seed"), "thumbnail": thumbnail,
            })
        return _render("sweep", variants=variants)
    except Exception as error:  # noqa: BLE001 - shown in the fallback text, not swallowed
        return (
            f"<pre>{_text(repr(sweep))}\n(the view failed: "
            f"{_text(type(error).__name__)}: {_text(str(error))})</pre>"
        )


def _text(text: str) -> str:
    """``text`` escaped for HTML element content."""
    return html.escape(text, quote=False)


def _plan_steps(graph: Graph, store: Store | None) -> dict[str, PlanStep]:
    """The plan of ``graph`` by edit name, or nothing when no store is open yet."""
    if store is None:
        return {}
    edits: list[EditNode | OpNode] = list(graph.edits.values())
    sources: Mapping[str, SourceNode] = graph.sources
    provider = _provider_name(graph, store)
    try:
        plan = make_plan(edits, sources, provider=provider, store=store, graph=graph.name)
    except EditGraphError:
        return {}
    return {step.name: step for step in plan.steps}


def _provider_name(graph: Graph, store: Store) -> str:
    """The provider the graph's edits last ran with (else its own, else the default)."""
    if graph.provider is not None:
        return graph.provider.name
    histories = [store.get_history(name, graph.name) for name in graph.edits]
    # Ops run locally whatever the provider: only edits say which provider ran.
    latest = max((h for h in histories if h is not None and h.kind == "edit"),
                 key=lambda h: h.created_at, default=None)
    if latest is not None:
        return latest.provider
    return default_provider()[0].name

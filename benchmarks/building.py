"""Cost of declaring and planning: a 1,000-node graph built (prompts rewritten) and planned.

Every ``g.edit`` validates its parameters and rewrites its prompt (``@name`` references
become "image N"); ``g.plan()`` derives every key and reads the cache. The graph is the
cached-replay shape (chains of ten from one source), with prompts that name their input
by ``@name`` so that rewriting has work to do. Planning runs against an existing, empty
cache directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import editgraph as eg

from .overhead import _png


def build(cache: Path, edits: int) -> eg.Graph:
    """The graph: ``edits`` edits in chains of ten, each prompt naming its input."""
    graph = eg.Graph(cache_dir=cache, concurrency=16, width=256, height=256)
    graph.image(_png(7), name="source")
    previous = "source"
    for index in range(edits):
        upstream = "source" if index % 10 == 0 else previous
        previous = f"n{index}"
        graph.edit(f"Make @{upstream} look like dusk, variant {index}", name=previous)
    return graph


def measure(root: Path, edits: int = 1000, repeats: int = 3) -> tuple[float, float]:
    """Best milliseconds to build, and to plan, a graph of ``edits`` edits."""
    cache = root / "building"
    eg.Graph(cache_dir=cache).plan(provider=_named("together"))  # the directory exists
    builds, plans = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        graph = build(cache, edits)
        built = time.perf_counter()
        plan = graph.plan(provider=_named("together"))
        planned = time.perf_counter()
        assert len(plan.to_run) == edits
        builds.append(built - started)
        plans.append(planned - built)
    return min(builds) * 1000, min(plans) * 1000


class _named:
    """A provider that is only ever planned against, never called."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        raise AssertionError("planning calls no provider")

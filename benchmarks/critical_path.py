"""The layered DAG against FakeTogether: editgraph, a hand-written async client, a plain script.

Three ways to run the same graph (``layers`` x ``width`` edits, each taking one or two
edits of the layer above; the first layer takes the source) against the same fake, one
after another in one run:

- editgraph: ``eg.Graph(cache_dir=..., concurrency=width)`` with
  ``eg.providers.Together(base_url=fake.base_url)``, on a cache directory that already
  exists (a user's cache exists after first use); its first use of a brand-new directory
  is measured apart;
- a hand-written asyncio client with one shared httpx connection pool, starting each call
  the moment its inputs are done: the floor the fake allows, with no engine at all;
- the plain sequential script a user would otherwise write with httpx: one POST after
  another, downloading each result, upstream result URLs passed as ``reference_images``.

The critical-path bound is ``layers x latency``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

import editgraph as eg

from .fake_service import FakeService
from .overhead import _png, layered_graph

MODEL = "black-forest-labs/FLUX.2-pro"
SIZE = 256


@dataclass(frozen=True)
class CriticalPathFigures:
    """Walls in seconds of each way of running the graph, and what they were run on."""

    layers: int
    width: int
    latency: float
    editgraph: list[float]
    first_use: list[float]
    hand_written: list[float]
    sequential: float
    engine_cpu_per_edit_ms: float
    fake_cpu_per_call_ms: float

    @property
    def bound(self) -> float:
        """The critical path: one call per layer."""
        return self.layers * self.latency

    @property
    def edits(self) -> int:
        """Edits in the graph."""
        return self.layers * self.width


def _shape(layers: int, width: int) -> list[list[tuple[int, ...]]]:
    """For each layer, each edit's references as columns of the layer above (() = source)."""
    rows: list[list[tuple[int, ...]]] = []
    for layer in range(layers):
        row: list[tuple[int, ...]] = []
        for column in range(width):
            row.append(() if layer == 0 else
                       (column, column - 1) if column % 2 else (column,))
        rows.append(row)
    return rows


def _body(prompt: str, references: list[str], seed: int) -> dict[str, object]:
    return {"model": MODEL, "prompt": prompt, "width": SIZE, "height": SIZE, "seed": seed,
            "reference_images": references, "output_format": "jpeg"}


def _editgraph_run(base_url: str, cache: Path, layers: int, width: int, salt: int) -> float:
    """One editgraph run of a graph nothing is cached for; its wall in seconds."""
    graph = layered_graph(cache, layers, width, _png(1000 + salt))
    provider = eg.providers.Together(api_key="bench", base_url=base_url)  # as a script would
    started = time.perf_counter()
    graph.run(provider=provider, progress=False)
    return time.perf_counter() - started


async def _hand_written(base_url: str, layers: int, width: int, salt: int) -> float:
    """The same graph with asyncio and one httpx pool: no engine, no store."""
    source = "data:image/png;base64," + base64.b64encode(_png(2000 + salt)).decode()
    async with httpx.AsyncClient(timeout=60, trust_env=False,
                                 limits=httpx.Limits(max_connections=2 * width)) as client:

        async def edit(prompt: str, inputs: list[asyncio.Task[str]]) -> str:
            references = [await upstream for upstream in inputs] or [source]
            answer = await client.post(f"{base_url}/v1/images/generations",
                                       json=_body(prompt, references, 1))
            answer.raise_for_status()
            url: str = answer.json()["data"][0]["url"]
            (await client.get(url)).raise_for_status()
            return url

        started = time.perf_counter()
        above: list[asyncio.Task[str]] = []
        tasks = []
        for layer, row in enumerate(_shape(layers, width)):
            current = [asyncio.ensure_future(edit(
                f"hand-written {salt} layer {layer} column {column}",
                [above[index] for index in refs]))
                for column, refs in enumerate(row)]
            tasks += current
            above = current
        await asyncio.gather(*tasks)
        return time.perf_counter() - started


def _sequential_script(base_url: str, layers: int, width: int) -> float:
    """What a user writes without editgraph: one call after another."""
    source = "data:image/png;base64," + base64.b64encode(_png(3000)).decode()
    started = time.perf_counter()
    with httpx.Client(timeout=60, trust_env=False) as client:
        above: list[str] = []
        for layer, row in enumerate(_shape(layers, width)):
            current = []
            for column, refs in enumerate(row):
                references = [above[index] for index in refs] or [source]
                answer = client.post(f"{base_url}/v1/images/generations", json=_body(
                    f"sequential layer {layer} column {column}", references, 1))
                answer.raise_for_status()
                url = answer.json()["data"][0]["url"]
                client.get(url).raise_for_status()
                current.append(url)
            above = current
    return time.perf_counter() - started


def measure(root: Path, *, layers: int = 4, width: int = 16, latency: float = 0.2,
            repeats: int = 3) -> CriticalPathFigures:
    """Run every variant against one FakeTogether child with ``latency`` per call."""
    logging.getLogger("stamina").setLevel(logging.ERROR)
    with FakeService(latency=latency) as fake:
        existing = root / "cache"
        _editgraph_run(fake.base_url, existing, layers, width, salt=0)  # first use
        first_use = [
            _editgraph_run(fake.base_url, root / f"brand-new-{repeat}", layers, width,
                           salt=100 + repeat)
            for repeat in range(2)
        ]
        editgraph_walls, hand_walls = [], []
        cpu_before, fake_before = time.process_time(), fake.stats()
        for repeat in range(repeats):
            editgraph_walls.append(
                _editgraph_run(fake.base_url, existing, layers, width, salt=10 + repeat))
        engine_cpu = (time.process_time() - cpu_before) / (repeats * layers * width)
        fake_after = fake.stats()
        fake_cpu = ((fake_after.cpu_seconds - fake_before.cpu_seconds)
                    / max(1, fake_after.billed - fake_before.billed))
        for repeat in range(repeats):
            hand_walls.append(asyncio.run(_hand_written(fake.base_url, layers, width, repeat)))
        sequential = _sequential_script(fake.base_url, layers, width)
    return CriticalPathFigures(
        layers=layers, width=width, latency=latency, editgraph=editgraph_walls,
        first_use=first_use, hand_written=hand_walls, sequential=sequential,
        engine_cpu_per_edit_ms=engine_cpu * 1000, fake_cpu_per_call_ms=fake_cpu * 1000,
    )


def median(values: list[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)

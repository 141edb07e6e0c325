"""The layered DAG against a server in another process: editgraph, hand-written async
clients, a plain script.

The ways to run the same graph (``layers`` x ``width`` edits, each taking one or two
edits of the layer above; the first layer takes the source) against one server child:

- editgraph: ``eg.Graph(cache_dir=..., concurrency=width)`` with
  ``eg.providers.Together(base_url=...)``, on a cache directory that already exists (a
  user's cache exists after first use); its first use of a brand-new directory is
  measured apart;
- a hand-written asyncio client on the same HTTP stack as editgraph (httpx over
  editgraph's aiohttp transport), starting each call the moment its inputs are done:
  no engine, no store, no checks;
- the same with aiohttp alone (the floor DESIGN quotes: about 1.07 of the bound);
  both hand-written clients download results in turns as editgraph's providers do
  (``providers._http.DOWNLOAD_TURNS`` at once): a layer's results downloaded all at once
  share the CPU and all finish at the end of the burst, which every layer then repeats;
- the plain sequential script a user would otherwise write with httpx: one POST after
  another, downloading each result, upstream result URLs passed as ``reference_images``.

editgraph and the two hand-written clients run interleaved, round by round in
alternating order (``interleave.interleaved``), so a drift of the machine falls on all
of them. The server is ``benchmarks.light_server`` by default (< 1 ms of CPU per call,
1 MB JPEG results); ``server="fake"`` runs FakeTogether instead (2-3 ms per call).

The critical-path bound is ``layers x latency``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

import editgraph as eg
from editgraph.providers._http import DOWNLOAD_TURNS, tls_context
from editgraph.providers._transport import AiohttpTransport

from .fake_service import FakeService
from .interleave import interleaved, ratio
from .overhead import CHILD_GRAPH, _png, layered_graph

MODEL = "black-forest-labs/FLUX.2-pro"
SIZE = 256


@dataclass(frozen=True)
class CriticalPathFigures:
    """Walls in seconds of each way of running the graph, and what they were run on."""

    layers: int
    width: int
    latency: float
    server: str  # "light" or "fake"
    editgraph: list[float]
    first_use: list[float]
    hand_written: list[float]  # same HTTP stack as editgraph, interleaved with it
    hand_aiohttp: list[float]  # aiohttp alone, interleaved too
    sequential: float
    engine_cpu_per_edit_ms: float
    fake_cpu_per_call_ms: float

    @property
    def over_hand_written(self) -> float:
        """editgraph's wall over the same-stack client's, median of round-by-round ratios."""
        return ratio(self.editgraph, self.hand_written)

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


def _editgraph_run(base_url: str, cache: Path, layers: int, width: int, salt: int,
                   cpu: list[float] | None = None) -> float:
    """One editgraph run of a graph nothing is cached for; its wall in seconds (its CPU
    seconds appended to ``cpu``)."""
    graph = layered_graph(cache, layers, width, _png(1000 + salt))
    provider = eg.providers.Together(api_key="bench", base_url=base_url)  # as a script would
    started, cpu_started = time.perf_counter(), time.process_time()
    graph.run(provider=provider, progress=False)
    wall = time.perf_counter() - started
    if cpu is not None:
        cpu.append(time.process_time() - cpu_started)
    return wall


async def _layered(layers: int, width: int, salt: int,
                   edit: Callable[[str, list[str]], Awaitable[str]]) -> float:
    """Run the graph's shape with ``edit(prompt, references)``; the wall in seconds."""
    source = "data:image/png;base64," + base64.b64encode(_png(2000 + salt)).decode()

    async def node(prompt: str, inputs: list[asyncio.Task[str]]) -> str:
        return await edit(prompt, [await upstream for upstream in inputs] or [source])

    started = time.perf_counter()
    above: list[asyncio.Task[str]] = []
    tasks = []
    for layer, row in enumerate(_shape(layers, width)):
        current = [asyncio.ensure_future(node(
            f"hand-written {salt} layer {layer} column {column}",
            [above[index] for index in refs]))
            for column, refs in enumerate(row)]
        tasks += current
        above = current
    await asyncio.gather(*tasks)
    return time.perf_counter() - started


async def _hand_written(base_url: str, layers: int, width: int, salt: int) -> float:
    """The graph with asyncio and httpx over editgraph's transport: no engine, no store."""
    async with httpx.AsyncClient(transport=AiohttpTransport(tls_context()), timeout=60,
                                 trust_env=False) as client:

        turns = asyncio.Semaphore(DOWNLOAD_TURNS)

        async def edit(prompt: str, references: list[str]) -> str:
            answer = await client.post(f"{base_url}/v1/images/generations",
                                       json=_body(prompt, references, 1))
            answer.raise_for_status()
            url: str = answer.json()["data"][0]["url"]
            async with turns:
                (await client.get(url)).raise_for_status()
            return url

        return await _layered(layers, width, salt, edit)


async def _hand_aiohttp(base_url: str, layers: int, width: int, salt: int) -> float:
    """The graph with asyncio and aiohttp alone."""
    async with aiohttp.ClientSession() as session:

        turns = asyncio.Semaphore(DOWNLOAD_TURNS)

        async def edit(prompt: str, references: list[str]) -> str:
            async with session.post(f"{base_url}/v1/images/generations",
                                    json=_body(prompt, references, 1)) as answer:
                answer.raise_for_status()
                url: str = (await answer.json())["data"][0]["url"]
            async with turns, session.get(url) as result:
                result.raise_for_status()
                await result.read()
            return url

        return await _layered(layers, width, salt, edit)


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
            repeats: int = 3, server: str = "light") -> CriticalPathFigures:
    """Run every variant against one server child with ``latency`` per call; editgraph
    and the hand-written clients interleaved, ``repeats`` rounds."""
    logging.getLogger("stamina").setLevel(logging.ERROR)
    salts = itertools.count(10)
    with FakeService(server=server, latency=latency) as fake:
        base = fake.base_url
        existing = root / "cache"
        _editgraph_run(base, existing, layers, width, salt=0)  # first use
        asyncio.run(_hand_written(base, layers, width, 0))  # warm both clients too
        asyncio.run(_hand_aiohttp(base, layers, width, 0))
        first_use = [
            _editgraph_run(base, root / f"brand-new-{repeat}", layers, width,
                           salt=100 + repeat)
            for repeat in range(2)
        ]
        cpu: list[float] = []
        fake_before = fake.stats()
        walls = interleaved({
            "editgraph": lambda: _editgraph_run(base, existing, layers, width, next(salts), cpu),
            "hand-written": lambda: asyncio.run(_hand_written(base, layers, width, next(salts))),
            "aiohttp": lambda: asyncio.run(_hand_aiohttp(base, layers, width, next(salts))),
        }, repeats)
        fake_after = fake.stats()
        fake_cpu = ((fake_after.cpu_seconds - fake_before.cpu_seconds)
                    / max(1, fake_after.billed - fake_before.billed))
        sequential = _sequential_script(base, layers, width)
    return CriticalPathFigures(
        layers=layers, width=width, latency=latency, server=server,
        editgraph=walls["editgraph"], first_use=first_use, hand_written=walls["hand-written"],
        hand_aiohttp=walls["aiohttp"], sequential=sequential,
        engine_cpu_per_edit_ms=statistics.median(cpu) / (layers * width) * 1000,
        fake_cpu_per_call_ms=fake_cpu * 1000,
    )


def median(values: list[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


#: One side of ``--against``: a child that imports editgraph from the tree on its
#: PYTHONPATH and, per "go" line on stdin, runs the layered graph (nothing cached for it)
#: against the server at ``base_url``, on a cache directory made by its first run:
#: wall over the bound and CPU ms per edit.
_AGAINST_CHILD = """
import io, json, logging, sys, time
from pathlib import Path
from PIL import Image
import editgraph as eg

""" + CHILD_GRAPH + """
logging.getLogger("stamina").setLevel(logging.ERROR)
base, layers, width, latency, cache, side = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                             float(sys.argv[4]), Path(sys.argv[5]), sys.argv[6])
def once(salt):
    provider = eg.providers.Together(api_key="bench", base_url=base)
    g = graph(cache, layers, width, png(salt))
    wall, cpu = time.perf_counter(), time.process_time()
    g.run(provider=provider, progress=False)
    return time.perf_counter() - wall, time.process_time() - cpu
once(5000 if side == "A" else 6000)
print(json.dumps({"editgraph": eg.__file__}), flush=True)
salt = 7000 if side == "A" else 9000
for line in sys.stdin:
    salt += 1
    wall, cpu = once(salt)
    print(json.dumps({"ratio": wall / (layers * latency),
                      "cpu": cpu / (layers * width) * 1000}), flush=True)
"""


def editgraph_against(tree: Path, *, layers: int = 4, width: int = 16, latency: float = 0.2,
                      rounds: int = 7, server: str = "light") -> dict[str, dict[str, float]]:
    """editgraph on the critical path, this checkout (B) against the editgraph in
    ``tree`` (A: a worktree of another commit), each in its own child process against
    one server child, runs interleaved round by round: medians of wall / bound and CPU
    ms per edit, and the medians of the round-by-round ratios B / A."""
    from .interleave import answers_interleaved, summarised, two_trees

    with tempfile.TemporaryDirectory() as temporary, FakeService(
            server=server, latency=latency) as fake, two_trees(
            tree, _AGAINST_CHILD,
            lambda side: [fake.base_url, str(layers), str(width), str(latency),
                          str(Path(temporary) / side), side],
            cwd=Path(temporary)) as ask:
        figures = answers_interleaved(ask, rounds)
    return summarised(figures, ("ratio", "cpu"))


def main() -> int:
    """``--against TREE``: editgraph's critical path, A/B against another tree."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, required=True, metavar="TREE",
                        help="a worktree of another commit (side A; this checkout is B)")
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    sides = editgraph_against(arguments.against, rounds=arguments.rounds)
    for side in ("A", "B"):
        print(f"{side}: critical path, wall / bound {sides[side]['ratio']:.3f}, "
              f"CPU {sides[side]['cpu']:.3f} ms per edit")
    print(f"B/A (median of round-by-round ratios): wall {sides['B/A']['ratio']:.3f}, "
          f"CPU {sides['B/A']['cpu']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

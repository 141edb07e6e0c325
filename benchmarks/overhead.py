"""What editgraph adds on top of the provider, measured side by side in one run.

1. Wall time over the critical-path bound for a 64-edit DAG of width 16 whose provider
   sleeps 50 ms per call (target <= 1.05).
2. Per-edit time of a fully cached re-run of 1,000 edits (target <= 0.03 ms), against a
   hand-written asyncio + diskcache script doing the same lookups and one raw diskcache
   read per edit (the floor), interleaved round by round (``measure_cached``).
3. Fixed cost of running a one-edit graph that is cached, a new Graph each time
   (target <= 5 ms; ``measure_fixed``).

These are the engine alone, with an in-process provider; ``python -m benchmarks`` uses
them next to the figures measured against FakeTogether.

Run: python benchmarks/overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diskcache
from PIL import Image

import editgraph as eg
from editgraph.nodes import EditNode

from .interleave import answers_interleaved, interleaved, summarised, two_trees

CALL_SECONDS = 0.050


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (seed % 256, (seed // 256) % 256, 90)).save(buffer, "PNG")
    return buffer.getvalue()


_IMAGES = [_png(seed) for seed in range(256)]


class SleepingProvider:
    """Sleeps a fixed time per call and answers one of 256 small PNGs (made up front, so
    the provider's own work is the sleep alone)."""

    name = "sleeping"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        return eg.GeneratedImage(_IMAGES[request.seed % 256], "image/png")


def layered_graph(cache: Path, layers: int, width: int, swatch: bytes) -> eg.Graph:
    """``layers`` x ``width`` edits; each takes one or two edits of the layer above."""
    g = eg.Graph(cache_dir=cache, concurrency=width, width=256, height=256)
    source = g.image(swatch, name="source")
    above = [source] * width
    for layer in range(layers):
        row = []
        for column in range(width):
            refs = [above[column]]
            if layer and column % 2:
                refs.append(above[column - 1])
            row.append(g.edit(f"layer {layer} column {column}", refs=refs,
                              name=f"e{layer}_{column}"))
        above = row
    return g


def critical_path_ratio(
    root: Path, seconds: float = CALL_SECONDS, layers: int = 4, width: int = 16,
    repeats: int = 1,
) -> tuple[float, float, int]:
    """Wall over ``layers x seconds`` for the layered graph on an existing cache directory
    (median wall of ``repeats`` runs, each of a graph nothing is cached for)."""
    layered_graph(root / "dag", 1, 1, _png(2)).run(provider=SleepingProvider(0), progress=False)
    walls, calls = [], 0
    for repeat in range(repeats):
        g = layered_graph(root / "dag", layers, width, _png(100 + repeat))
        provider = SleepingProvider(seconds)
        started = time.perf_counter()
        g.run(provider=provider, progress=False)
        walls.append(time.perf_counter() - started)
        calls += provider.calls
    wall = statistics.median(walls)
    bound = layers * seconds
    return wall / bound, wall, calls


def cached_per_edit(root: Path, edits: int = 1000) -> tuple[float, float]:
    """Best and median ms per edit of a fully cached re-run of ``edits`` edits."""
    g = eg.Graph(cache_dir=root / "wide", concurrency=64, width=256, height=256)
    source = g.image(_png(2), name="source")
    previous = source
    for index in range(edits):  # chains of 10, fanned out from the source
        refs = [source if index % 10 == 0 else previous]
        previous = g.edit(f"edit {index}", refs=refs, name=f"n{index}")
    provider = SleepingProvider(0.0)
    g.run(provider=provider, progress=False)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        run = g.run(provider=provider, progress=False)
        timings.append(time.perf_counter() - started)
        assert all(result.cached for result in run.values())
    best = min(timings)
    return best / edits * 1000, statistics.median(timings) / edits * 1000


def chains_graph(root: Path, edits: int = 1000) -> eg.Graph:
    """``edits`` edits in chains of 10 fanned out from one source."""
    g = eg.Graph(cache_dir=root, concurrency=64, width=256, height=256)
    source = g.image(_png(2), name="source")
    previous = source
    for index in range(edits):
        refs = [source if index % 10 == 0 else previous]
        previous = g.edit(f"edit {index}", refs=refs, name=f"n{index}")
    return g


def cached_graph(root: Path, edits: int = 1000) -> tuple[eg.Graph, SleepingProvider]:
    """``chains_graph``, run once (so cached), and its provider."""
    g = chains_graph(root, edits)
    provider = SleepingProvider(0.0)
    g.run(provider=provider, progress=False)
    return g, provider


@dataclass(frozen=True)
class CachedFigures:
    """ms per edit of a cached re-run, round by round (A and B interleaved)."""

    edits: int
    editgraph: list[float]
    hand_written: list[float]
    floor: list[float]
    #: The same rows read in batches (SELECTs of 100 names, records then images), as
    #: editgraph reads a layer: not the floor's definition, printed beside it.
    batched: list[float] = field(default_factory=list)


def _hand_written_plan(g: eg.Graph, provider: str) -> list[tuple[str, dict[str, Any], int]]:
    """What a hand-written script knows of the graph: per edit (in order) its prompt
    and parameters, and the index of its input (-1: the source)."""
    names = list(g)
    order = {name: index for index, name in enumerate(name for name in names if name != "source")}
    plan = []
    for node in g._edits.values():
        assert isinstance(node, EditNode)
        parameters = {k: v for k, v in node.parameters.items() if k != "seed"}
        (reference,) = node.references
        plan.append((node.prompt, parameters, order.get(reference, -1)))
    return plan


def hand_written_cached(directory: Path, plan: list[tuple[str, dict[str, Any], int]],
                        source_hash: str, provider: str, model: str) -> float:
    """ms per edit of a hand-written asyncio + diskcache script doing the same lookups:
    per edit, its key (two canonical-JSON sha256s: the seed derived from the unseeded
    key), its record read and parsed, its image read and checked against its hash."""

    def key_of(material: dict[str, Any]) -> str:
        text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    async def rerun(cache: diskcache.Cache) -> int:
        outputs: list[str] = []
        for prompt, parameters, reference in plan:
            material = {"schema": 1, "provider": provider, "model": model, "prompt": prompt,
                        "parameters": parameters, "seed": None,
                        "references": [source_hash if reference < 0 else outputs[reference]]}
            material["seed"] = int(key_of(material)[:16], 16) % 2**31
            record = json.loads(cache.get("record:" + key_of(material)))
            data = cache.get("blob:" + record["output_hash"])
            assert hashlib.sha256(data).hexdigest() == record["output_hash"]
            outputs.append(record["output_hash"])
        return len(outputs)

    with diskcache.Cache(str(directory)) as cache:
        cache.get("warm")
        started = time.perf_counter()
        done = asyncio.run(rerun(cache))
        return (time.perf_counter() - started) / done * 1000


def raw_reads(directory: Path, names: list[str]) -> float:
    """ms per read of one diskcache ``get`` (the floor of a cached edit)."""
    with diskcache.Cache(str(directory)) as cache:
        cache.get("warm")
        started = time.perf_counter()
        for name in names:
            cache.get(name)
        return (time.perf_counter() - started) / len(names) * 1000


def batched_reads(directory: Path, records: list[str], blobs: list[str],
                  per: int = 100) -> float:
    """ms per edit of reading ``records`` and then ``blobs`` (their rows, undecoded) in
    SELECTs of ``per`` names on diskcache's table, as a batched lookup does."""
    with diskcache.Cache(str(directory)) as cache:
        cache.get("warm")
        started = time.perf_counter()
        for names in (records, blobs):
            for start in range(0, len(names), per):
                chunk = names[start : start + per]
                cache._sql(
                    "SELECT key, mode, filename, value FROM Cache WHERE key IN "
                    f"({','.join('?' * len(chunk))}) AND raw = 1", chunk,
                ).fetchall()
        return (time.perf_counter() - started) / len(records) * 1000


def measure_cached(root: Path, edits: int = 1000, rounds: int = 7) -> CachedFigures:
    """A cached re-run of ``edits`` edits by editgraph and by a hand-written script, and
    one raw read per edit, interleaved round by round."""
    g, provider = cached_graph(root, edits)
    first = g.run(provider=provider, progress=False)
    names = ["record:" + result.key for result in first.values()]
    blobs = list(dict.fromkeys("blob:" + result.output_hash for result in first.values()))
    source = g._sources["source"]
    plan = _hand_written_plan(g, provider.name)
    model = next(iter(first.values())).request.model
    del first
    # The script and the floor read a copy: opening a diskcache writes its settings,
    # which would make editgraph's connection re-read its pages.
    copy = root.with_name(root.name + "-copy")
    shutil.copytree(root, copy)

    def editgraph_run() -> float:
        started = time.perf_counter()
        run = g.run(provider=provider, progress=False)
        elapsed = time.perf_counter() - started
        assert len(run) == edits and all(result.cached for result in run.values())
        return elapsed / edits * 1000

    values = interleaved({
        "editgraph": editgraph_run,
        "hand-written": lambda: hand_written_cached(copy, plan, source.hash, provider.name, model),
        "floor": lambda: raw_reads(copy, names),
        "batched": lambda: batched_reads(copy, names, blobs),
    }, rounds)
    return CachedFigures(edits, values["editgraph"], values["hand-written"], values["floor"],
                         values["batched"])


def _one_edit(cache: Path) -> eg.Graph:
    g = eg.Graph(cache_dir=cache, width=256, height=256)
    g.edit(f"recolour {g.image(_png(3), name='source')}", name="one")
    return g


@dataclass(frozen=True)
class FixedFigures:
    """ms of a cached one-edit run, round by round (interleaved): editgraph with a new
    Graph each time (so a new store), the same reusing its Graph, a hand-written script
    (open the diskcache, asyncio.run one lookup), and one raw read on an open cache."""

    editgraph: list[float]
    reused: list[float]
    hand_written: list[float]
    floor: list[float]


def measure_fixed(root: Path, rounds: int = 21) -> FixedFigures:
    """The one-edit cached run's figures, interleaved round by round."""
    cache = root / "one"
    provider = SleepingProvider(0.0)
    g = _one_edit(cache)
    result = g.run(provider=provider, progress=False)["one"]
    name, output = "record:" + result.key, result.output_hash
    del result
    copy = root / "one-copy"  # see measure_cached
    shutil.copytree(cache, copy)

    def rebuilt() -> float:
        started = time.perf_counter()
        _one_edit(cache).run(provider=provider, progress=False)
        return (time.perf_counter() - started) * 1000

    def reused() -> float:
        started = time.perf_counter()
        g.run(provider=provider, progress=False)
        return (time.perf_counter() - started) * 1000

    def hand_written() -> float:
        async def lookup(opened: diskcache.Cache) -> bool:
            record = json.loads(opened.get(name))
            data = opened.get("blob:" + record["output_hash"])
            return bool(hashlib.sha256(data).hexdigest() == output)

        started = time.perf_counter()
        with diskcache.Cache(str(copy)) as opened:
            assert asyncio.run(lookup(opened))
        return (time.perf_counter() - started) * 1000

    with diskcache.Cache(str(copy)) as opened:
        opened.get(name)

        def floor() -> float:
            started = time.perf_counter()
            opened.get(name)
            return (time.perf_counter() - started) * 1000

        values = interleaved({"editgraph": rebuilt, "reused": reused,
                              "hand-written": hand_written, "floor": floor}, rounds)
    return FixedFigures(values["editgraph"], values["reused"], values["hand-written"],
                        values["floor"])


def fixed_cost(root: Path, *, rebuild: bool = False) -> float:
    """Median ms of a cached one-edit run; with ``rebuild``, a new Graph (and so a new
    store connection) each time, as re-running a notebook cell or a script does."""
    g = _one_edit(root / "one")
    provider = SleepingProvider(0.0)
    g.run(provider=provider, progress=False)
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        if rebuild:
            g = _one_edit(root / "one")
        g.run(provider=provider, progress=False)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


#: ``_png`` and ``layered_graph`` as the ``--against`` children define them (a child runs
#: another tree's editgraph, not this module): ``png(seed)`` and
#: ``graph(cache, layers, width, swatch)``, after ``import io``, PIL's ``Image`` and
#: ``editgraph as eg``.
CHILD_GRAPH = """
def png(seed):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (seed % 256, (seed // 256) % 256, 90)).save(buffer, "PNG")
    return buffer.getvalue()

def graph(cache, layers, width, swatch):
    g = eg.Graph(cache_dir=cache, concurrency=width, width=256, height=256)
    above = [g.image(swatch, name="source")] * width
    for layer in range(layers):
        row = []
        for column in range(width):
            refs = [above[column]]
            if layer and column % 2:
                refs.append(above[column - 1])
            row.append(g.edit(f"layer {layer} column {column}", refs=refs,
                              name=f"e{layer}_{column}"))
        above = row
    return g
"""


#: One side of ``--against``: a child that imports editgraph from the tree on its
#: PYTHONPATH, runs the layered graph once on a new cache directory (made and warm),
#: then one run per line on stdin of a graph nothing is cached for: "go" times it (wall
#: over the bound, CPU ms per edit, ms from ``run()`` to the first provider call); "count" counts the SQLite statements the store's
#: writer thread runs (``execute`` and ``executemany`` calls), per edit generated.
_ENGINE_CHILD = """
import asyncio, io, json, sqlite3, sys, threading, time
from pathlib import Path
from PIL import Image

counts = {}
counting = [False]

class Counting(sqlite3.Connection):
    def execute(self, *args, **kwargs):
        if counting[0] and threading.current_thread().name.startswith("editgraph writer"):
            counts["writer"] = counts.get("writer", 0) + 1
        return super().execute(*args, **kwargs)
    def executemany(self, *args, **kwargs):
        if counting[0] and threading.current_thread().name.startswith("editgraph writer"):
            counts["writer"] = counts.get("writer", 0) + 1
        return super().executemany(*args, **kwargs)

_connect = sqlite3.connect
def connect(*args, **kwargs):
    return _connect(*args, factory=Counting, **kwargs)
sqlite3.connect = connect

import editgraph as eg

""" + CHILD_GRAPH + """
IMAGES = [png(seed) for seed in range(256)]

class Sleeping:
    name = "sleeping"
    def __init__(self, seconds):
        self.seconds = seconds
        self.first = None
    async def generate(self, request):
        if self.first is None:
            self.first = time.perf_counter()
        await asyncio.sleep(self.seconds)
        return eg.GeneratedImage(IMAGES[request.seed % 256], "image/png")

layers, width, seconds, cache = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                                 Path(sys.argv[4]))
graph(cache, 1, 1, png(2)).run(provider=Sleeping(0), progress=False)
print(json.dumps({"editgraph": eg.__file__}), flush=True)
salt = 100
for line in sys.stdin:
    salt += 1
    g = graph(cache, layers, width, png(salt))
    if line.strip() == "count":
        counts.clear()
        counting[0] = True
        g.run(provider=Sleeping(seconds), progress=False)
        counting[0] = False
        print(json.dumps({"statements": counts.get("writer", 0) / (layers * width)}),
              flush=True)
        continue
    provider = Sleeping(seconds)
    wall, cpu = time.perf_counter(), time.process_time()
    g.run(provider=provider, progress=False)
    first = (provider.first - wall) * 1000
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"ratio": wall / (layers * seconds), "first": first,
                      "cpu": cpu / (layers * width) * 1000}), flush=True)
"""


def engine_against(tree: Path, *, layers: int = 4, width: int = 16, seconds: float = 0.2,
                   rounds: int = 9) -> dict[str, dict[str, float]]:
    """The engine alone (the layered graph, an in-process provider sleeping ``seconds``)
    of this checkout (B) against the editgraph in ``tree`` (A: a worktree of another
    commit), each side in its own child process, runs interleaved round by round:
    medians of wall / bound, CPU ms per edit and ms from ``run()`` to the first
    provider call, the medians of the round-by-round
    ratios B / A, and each side's SQLite statements per generated edit in its store's
    writer thread (one counted run, apart from the timed ones)."""
    with tempfile.TemporaryDirectory() as temporary, two_trees(
            tree, _ENGINE_CHILD,
            lambda side: [str(layers), str(width), str(seconds), str(Path(temporary) / side)],
            cwd=Path(temporary)) as ask:
        statements = {side: ask(side, "count")["statements"] for side in ("A", "B")}
        figures = answers_interleaved(ask, rounds)
    measured = ("ratio", "cpu", "first")
    summary = summarised(figures, measured)
    for side in ("A", "B"):
        summary[side]["statements"] = statements[side]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, default=None, metavar="TREE",
                        help="only the engine alone, A/B against the editgraph in TREE (a "
                        "worktree of another commit), in child processes, interleaved")
    parser.add_argument("--rounds", type=int, default=9)
    arguments = parser.parse_args()
    if arguments.against is not None:
        sides = engine_against(arguments.against, rounds=arguments.rounds)
        for side in ("A", "B"):
            print(f"{side}: engine alone, wall / bound {sides[side]['ratio']:.3f}, "
                  f"CPU {sides[side]['cpu']:.3f} ms per edit, first call "
                  f"{sides[side]['first']:.2f} ms after run(), "
                  f"{sides[side]['statements']:.2f} writer statements per edit")
        print(f"B/A (median of round-by-round ratios): wall {sides['B/A']['ratio']:.3f}, "
              f"CPU {sides['B/A']['cpu']:.3f}, first call {sides['B/A']['first']:.3f}")
        return 0
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        ratio, wall, calls = critical_path_ratio(root)
        per_edit, per_edit_median = cached_per_edit(root)
        fixed = fixed_cost(root)
    rows = [
        ("wall / critical path (64 edits, width 16, 50 ms)", f"{ratio:.3f}", "<= 1.05",
         ratio <= 1.05, f"{wall * 1000:.0f} ms for {calls} calls"),
        ("cached re-run, ms per edit (1,000 edits)", f"{per_edit:.4f}", "<= 0.1",
         per_edit <= 0.1, f"median {per_edit_median:.4f}"),
        ("fixed cost of a cached one-edit run, ms", f"{fixed:.2f}", "<= 20", fixed <= 20, ""),
    ]
    print(f"{'measure':<52} {'value':>9} {'target':>8}  ok  notes")
    for label, value, target, ok, notes in rows:
        print(f"{label:<52} {value:>9} {target:>8}  {'yes' if ok else 'NO ':<3} {notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the engine alone spends its wall over the bound: a timeline of each layer.

The layered graph (``overhead.layered_graph``: 4 layers of 16, an in-process provider
sleeping 200 ms) is run ``--runs`` times on a warm cache folder; per run, each moment
is taken from the provider (a call starts, its sleep ends) and from the store's writer
(a group's commit starts and ends, its outcome reaches the loop). The median of each
phase, in ms:

- ``start``: from ``run()`` to the first call;
- per layer boundary: ``ends`` (the first result of a layer in, to the commit that
  keeps the last of them starting), ``commit`` (that commit, in the writer thread),
  ``resume`` (its outcome on the loop, to the last call of the next layer leaving);
- ``tail``: from the last result in to ``run()`` returning.

Their sum is the wall over the bound (the rest is the sleeps' own overshoot). Main
thread CPU and writer thread CPU per run are printed too (``time.thread_time``).

Run: python -m benchmarks.timeline [--runs 9]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import editgraph as eg
from editgraph.stores import writer

from .overhead import _IMAGES, _png, layered_graph

LAYERS, WIDTH, SECONDS = 4, 16, 0.2


class _Timed:
    """The sleeping provider, noting when each call starts and ends."""

    name = "sleeping"

    def __init__(self, moments: list[tuple[float, str, str]]) -> None:
        self.moments = moments

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        self.moments.append((time.perf_counter(), "start", request.node))
        await asyncio.sleep(SECONDS)
        self.moments.append((time.perf_counter(), "end", request.node))
        return eg.GeneratedImage(_IMAGES[request.seed % 256], "image/png")


def _layer(node: str) -> int:
    return int(node[1 : node.index("_")])  # "e<layer>_<column>"


def measure(runs: int = 9) -> dict[str, list[float]]:
    """Each phase's ms, run by run (see the module's docstring)."""
    moments: list[tuple[float, str, str]] = []
    writer_cpu = [0.0]
    commit, resolve = writer._commit, writer._resolve

    def timed_commit(store: Any, writes: Any) -> int:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return commit(store, writes)
        finally:
            writer_cpu[0] += time.thread_time() - cpu
            moments.append((started, "commit+", str(len(writes))))
            moments.append((time.perf_counter(), "commit-", str(len(writes))))

    def timed_resolve(group: Any) -> None:
        moments.append((time.perf_counter(), "resolve", ""))
        resolve(group)

    phases: dict[str, list[float]] = {}
    writer._commit, writer._resolve = timed_commit, timed_resolve
    try:
        with tempfile.TemporaryDirectory() as directory:
            cache = Path(directory) / "cache"
            layered_graph(cache, 1, 1, _png(2)).run(provider=_Timed([]), progress=False)
            for salt in range(runs):
                graph = layered_graph(cache, LAYERS, WIDTH, _png(500 + salt))
                moments.clear()
                writer_cpu[0] = 0.0
                main_cpu = time.thread_time()
                began = time.perf_counter()
                graph.run(provider=_Timed(moments), progress=False)
                returned = time.perf_counter()
                figures = _phases(sorted(moments), began, returned)
                figures["main thread CPU"] = (time.thread_time() - main_cpu) * 1000
                figures["writer CPU"] = writer_cpu[0] * 1000
                figures["wall over the bound"] = (returned - began - LAYERS * SECONDS) * 1000
                for name, value in figures.items():
                    phases.setdefault(name, []).append(value)
    finally:
        writer._commit, writer._resolve = commit, resolve
    return phases


def _phases(moments: list[tuple[float, str, str]], began: float,
            returned: float) -> dict[str, float]:
    starts: dict[int, list[float]] = {}
    ends: dict[int, list[float]] = {}
    for moment, kind, node in moments:
        if kind in ("start", "end"):
            (starts if kind == "start" else ends).setdefault(_layer(node), []).append(moment)
    figures = {"start": (min(starts[0]) - began) * 1000}
    commits = [(moment, kind) for moment, kind, _ in moments if kind.startswith("commit")]
    resolves = [moment for moment, kind, _ in moments if kind == "resolve"]
    for layer in range(LAYERS - 1):
        first_end, last_end = min(ends[layer]), max(ends[layer])
        last_start = max(starts[layer + 1])
        # The commit that kept the layer's last result: the last one to start before
        # the next layer's last call left.
        opened = [m for m, kind in commits if kind == "commit+" and last_end <= m < last_start]
        closed = [m for m, kind in commits if kind == "commit-" and opened
                  and opened[-1] <= m < last_start]
        resolved = [m for m in resolves if closed and closed[0] <= m < last_start]
        if not (opened and closed and resolved):
            continue
        name = f"layer {layer}->{layer + 1}"
        figures[f"{name} ends"] = (opened[-1] - first_end) * 1000
        figures[f"{name} commit"] = (closed[0] - opened[-1]) * 1000
        figures[f"{name} resume"] = (last_start - resolved[0]) * 1000
    figures["tail"] = (returned - max(ends[LAYERS - 1])) * 1000
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    arguments = parser.parse_args()
    phases = measure(arguments.runs)
    print(f"{'phase (ms, median of ' + str(arguments.runs) + ' runs)':<44} {'median':>8} "
          f"{'min':>8} {'max':>8}")
    for name, values in phases.items():
        print(f"{name:<44} {statistics.median(values):8.2f} {min(values):8.2f} "
              f"{max(values):8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

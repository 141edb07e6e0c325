"""What editgraph adds on top of the provider, measured side by side in one run.

1. Wall time over the critical-path bound for a 64-edit DAG of width 16 whose provider
   sleeps 50 ms per call (target <= 1.05).
2. Per-edit time of a fully cached re-run of 1,000 edits (target <= 0.1 ms).
3. Fixed cost of running a one-edit graph that is cached (target <= 20 ms).

These are the engine alone, with an in-process provider; ``python -m benchmarks`` uses
them next to the figures measured against FakeTogether.

Run: python benchmarks/overhead.py
"""

from __future__ import annotations

import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

import editgraph as eg

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


def _one_edit(cache: Path) -> eg.Graph:
    g = eg.Graph(cache_dir=cache, width=256, height=256)
    g.edit(f"recolour {g.image(_png(3), name='source')}", name="one")
    return g


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


def main() -> int:
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

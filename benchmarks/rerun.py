"""A cached re-run of 1,000 edits (``benchmarks.overhead.measure_cached``'s graph), this
checkout (B) against the editgraph in another tree (A), interleaved.

``python -m benchmarks.rerun --against TREE [--rounds N] [--runs K]``

Each side is a child process that builds and runs the graph once (so it is cached), then
answers each "go" with the median wall and CPU ms per edit of K re-runs; the rounds
alternate A and B. Printed: the medians and the medians of the round-by-round ratios B/A.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .interleave import answers_interleaved, summarised, two_trees

_CHILD = """
import json, statistics, sys, time
from pathlib import Path
import editgraph as eg
from benchmarks.overhead import cached_graph
edits, runs, root = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
g, provider = cached_graph(root / "cache", edits)
g.run(provider=provider, progress=False)
print(json.dumps({"editgraph": eg.__file__}), flush=True)
for line in sys.stdin:
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        run = g.run(provider=provider, progress=False)
        walls.append((time.perf_counter() - wall) / edits * 1000)
        cpus.append((time.process_time() - cpu) / edits * 1000)
        assert len(run) == edits and all(result.cached for result in run.values())
        del run
    print(json.dumps({"wall": statistics.median(walls), "cpu": statistics.median(cpus)}),
          flush=True)
"""


def against(tree: Path, edits: int = 1000, rounds: int = 11, runs: int = 3
            ) -> dict[str, dict[str, float]]:
    """Medians of wall and CPU ms per edit of each side, and of the ratios B/A."""
    with tempfile.TemporaryDirectory() as temporary:
        for side in ("A", "B"):
            (Path(temporary) / side).mkdir()
        with two_trees(tree, _CHILD,
                       lambda side: [str(edits), str(runs), str(Path(temporary) / side)]) as ask:
            figures = answers_interleaved(ask, rounds)
    return summarised(figures, ("wall", "cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, required=True, metavar="TREE")
    parser.add_argument("--edits", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    sides = against(arguments.against, arguments.edits, arguments.rounds, arguments.runs)
    for side in ("A", "B"):
        print(f"{side}: cached re-run, {arguments.edits} edits: {sides[side]['wall']:.4f} "
              f"ms/edit wall, {sides[side]['cpu']:.4f} ms/edit CPU")
    print(f"B/A (median of round-by-round ratios): wall {sides['B/A']['wall']:.3f}, "
          f"CPU {sides['B/A']['cpu']:.3f}")


if __name__ == "__main__":
    main()

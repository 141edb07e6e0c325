"""Batches: overhead per item on a fully cached pass, and peak memory over many items.

``python -m benchmarks.batch [--items N] [--memory-items N ...] [--full]``

- Cached pass: N one-edit items (distinct small PNG inputs) already in the cache; the
  second pass is timed per item. Beside it, interleaved run by run, the floor: a
  hand-written loop doing only what a cached item cannot avoid (read the input, hash it,
  one diskcache read of the record, write the output file, append a journal line).
- ``--against TREE``: the cached pass of this checkout (B) and of the editgraph in TREE
  (A, e.g. ``git worktree add --detach ../base main``), each in a child process, passes
  interleaved round by round; wall and CPU per item and the B/A ratios.
- Memory: a child process runs a batch of N one-edit items (an instant provider, one
  small input, a distinct prompt per item) and reports its peak RSS; flat in N means
  the batch streams. 2,000 and 20,000 items by default; ``--full`` adds 100,000 (the
  target's size; about ten minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import diskcache
from PIL import Image

import editgraph as eg

from .interleave import answers_interleaved, interleaved, summarised, two_trees
from .memory import peak_rss_mb

RECIPE = '''
from pathlib import Path
import editgraph as eg

def recipe(photo: Path, colour: str = "#112233") -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=256, height=256)
    product = g.image(photo, name="product")
    g.edit(f"Put {product} on a backdrop in color {colour}", name="cutout")
    return g
'''


class InstantProvider:
    """Answers at once with a tiny PNG that depends on the request."""

    name = "instant"

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        await asyncio.sleep(0)
        digest = hashlib.sha256(request.prompt.encode()).digest()
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), tuple(digest[:3])).save(buffer, "PNG")
        return eg.GeneratedImage(buffer.getvalue(), "image/png")


def _inputs(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        colour = (number % 256, (number // 256) % 256, 77)
        Image.new("RGB", (32, 24), colour).save(folder / f"item{number:05d}.png")
    return folder


def _floor_pass(inputs: Path, cache: diskcache.Cache, out: Path) -> float:
    """What a cached item cannot avoid, written by hand; seconds for the whole pass."""
    started = time.perf_counter()
    with open(out / "floor.jsonl", "a") as journal:
        for path in sorted(inputs.iterdir()):
            data = path.read_bytes()
            key = hashlib.sha256(data).hexdigest()
            record = cache.get(key)
            (out / f"{path.stem}.png").write_bytes(record if record is not None else data)
            journal.write(json.dumps({"id": path.stem, "status": "done"}) + "\n")
    return time.perf_counter() - started


def cached_pass(root: Path, items: int, repeats: int = 3) -> tuple[float, float]:
    """(batch ms per item, floor ms per item): medians, A and B interleaved run by run."""
    inputs = _inputs(root / "inputs", items)
    recipe = root / "recipe.py"
    recipe.write_text(RECIPE)
    provider = InstantProvider()
    eg.batch(recipe, inputs, out=root / "out", provider=provider, cache=root / "cache")
    floor_cache = diskcache.Cache(str(root / "floor-cache"))
    for path in sorted(inputs.iterdir()):
        floor_cache.set(hashlib.sha256(path.read_bytes()).hexdigest(), path.read_bytes())
    (root / "floor-out").mkdir()

    def ours() -> float:
        started = time.perf_counter()
        result = eg.batch(recipe, inputs, out=root / "out", provider=provider,
                          cache=root / "cache")
        assert result.summary.cached == items, result.summary
        return time.perf_counter() - started

    figures = interleaved(
        {"batch": ours, "floor": lambda: _floor_pass(inputs, floor_cache, root / "floor-out")},
        repeats,
    )
    floor_cache.close()
    return (statistics.median(figures["batch"]) / items * 1000,
            statistics.median(figures["floor"]) / items * 1000)


#: One side of ``--against``: a child that imports editgraph from the tree on its
#: PYTHONPATH, fills a cached batch, then runs one timed pass per line on stdin.
_PASS_CHILD = """
import asyncio, hashlib, io, json, sys, tempfile, time
from pathlib import Path
from PIL import Image
import editgraph as eg

class Instant:
    name = "instant"
    async def generate(self, request):
        await asyncio.sleep(0)
        digest = hashlib.sha256(request.prompt.encode()).digest()
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), tuple(digest[:3])).save(buffer, "PNG")
        return eg.GeneratedImage(buffer.getvalue(), "image/png")

count, root = int(sys.argv[1]), Path(sys.argv[2])
inputs = root / "inputs"
inputs.mkdir()
for number in range(count):
    colour = (number % 256, (number // 256) % 256, 77)
    Image.new("RGB", (32, 24), colour).save(inputs / f"item{number:05d}.png")
recipe = root / "recipe.py"
recipe.write_text(sys.stdin.readline().encode().decode("unicode_escape"))
options = dict(out=root / "out", provider=Instant(), cache=root / "cache")
eg.batch(recipe, inputs, **options)
print(json.dumps({"editgraph": eg.__file__}), flush=True)
for line in sys.stdin:
    wall, cpu = time.perf_counter(), time.process_time()
    result = eg.batch(recipe, inputs, **options)
    assert result.summary.cached == count, result.summary
    print(json.dumps({"wall": (time.perf_counter() - wall) / count * 1000,
                      "cpu": (time.process_time() - cpu) / count * 1000}), flush=True)
"""


def against(tree: Path, items: int, rounds: int = 7) -> dict[str, dict[str, float]]:
    """The cached pass of this checkout (B) against the editgraph in ``tree`` (A: a
    worktree of another commit), each in its own child process, passes interleaved
    round by round: medians of wall and CPU ms per item, and the medians of the
    round-by-round ratios B / A."""
    with tempfile.TemporaryDirectory() as temporary:
        for side in ("A", "B"):
            (Path(temporary) / side).mkdir()
        with two_trees(tree, _PASS_CHILD, lambda side: [str(items), str(Path(temporary) / side)],
                       cwd=Path(temporary),
                       first_line=RECIPE.encode("unicode_escape").decode()) as ask:
            figures = answers_interleaved(ask, rounds)
    return summarised(figures, ("wall", "cpu"))


def _rows(photo: str, count: int) -> Iterator[dict[str, object]]:
    for number in range(count):
        yield {"photo": Path(photo), "colour": f"#{number:06x}"}


def _memory_child(count: int) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        photo = root / "photo.png"
        Image.new("RGB", (32, 24), (10, 20, 30)).save(photo)
        recipe = root / "recipe.py"
        recipe.write_text(RECIPE)
        started = time.perf_counter()
        result = eg.batch(recipe, _rows(str(photo), count), out=root / "out",
                          provider=InstantProvider(), cache=root / "cache", concurrency=16)
        elapsed = time.perf_counter() - started
        assert result.summary.done == count, result.summary
        peak_mb = peak_rss_mb()
        print(json.dumps({"items": count, "peak_mb": peak_mb, "seconds": elapsed}))


def peak_memory(count: int) -> dict[str, float]:
    """Peak RSS (MB) and seconds of a child process running a batch of ``count`` items."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.batch", "--memory-child", str(count)],
        capture_output=True, text=True, check=True,
    )
    figures: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--memory-items", type=int, nargs="*", default=[2000, 20000])
    parser.add_argument("--full", action="store_true",
                        help="also measure the target's size, 100,000 items")
    parser.add_argument("--against", type=Path, default=None, metavar="TREE",
                        help="only the cached pass, A/B against the editgraph in TREE (a "
                        "worktree of another commit), in child processes, interleaved")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.memory_child is not None:
        _memory_child(arguments.memory_child)
        return
    if arguments.against is not None:
        sides = against(arguments.against, arguments.items)
        for side in ("A", "B"):
            print(f"{side}: cached pass, {arguments.items} items: {sides[side]['wall']:.3f} "
                  f"ms/item wall, {sides[side]['cpu']:.3f} ms/item CPU")
        print(f"B/A (median of round-by-round ratios): wall {sides['B/A']['wall']:.3f}, "
              f"CPU {sides['B/A']['cpu']:.3f}")
        return
    with tempfile.TemporaryDirectory() as temporary:
        ours, floor = cached_pass(Path(temporary), arguments.items)
    print(f"cached pass, {arguments.items} items: {ours:.3f} ms/item (target <= 1 ms); "
          f"floor {floor:.3f} ms/item; ratio {ours / floor:.1f}")
    for count in arguments.memory_items + ([100_000] if arguments.full else []):
        figures = peak_memory(count)
        print(f"batch of {count} one-edit items: peak RSS {figures['peak_mb']:.0f} MB "
              f"(target < 400 MB at 100,000), {figures['seconds'] / count * 1000:.2f} ms/item")


if __name__ == "__main__":
    main()

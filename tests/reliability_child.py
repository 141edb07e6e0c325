"""Graphs for the reliability tests, and the child process those tests start and kill.

The test process imports the graph builders; the child runs one of them, as a user's
script would, and reports on stdout, one flushed line per event, so that the test can
wait on what the child has done (and kill it at a chosen moment) without sleeping:

    python tests/reliability_child.py run GRAPH CACHE_DIR [--wait-go] [--concurrency N]
        Runs GRAPH ("mixed" or "small") with eg.providers.Together (TOGETHER_API_KEY and
        TOGETHER_BASE_URL from the environment). Prints "identity {pid, pid_ns}" and
        "ready", waits for a line on
        stdin when --wait-go is given, then "done NAME CACHED OUTPUT_HASH" as each edit
        is durably finished, "failed NAME" per failed edit, and "finished" at the end.

    python tests/reliability_child.py save CACHE_DIR
        Builds the "noise" graph (large, incompressible PNGs from a local provider),
        runs it, prints "ready", then for each folder path read from stdin saves the run
        there and prints "saved".
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
from pathlib import Path

from PIL import Image

import editgraph as eg
from editgraph.execute import execute
from editgraph.store import DiskStore

#: Every edit of the reliability graphs is this small: the fake renders it in a few ms.
SIZE = 256
#: The crash test's edits: large enough that the cache keeps their images as files.
CRASH_SIZE = 1024


def source_png(colour: tuple[int, int, int]) -> bytes:
    """A small solid-colour PNG source."""
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def mixed_graph(
    edits: int, *, seed: int = 2024, size: int = SIZE, cache_dir: str | Path | None = None
) -> eg.Graph:
    """``edits`` edits over three sources: chains, wide fan-outs and merges, mixed.

    The shape is drawn from ``random.Random(seed)``, so the test and a child process
    build the same graph. Every prompt names its edit, so each is unique. At ``size``
    1024 the fake's images pass diskcache's 32 KB threshold and are kept as files.
    """
    rng = random.Random(seed)
    graph = eg.Graph(cache_dir=cache_dir, width=size, height=size)
    nodes = [
        graph.image(source_png(colour), name=name)
        for name, colour in (
            ("car", (200, 30, 30)), ("swatch", (20, 40, 220)), ("sky", (90, 200, 240))
        )
    ]
    hub = nodes[0]
    previous = nodes[0]
    for index in range(edits):
        name = f"e{index:03d}"
        shape = rng.random()
        if shape < 0.4:  # a chain: continue from the previous edit
            refs = [previous]
        elif shape < 0.75:  # fan-out: one more child of the current hub
            refs = [hub]
        else:  # a merge of two or three earlier nodes
            refs = rng.sample(nodes, k=min(len(nodes), rng.choice((2, 3))))
        mentions = " and ".join(f"image {position}" for position in range(1, len(refs) + 1))
        prompt = f"Step {name}: blend {mentions}, variation {index}"
        handle = graph.edit(prompt, refs=refs, name=name)
        assert isinstance(handle, eg.Handle)
        nodes.append(handle)
        previous = handle
        if rng.random() < 0.1:
            hub = handle
    return graph


def small_graph(cache_dir: str | Path | None = None) -> eg.Graph:
    """Twelve edits in three layers: a fan-out from two sources, then chains and a merge."""
    graph = eg.Graph(cache_dir=cache_dir, width=SIZE, height=SIZE)
    car = graph.image(source_png((200, 30, 30)), name="car")
    swatch = graph.image(source_png((20, 40, 220)), name="swatch")
    first = [
        graph.edit(f"Paint {car} like {swatch}, shade {i}", name=f"paint{i}") for i in range(5)
    ]
    second = [
        graph.edit(f"Make {handle} a night scene, take {i}", name=f"night{i}")
        for i, handle in enumerate(first)
    ]
    graph.edit(f"A collage of {second[0]}, {second[1]} and {second[2]}", name="collage")
    graph.edit(f"A poster of {second[3]} next to {second[4]}", name="poster")
    return graph


class NoiseProvider:
    """Large incompressible PNGs (about 11 MB at 1920 x 1920), deterministic per request."""

    name = "noise"

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        """Random pixels seeded by the prompt and seed, stored without compression."""
        rng = random.Random(f"{request.prompt}|{request.seed}")
        pixels = rng.randbytes(request.width * request.height * 3)
        buffer = io.BytesIO()
        Image.frombytes("RGB", (request.width, request.height), pixels).save(
            buffer, format="PNG", compress_level=0
        )
        return eg.GeneratedImage(data=buffer.getvalue(), media_type="image/png")


def noise_graph(cache_dir: str | Path | None = None) -> eg.Graph:
    """Four edits of 1920 x 1920 noise: saving them takes long enough to be interrupted."""
    graph = eg.Graph(cache_dir=cache_dir, provider=NoiseProvider(), width=1920, height=1920,
                     output_format="png")
    car = graph.image(source_png((200, 30, 30)), name="car")
    for index in range(4):
        graph.edit(f"Noise {index} over {car}", name=f"noise{index}")
    return graph


class _Report:
    """A Progress that prints each finished edit: called once its image and record are
    committed to the store (or once it failed)."""

    def advance(self, name: str, cached: bool) -> None:
        """Print one line the test can wait on."""
        print(f"progress {name} {int(cached)}", flush=True)


async def _run(graph_name: str, cache_dir: str, concurrency: int, wait_go: bool) -> int:
    graph = mixed_graph(60, size=CRASH_SIZE) if graph_name == "mixed" else small_graph()
    store = DiskStore(cache_dir)
    provider = eg.providers.Together()
    namespace = os.readlink("/proc/self/ns/pid") if os.path.exists("/proc/self/ns/pid") else None
    print("identity " + json.dumps({"pid": os.getpid(), "pid_ns": namespace}), flush=True)
    print("ready", flush=True)
    if wait_go:
        sys.stdin.readline()
    run = await execute(
        list(graph.edits.values()), graph.sources, provider=provider, store=store,
        concurrency=concurrency, progress=_Report(),
    )
    for name, result in run.items():
        print(f"done {name} {int(result.cached)} {result.output_hash}", flush=True)
    for name in run.failures:
        print(f"failed {name}", flush=True)
    print("finished", flush=True)
    return 1 if run.failures else 0


def _save(cache_dir: str) -> int:
    run = noise_graph(cache_dir).run(progress=False)
    print("ready", flush=True)
    for line in sys.stdin:
        run.save(line.strip())
        print("saved", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "save"])
    parser.add_argument("rest", nargs="+")
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    if args.mode == "save":
        return _save(args.rest[0])
    graph_name, cache_dir = args.rest
    return asyncio.run(_run(graph_name, cache_dir, args.concurrency, args.wait_go))


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory (RSS) of runs of N edits whose images are about 1 MB each.

Each size runs in a fresh child process (``python -m benchmarks.memory N``), so one
size's peak cannot hide another's. The provider is in-process and returns distinct,
incompressible ~1 MB JPEGs (noise, encoded once; a per-edit trailer after the end marker
makes each one's bytes, and so its content hash, unique). The engine must keep images
in the store, not in memory: the peak should be flat as N grows.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import editgraph as eg

_NOISE_SIDE = (1024, 768)


def _noise_jpeg() -> bytes:
    from PIL import Image

    pixels = Image.frombytes("RGB", _NOISE_SIDE, os.urandom(_NOISE_SIDE[0] * _NOISE_SIDE[1] * 3))
    buffer = io.BytesIO()
    pixels.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


class NoiseProvider:
    """Answers every request at once with a distinct ~1 MB JPEG."""

    name = "noise"

    def __init__(self) -> None:
        self._image = _noise_jpeg()
        self.calls = 0

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        self.calls += 1
        await asyncio.sleep(0)
        trailer = f"{request.node}:{request.seed}".encode()
        return eg.GeneratedImage(self._image + trailer, "image/jpeg")


def peak_rss_mb() -> float:
    """This process's peak RSS in MB.

    On Linux, ``VmHWM`` from /proc/self/status: ``ru_maxrss`` carries over the parent's
    peak through fork and exec, so a child started by a big parent (this suite, after
    Prefect's replay) would report the parent's size, not its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _child(edits: int) -> dict[str, float]:
    from .overhead import _png

    provider = NoiseProvider()
    with tempfile.TemporaryDirectory(prefix="editgraph-memory-") as directory:
        graph = eg.Graph(cache_dir=Path(directory), concurrency=16, width=1024, height=768)
        source = graph.image(_png(5), name="source")
        previous = source
        for index in range(edits):  # chains of 10 fanned out from the source
            refs = [source if index % 10 == 0 else previous]
            previous = graph.edit(f"edit {index}", refs=refs, name=f"n{index}")
        before = peak_rss_mb()
        started = time.perf_counter()
        run = graph.run(provider=provider, progress=False)
        seconds = time.perf_counter() - started
        assert len(run) == edits and provider.calls == edits
        image_mb = len(provider._image) / 1e6
        del run
    return {"edits": edits, "peak_mb": peak_rss_mb(), "before_run_mb": before,
            "seconds": seconds, "image_mb": image_mb}


def run_bytes_per_edit(root: Path, edits: int = 2000) -> dict[str, float]:
    """Bytes per edit held by a finished Run (traced allocations freed when it goes),
    for the run that generated the edits and for a cached re-run."""
    import gc
    import tracemalloc

    from .overhead import SleepingProvider, chains_graph

    held = {}
    graph = chains_graph(root, edits)
    provider = SleepingProvider(0.0)
    tracemalloc.start()
    try:
        for label in ("generated", "cached"):
            run = graph.run(provider=provider, progress=False)
            assert len(run) == edits and all(r.cached == (label == "cached") for r in run.values())
            gc.collect()
            with_run = tracemalloc.get_traced_memory()[0]
            del run
            gc.collect()
            held[label] = (with_run - tracemalloc.get_traced_memory()[0]) / edits
    finally:
        tracemalloc.stop()
    return held


def measure(edits: int) -> dict[str, float]:
    """Peak RSS of a run of ``edits`` edits, in a fresh child process."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", str(edits)], check=False, capture_output=True,
        text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent,
    )
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory child for {edits} edits failed: {tail}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]))))

"""Event-loop lag while results are stored, and the cost of a link of a deep chain.

1. Lag: a probe task sleeps 1 ms in a loop and records its largest overshoot, during a
   run of 32 edits in flight whose in-process provider returns distinct ~1 MB JPEGs, all
   finishing together, against a real DiskStore in a temp dir (target <= 10 ms at the
   maximum). Floors, measured interleaved with it: the same probe on an idle loop, and
   with the provider alone (the same 32 calls, no engine, no store).
2. A chain of edits (each takes the one before) with an instant provider: ms per link,
   and store commits per link (counted by a DiskStore whose ``batch`` counts).

Run: python -m benchmarks.loop_lag
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

import editgraph as eg
from editgraph.store import DiskStore

from .interleave import interleaved

EDITS = 32
SIDE = 1024
_counter = itertools.count()


def _noise_jpeg(side: int = SIDE, quality: int = 93) -> bytes:
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


_BASE = _noise_jpeg()


def distinct_jpeg() -> bytes:
    """The ~1 MB base JPEG with a unique comment segment: new bytes (a new hash, a new
    blob) without encoding anew."""
    comment = f"editgraph benchmark {next(_counter)} {time.time_ns()}".encode()
    return _BASE[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + _BASE[2:]


class TogetherProvider:
    """Answers every call at the same moment (when all have arrived), each with its own
    ~1 MB JPEG (made before the run: the provider's own work is nil): the worst case, a
    whole layer finishing together."""

    name = "together-at-once"

    def __init__(self, images: list[bytes]) -> None:
        self.images = images
        self.calls = len(images)
        self._arrived = 0
        self._all_in: asyncio.Event | None = None

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        if self._all_in is None:
            self._all_in = asyncio.Event()
        data = self.images[self._arrived]
        self._arrived += 1
        if self._arrived == self.calls:
            self._all_in.set()
        await self._all_in.wait()
        return eg.GeneratedImage(data, "image/jpeg")


class _Probe:
    """Sleeps 1 ms at a time and keeps the largest overshoot, in seconds."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = False

    async def run(self) -> None:
        while not self._stop:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - started - 0.001)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.ensure_future(self.run())
        await asyncio.sleep(0)
        try:
            yield
        finally:
            self._stop = True
            await task


def _graph(cache: Path, tag: int) -> eg.Graph:
    g = eg.Graph(cache_dir=cache, concurrency=EDITS, width=SIDE, height=SIDE)
    source = g.image(_noise_jpeg(64), name="source")
    for index in range(EDITS):
        g.edit(f"round {tag} edit {index} of {source}", name=f"e{index}")
    return g


def lag_during_run(cache: Path) -> float:
    """Max loop lag (ms) during one run of 32 edits that all finish together."""
    g = _graph(cache, next(_counter))
    probe = _Probe()
    provider = TogetherProvider([distinct_jpeg() for _ in range(EDITS)])

    async def main() -> None:
        async with probe.running():
            run = await g.arun(provider=provider, progress=False)
        assert len(run) == EDITS and not any(result.cached for result in run.values())

    asyncio.run(main())
    return probe.worst * 1000


def lag_provider_alone() -> float:
    """Max loop lag (ms) with the provider alone answering 32 calls (no engine, no store)."""
    probe = _Probe()
    provider = TogetherProvider([distinct_jpeg() for _ in range(EDITS)])
    requests = [eg.EditRequest(node=f"e{index}", model="black-forest-labs/FLUX.2-pro",
                               prompt=f"edit {index}", width=SIDE, height=SIDE, seed=index)
                for index in range(EDITS)]

    async def main() -> None:
        async with probe.running():
            await asyncio.gather(*(provider.generate(request) for request in requests))
            await asyncio.sleep(0.05)

    asyncio.run(main())
    return probe.worst * 1000


def lag_idle(seconds: float = 0.1) -> float:
    """Max loop lag (ms) of the probe on an otherwise idle loop."""
    probe = _Probe()

    async def main() -> None:
        async with probe.running():
            await asyncio.sleep(seconds)

    asyncio.run(main())
    return probe.worst * 1000


@dataclass(frozen=True)
class Lag:
    """Max loop lag (ms) per round: the run, the provider alone, the idle loop."""

    run: list[float]
    provider: list[float]
    idle: list[float]


def measure_lag(root: Path, rounds: int = 5) -> Lag:
    """The three probes, interleaved round by round (A B C, C B A, ...)."""
    cache = root / "lag"
    lag_during_run(cache)  # the database exists before the first measured round
    values = interleaved({"run": lambda: lag_during_run(cache), "provider": lag_provider_alone,
                          "idle": lag_idle}, rounds)
    return Lag(values["run"], values["provider"], values["idle"])


class CountingStore(DiskStore):
    """A real DiskStore that counts its transactions (``batch``)."""

    commits = 0

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        with super().batch():
            yield
        self.commits += 1


class InstantProvider:
    """Answers at once with a small PNG of its own per call."""

    name = "instant"

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        buffer = io.BytesIO()
        tag = next(_counter)
        Image.new("RGB", (16, 16), (tag % 256, tag // 256 % 256, 7)).save(buffer, "PNG")
        return eg.GeneratedImage(buffer.getvalue(), "image/png")


def chain(root: Path, links: int = 200) -> tuple[float, float]:
    """ms per link and commits per link of a chain of ``links`` edits (nothing cached)."""
    store = CountingStore(root / "chain")
    g = eg.Graph(cache_dir=store, width=256, height=256)
    previous = g.image(_noise_jpeg(16), name="source")
    tag = next(_counter)
    for index in range(links):
        previous = g.edit(f"chain {tag} link {index} of {previous}", name=f"c{index}")
    provider = InstantProvider()
    started = time.perf_counter()
    g.run(provider=provider, progress=False)
    elapsed = time.perf_counter() - started
    commits = store.commits
    store.close()
    return elapsed / links * 1000, commits / links


def main() -> int:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        lag = measure_lag(root)
        print(f"max loop lag, ms: run {max(lag.run):.1f} (median {statistics.median(lag.run):.1f})"
              f"; provider alone {max(lag.provider):.1f}; idle {max(lag.idle):.1f}")
        per_link, commits = chain(root)
        print(f"deep chain: {per_link:.3f} ms per link, {commits:.2f} commits per link")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of the Together provider against FakeTogether's rate limit.

Runs N concurrent ``Together.generate`` calls (at most 16 at a time, as a graph run with
``concurrency=16`` would) against ``FakeTogether(rate_limit=R, latency=...)`` and prints
the achieved requests per minute over R (target >= 0.95, with no failed edit) and the
429s seen.

FakeTogether's limit is a token bucket that holds a full minute (R requests) and refills
at R/60 per second, so a fresh bucket would let the first R requests through at once and
say nothing about pacing. The benchmark therefore empties the bucket first, then measures
the sustained rate, which is what a long run meets. Two modes:

- adaptive: no client-side limit; the provider learns the pace from the 429s;
- user-set: ``Together(rate_limit=R)``, the limit the user knows.

:func:`measure_graph` runs the same edits through the graph engine (a graph of
independent edits, ``g.run(concurrency=16)``) against a FakeTogether child process; that is
the figure ``python -m benchmarks`` reports.

Usage: ``python benchmarks/throughput.py [--rate 1200] [--edits 200] [--latency 0.05]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

import editgraph as eg
from editgraph.errors import ProviderError
from editgraph.providers import Together
from editgraph.requests import EditRequest
from editgraph.testing import FakeTogether


@dataclass(frozen=True)
class Outcome:
    """What one benchmark mode measured."""

    mode: str
    edits: int
    failed: int
    seconds: float
    rate_limited_by_service: int
    rate_limited_seen_by_provider: int

    def achieved_rpm(self) -> float:
        """Successful requests per minute over the run."""
        return (self.edits - self.failed) / self.seconds * 60.0


async def _drain(base_url: str) -> None:
    """Empty the fake's token bucket: unknown-model requests take a token and answer 404."""
    async with httpx.AsyncClient() as client:

        async def until_refused() -> None:
            status = 0
            while status != 429:
                response = await client.post(
                    f"{base_url}/v1/images/generations", json={"model": "drain"}
                )
                status = response.status_code

        await asyncio.gather(*(until_refused() for _ in range(16)))


async def _run_edits(provider: Together, edits: int, concurrency: int) -> int:
    """Run ``edits`` generations, ``concurrency`` at a time; return how many failed."""
    slots = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(index: int) -> None:
        nonlocal failed
        request = EditRequest(
            node=f"edit{index}",
            model="black-forest-labs/FLUX.2-pro",
            prompt=f"Make image 1 a night scene, variant {index}",
            width=256,
            height=256,
            seed=index,
        )
        async with slots:
            try:
                await provider.generate(request)
            except ProviderError as error:
                failed += 1
                print(f"  failed: {error}", file=sys.stderr)

    await asyncio.gather(*(one(index) for index in range(edits)))
    return failed


def measure(mode: str, rate: float, edits: int, latency: float, concurrency: int) -> Outcome:
    """Run one mode against a fresh, drained FakeTogether and return what it measured."""
    with FakeTogether(rate_limit=rate, latency=latency) as fake:
        asyncio.run(_drain(fake.base_url))
        before = len(fake.requests)
        provider = Together(
            api_key="benchmark",
            base_url=fake.base_url,
            rate_limit=rate if mode == "user-set" else None,
        )
        started = time.monotonic()
        failed = asyncio.run(_run_edits(provider, edits, concurrency))
        seconds = time.monotonic() - started
        arrived = len(fake.requests) - before
        billed = len(fake.billed)
    return Outcome(
        mode=mode,
        edits=edits,
        failed=failed,
        seconds=seconds,
        rate_limited_by_service=arrived - billed,
        rate_limited_seen_by_provider=provider.rate_limited,
    )


def measure_graph(
    mode: str, rate: float, edits: int, latency: float, concurrency: int = 16
) -> Outcome:
    """Like :func:`measure`, but ``edits`` independent edits run as one graph."""
    from .fake_service import FakeService
    from .overhead import _png

    with FakeService(rate_limit=rate, latency=latency) as fake, \
            tempfile.TemporaryDirectory(prefix="editgraph-throughput-") as directory:
        asyncio.run(_drain(fake.base_url))
        before = fake.stats().requests
        provider = Together(
            api_key="benchmark",
            base_url=fake.base_url,
            rate_limit=rate if mode == "user-set" else None,
        )
        graph = eg.Graph(cache_dir=Path(directory), concurrency=concurrency,
                         width=256, height=256)
        source = graph.image(_png(11), name="source")
        for index in range(edits):
            graph.edit(f"Make image 1 a night scene, {mode} variant {index}", refs=[source],
                       name=f"edit{index}")
        started = time.monotonic()
        try:
            graph.run(provider=provider, progress=False)
            failed = 0
        except eg.RunError as error:
            failed = len(error.failures)
        seconds = time.monotonic() - started
        after = fake.stats()
    return Outcome(
        mode=mode,
        edits=edits,
        failed=failed,
        seconds=seconds,
        rate_limited_by_service=after.requests - before - after.billed,
        rate_limited_seen_by_provider=provider.rate_limited,
    )


def main() -> int:
    """Run both modes and print the figures; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rate", type=float, default=1200.0, help="FakeTogether rate_limit, requests/minute"
    )
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per generation")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    # stamina logs every scheduled retry (each 429); the summary below counts them.
    logging.getLogger("stamina").setLevel(logging.ERROR)

    print(
        f"{args.edits} edits, concurrency {args.concurrency}, latency {args.latency:g} s, "
        f"service limit R = {args.rate:g} requests/minute (bucket drained first)"
    )
    ok = True
    for mode in ("adaptive", "user-set"):
        outcome = measure(mode, args.rate, args.edits, args.latency, args.concurrency)
        ratio = outcome.achieved_rpm() / args.rate
        met = ratio >= 0.95 and outcome.failed == 0
        ok = ok and met
        print(
            f"{mode:>9}: {outcome.seconds:6.2f} s, achieved {outcome.achieved_rpm():7.1f} req/min, "
            f"achieved/R = {ratio:.3f} ({'meets' if met else 'MISSES'} >= 0.95), "
            f"failed {outcome.failed}, 429s from the service {outcome.rate_limited_by_service} "
            f"(provider saw {outcome.rate_limited_seen_by_provider})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

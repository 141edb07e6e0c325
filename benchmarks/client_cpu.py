"""Client CPU per generated edit with 1 MB JPEG results: the Together provider against a
hand-written client on the same HTTP stack, interleaved round by round.

Every variant runs ``edits`` generations, ``in_flight`` at a time, against the light
server (``benchmarks.light_server``, a child process: its CPU is not ours) and reads
this process's CPU time (``time.process_time``: every thread, so work handed to a
thread counts too). Variants:

- ``provider``: ``eg.providers.Together.generate`` inside ``session()`` (what the engine
  calls): request built, retries armed, the result downloaded with its cap and checked
  (header, size, end marker);
- ``same stack``: a hand-written asyncio client using httpx over the same transport
  (editgraph's aiohttp transport): POST, parse, GET the result, nothing checked;
- ``aiohttp``: the same with aiohttp alone (the floor: no httpx layer at all);
- ``provider, httpcore``: the provider on httpx's own transport (the fallback without the
  ``aiohttp`` extra), for the record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import httpx

import editgraph as eg
from editgraph.providers import _transport
from editgraph.providers._http import tls_context
from editgraph.providers.together import Together

from .fake_service import FakeService
from .interleave import interleaved, ratio

MODEL = "black-forest-labs/FLUX.2-pro"
SIZE = 1024


@dataclass(frozen=True)
class ClientCPU:
    """Milliseconds of CPU per generated edit, per variant, one value per round."""

    edits: int
    in_flight: int
    values: dict[str, list[float]]
    server_cpu_per_call_ms: float

    def per_edit(self, name: str) -> float:
        """The median over rounds of ``name``'s CPU per edit (ms)."""
        values = sorted(self.values[name])
        return values[len(values) // 2]

    def ratio(self, name: str, over: str) -> float:
        """Median of the round-by-round ratios ``name`` / ``over``."""
        return ratio(self.values[name], self.values[over])


def _request(index: int) -> eg.EditRequest:
    return eg.EditRequest(node=f"e{index}", model=MODEL, prompt=f"edit {index}", width=SIZE,
                          height=SIZE, seed=index)


def _body(index: int) -> dict[str, object]:
    return {"model": MODEL, "prompt": f"edit {index}", "width": SIZE, "height": SIZE,
            "seed": index, "response_format": "url", "output_format": "jpeg"}


async def _bounded(edits: int, in_flight: int, one: Callable[[int], Awaitable[None]]) -> None:
    slots = asyncio.Semaphore(in_flight)

    async def run(index: int) -> None:
        async with slots:
            await one(index)

    await asyncio.gather(*(run(index) for index in range(edits)))


def _cpu_ms(main: Callable[[], Awaitable[None]], edits: int) -> float:
    started = time.process_time()
    asyncio.run(main())  # type: ignore[arg-type]
    return (time.process_time() - started) / edits * 1000


def _provider(base_url: str, edits: int, in_flight: int, *, aiohttp_transport: bool) -> float:
    async def main() -> None:
        provider = Together(api_key="bench", base_url=base_url)
        async with provider.session():
            async def one(index: int) -> None:
                await provider.generate(_request(index))
            await _bounded(edits, in_flight, one)

    available = _transport.aiohttp_available
    if not aiohttp_transport:
        _transport.aiohttp_available = lambda: False  # type: ignore[assignment]
    try:
        return _cpu_ms(main, edits)
    finally:
        _transport.aiohttp_available = available  # type: ignore[assignment]


def _same_stack(base_url: str, edits: int, in_flight: int) -> float:
    async def main() -> None:
        async with httpx.AsyncClient(transport=_transport.AiohttpTransport(tls_context()),
                                     timeout=60) as client:
            async def one(index: int) -> None:
                answer = await client.post(f"{base_url}/v1/images/generations", json=_body(index))
                answer.raise_for_status()
                result = await client.get(answer.json()["data"][0]["url"])
                result.raise_for_status()
                assert len(result.content) > 0
            await _bounded(edits, in_flight, one)

    return _cpu_ms(main, edits)


def _aiohttp(base_url: str, edits: int, in_flight: int) -> float:
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            async def one(index: int) -> None:
                async with session.post(f"{base_url}/v1/images/generations",
                                        json=_body(index)) as answer:
                    url = (await answer.json())["data"][0]["url"]
                async with session.get(url) as result:
                    assert len(await result.read()) > 0
            await _bounded(edits, in_flight, one)

    return _cpu_ms(main, edits)


def measure(*, edits: int = 128, in_flight: int = 32, latency: float = 0.05,
            rounds: int = 3) -> ClientCPU:
    """Each variant ``rounds`` times, interleaved, against one light server child."""
    logging.getLogger("stamina").setLevel(logging.ERROR)
    with FakeService(server="light", latency=latency) as server:
        base_url = server.base_url
        measures: dict[str, Callable[[], float]] = {
            "provider": lambda: _provider(base_url, edits, in_flight, aiohttp_transport=True),
            "same stack": lambda: _same_stack(base_url, edits, in_flight),
            "aiohttp": lambda: _aiohttp(base_url, edits, in_flight),
            "provider, httpcore": lambda: _provider(base_url, edits, in_flight,
                                                    aiohttp_transport=False),
        }
        for warm in measures.values():  # imports, the server's one encoding per size
            warm()
        before = server.stats()
        values = interleaved(measures, rounds)
        after = server.stats()
    server_cpu = (after.cpu_seconds - before.cpu_seconds) / max(1, after.billed - before.billed)
    return ClientCPU(edits=edits, in_flight=in_flight, values=values,
                     server_cpu_per_call_ms=server_cpu * 1000)


if __name__ == "__main__":
    figures = measure()
    for name, values in figures.values.items():
        print(f"{name:20s} " + " ".join(f"{value:6.2f}" for value in values) + " ms CPU/edit")

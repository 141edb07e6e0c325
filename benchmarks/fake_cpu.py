"""FakeTogether's own CPU per call, for a 1024x768 JPEG: the floor it puts under every benchmark.

The fake runs in a child process (``fake_service.FakeService``, as in the critical-path
benchmark) and reports its CPU time; this process sends the requests with one httpx
client and downloads every result, as editgraph does. Three workloads, each measured
after a warm-up of the same kind:

- ``distinct``: text-to-image requests, each with a new prompt (nothing to reuse);
- ``chained``: each request takes the previous result's URL as its reference;
- ``repeated``: the same request again (the fake answers it from its render cache).

The floor is the fake's HTTP server alone: a request to a path nothing serves, answered
404 by its router with no handler of ours. A call is two requests (the generation POST and
the result GET), so a call cannot cost less than twice that: the system calls, the event
loop's turn and the request's parsing.

``python -m benchmarks.fake_cpu [--calls N] [--rounds R]`` prints the three figures and the floor.
``--against TREE``: the fake of this checkout (B) against the one in TREE (A, e.g. ``git
worktree add --detach ../base main``), each in its own child process, every workload's
rounds interleaved A B, B A, ...; each side's CPU per call and the B/A ratios.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from .fake_service import FakeService
from .interleave import HERE, interleaved, ratio

if TYPE_CHECKING:
    from typing_extensions import Self

MODEL = "black-forest-labs/FLUX.2-pro"
WIDTH, HEIGHT = 1024, 768


@dataclass(frozen=True)
class FakeCpu:
    """Milliseconds of the fake's CPU per call, for each workload (medians of rounds)."""

    calls: int  # per workload, all rounds
    distinct_ms: float
    chained_ms: float
    repeated_ms: float
    http_floor_ms: float  # one request answered 404 by the fake's server, no handler of ours

    @property
    def floor_ms(self) -> float:
        """The floor of a call: two requests to the bare server."""
        return 2 * self.http_floor_ms


def _call(client: httpx.Client, base_url: str, prompt: str, references: list[str]) -> str:
    body: dict[str, object] = {"model": MODEL, "prompt": prompt, "width": WIDTH,
                               "height": HEIGHT, "seed": 1, "output_format": "jpeg"}
    if references:
        body["reference_images"] = references
    answer = client.post(f"{base_url}/v1/images/generations", json=body)
    answer.raise_for_status()
    url: str = answer.json()["data"][0]["url"]
    client.get(url).raise_for_status()
    return url


_prompt_numbers = itertools.count()  # distinct prompts stay distinct across rounds


def _per_call_ms(fake: FakeService, client: httpx.Client, calls: int, kind: str) -> float:
    previous: list[str] = []

    def one() -> None:
        nonlocal previous
        prompt = "the same picture" if kind == "repeated" else f"{kind} picture {next(_prompt_numbers)}"
        url = _call(client, fake.base_url, prompt, previous if kind == "chained" else [])
        previous = [url]

    for _ in range(40):  # warm-up: imports, the base pictures of this size, the cache
        one()
    before = fake.stats()
    for _ in range(calls):
        one()
    after = fake.stats()
    return (after.cpu_seconds - before.cpu_seconds) / calls * 1000


def measure(calls: int = 200, rounds: int = 3) -> FakeCpu:
    """Each workload (and the floor) ``calls`` times per round against one FakeTogether
    child, the rounds interleaved (benchmarks.interleave): the medians of its CPU per call.

    Interleaved because the machine's load moves CPU time too (a busy sibling core slows
    every instruction): workloads measured in separate blocks differed by more than
    their real difference.
    """
    with FakeService() as fake, httpx.Client(trust_env=False, timeout=60) as client:
        measures: dict[str, Callable[[], float]] = {
            kind: functools.partial(_per_call_ms, fake, client, calls, kind)
            for kind in ("distinct", "chained", "repeated")
        }
        measures["floor"] = functools.partial(_not_found_ms, fake, client, calls)
        _first_warm_up(fake, client)
        values = {name: statistics.median(runs)
                  for name, runs in interleaved(measures, rounds).items()}
    return FakeCpu(calls * rounds, values["distinct"], values["chained"], values["repeated"],
                   values["floor"])


def _first_warm_up(fake: FakeService, client: httpx.Client) -> None:
    """Once, before the rounds: enough calls of each kind that the fake has made every
    one-time piece of this size (each of the 16 looks' base is drawn, encoded and
    thumbnailed on first use, ~10 ms each; 40 calls left about one look unmade, whose
    cost then fell in a measured round)."""
    for kind in ("distinct", "chained", "repeated"):
        _per_call_ms(fake, client, 120, kind)


def _not_found_ms(fake: FakeService, client: httpx.Client, calls: int) -> float:
    """CPU of the HTTP server alone: a POST to a path nothing serves (a 404 from its router)."""
    body = {"model": MODEL, "prompt": "nothing", "width": WIDTH, "height": HEIGHT}
    before = fake.stats()
    for _ in range(calls):
        client.post(f"{fake.base_url}/nowhere", json=body)
    after = fake.stats()
    return (after.cpu_seconds - before.cpu_seconds) / calls * 1000


class _FakeIn(FakeService):
    """FakeTogether from the editgraph in ``checkout``, in a child process."""

    def __init__(self, checkout: Path) -> None:
        super().__init__()
        self.checkout = checkout.resolve()

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _FAKE_CHILD, json.dumps(self.settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=self.checkout,
            env={**os.environ, "PYTHONPATH": str(self.checkout)},
        )
        assert self._process.stdout is not None
        loaded = json.loads(self._process.stdout.readline())["editgraph"]
        assert loaded.startswith(str(self.checkout)), loaded
        self.base_url = self._process.stdout.readline().strip()
        return self


#: ``benchmarks.fake_service``'s child, saying first which editgraph it imported.
_FAKE_CHILD = """
import json, sys
import editgraph
print(json.dumps({"editgraph": editgraph.__file__}), flush=True)
from benchmarks.fake_service import _serve
_serve(json.loads(sys.argv[1]))
"""


def against(tree: Path, calls: int = 200, rounds: int = 5) -> dict[str, dict[str, list[float]]]:
    """The fake's CPU ms per call, per workload and side: B (this checkout) and A (the
    editgraph in ``tree``), one child each, one client, every measure's rounds interleaved."""
    with _FakeIn(tree) as side_a, _FakeIn(HERE) as side_b, \
            httpx.Client(trust_env=False, timeout=60) as client:
        measures: dict[str, Callable[[], float]] = {}
        for kind in ("distinct", "chained", "repeated"):
            for side, fake in (("A", side_a), ("B", side_b)):
                measures[f"{kind} {side}"] = functools.partial(_per_call_ms, fake, client,
                                                               calls, kind)
        for side, fake in (("A", side_a), ("B", side_b)):
            measures[f"floor {side}"] = functools.partial(_not_found_ms, fake, client, calls)
            _first_warm_up(fake, client)
        values = interleaved(measures, rounds)
    result: dict[str, dict[str, list[float]]] = {}
    for name, runs in values.items():
        kind, side = name.rsplit(" ", 1)
        result.setdefault(kind, {})[side] = runs
    return result


def main() -> None:
    """Print the three figures, or ``--against TREE``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fake_cpu", description=__doc__)
    parser.add_argument("--calls", type=int, default=200, help="calls per workload and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--against", type=Path, default=None, metavar="TREE",
                        help="this checkout's fake (B) against the one in TREE (A)")
    arguments = parser.parse_args()
    if arguments.against is not None:
        sides = against(arguments.against, arguments.calls, arguments.rounds)
        for kind, runs in sides.items():
            print(f"{kind:9s} A {statistics.median(runs['A']):5.3f}  B "
                  f"{statistics.median(runs['B']):5.3f} ms/call  B/A (median of round "
                  f"ratios) {ratio(runs['B'], runs['A']):.3f}")
        return
    figures = measure(arguments.calls, arguments.rounds)
    print(f"FakeTogether CPU per call, {WIDTH}x{HEIGHT} JPEG, {figures.calls} calls each:")
    print(f"  distinct prompts          {figures.distinct_ms:6.2f} ms")
    print(f"  chained (1 reference)     {figures.chained_ms:6.2f} ms")
    print(f"  repeated request (cache)  {figures.repeated_ms:6.2f} ms")
    print(f"  floor: the server alone   {figures.floor_ms:6.2f} ms per call "
          f"(a 404, {figures.http_floor_ms:.2f} ms per request)")


if __name__ == "__main__":
    main()

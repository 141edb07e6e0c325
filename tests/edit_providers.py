"""Providers written for the tests: they count calls, fail or block on request.

Each returns real PNG bytes made with PIL, deterministic in the request, and keeps no
event-loop-bound state between runs (events are handed in by the test that owns the loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Callable, Collection, Mapping

from PIL import Image

import editgraph as eg


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    """A small solid-colour PNG, as a user's source image would arrive."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_of(text: str) -> tuple[int, int, int]:
    """A colour chosen by ``text``'s hash, so different inputs give different bytes."""
    digest = hashlib.sha256(text.encode()).digest()
    return digest[0], digest[1], digest[2]


def render(request: eg.EditRequest) -> bytes:
    """The image a test provider returns: its colour follows prompt, seed and references."""
    material = "|".join(
        [request.prompt, str(request.seed), *(reference.hash for reference in request.references)]
    )
    return png_bytes(colour_of(material), (request.width // 16, request.height // 16))


class CountingProvider:
    """Generates at once and records every request; nodes in ``fail`` raise."""

    def __init__(
        self,
        name: str = "counting",
        *,
        fail: Collection[str] = (),
        unknown_outcomes: Mapping[str, int] | None = None,
        image_for: Callable[[eg.EditRequest], bytes] = render,
    ) -> None:
        self.name = name
        self.fail = set(fail)
        self.unknown_outcomes = dict(unknown_outcomes or {})
        self.image_for = image_for
        self.calls: list[eg.EditRequest] = []

    @property
    def nodes(self) -> list[str]:
        """The node names generated, in call order."""
        return [request.node for request in self.calls]

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        """Record the call, then fail or return a PNG made from the request."""
        self.calls.append(request)
        if request.node in self.fail:
            raise RuntimeError(f"the test provider refuses {request.node}")
        return eg.GeneratedImage(
            data=self.image_for(request),
            media_type="image/png",
            unknown_outcomes=self.unknown_outcomes.get(request.node, 0),
        )


class GatedProvider(CountingProvider):
    """Holds each generation of a gated node until the test sets that node's event.

    Tracks how many generations are in flight; ``started[node]`` (for gated and watched
    nodes) is set when a node's generation begins, so tests wait on events instead of sleeping.
    """

    def __init__(
        self,
        gates: Mapping[str, asyncio.Event],
        *,
        watch: Collection[str] = (),
        image_for: Callable[[eg.EditRequest], bytes] = render,
    ) -> None:
        super().__init__(image_for=image_for)
        self.gates = dict(gates)
        self.started = {name: asyncio.Event() for name in [*self.gates, *watch]}
        self.in_flight = 0
        self.max_in_flight = 0
        self.finished: list[str] = []

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        """Count the call in flight, wait for its gate (if any), then generate."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if request.node in self.started:
                self.started[request.node].set()
            gate = self.gates.get(request.node)
            if gate is not None:
                await gate.wait()
            result = await super().generate(request)
        finally:
            self.in_flight -= 1
        self.finished.append(request.node)
        return result

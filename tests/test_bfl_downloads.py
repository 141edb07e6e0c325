"""BFL result downloads hold Together's guarantees: a size cap, at most 5 redirects, one
deadline. FakeBFL over real loopback, its delivery path made hostile by a middleware."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import stamina
from aiohttp import web

from editgraph.downloads import DEFAULT_MAX_DOWNLOAD_BYTES
from editgraph.errors import ProviderError
from editgraph.providers import BFL
from editgraph.requests import EditRequest
from editgraph.testing import FakeBFL

KEY = "bfl_PLANTED_0d1e2f3a4b5c6d7e8f9a0b1c2d3e"
PRO = "black-forest-labs/FLUX.2-pro"
#: Seconds between the bytes of a dripping body: each read is quick, the whole never ends.
DRIP_PAUSE = 0.05

#: 1 MiB more than the cap of zeros, gzipped once for the whole module (about 65 KB).
_GZIP_BOMB = gzip.compress(b"\0" * (DEFAULT_MAX_DOWNLOAD_BYTES + (1 << 20)), compresslevel=9)


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """stamina waits nothing between tries, and our own attempt caps stay in force."""
    with stamina.set_testing(True, attempts=20, cap=True):
        yield


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic never goes through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HostileDelivery(FakeBFL):
    """FakeBFL whose result URLs (``/delivery/...``) answer as ``mode`` says."""

    def __init__(self, mode: str, **settings: Any) -> None:
        super().__init__(api_key=KEY, **settings)
        self.mode = mode
        self.deliveries: list[str] = []

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.middlewares.append(self._hostile)

    @web.middleware
    async def _hostile(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/delivery/"):
            return await handler(request)
        self.deliveries.append(request.path)
        if self.mode == "loop":
            raise web.HTTPFound(request.path)
        if self.mode == "declared-huge":
            return web.Response(body=b"\x89PNG", headers={
                "Content-Type": "image/png", "Content-Length": str(1_500_000_000)})
        if self.mode == "gzip-bomb":
            return web.Response(body=_GZIP_BOMB, headers={
                "Content-Type": "image/png", "Content-Encoding": "gzip"})
        if self.mode == "drip":
            real = await handler(request)
            assert isinstance(real, web.Response) and real.body is not None
            body = bytes(real.body)  # type: ignore[arg-type]
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                for position in range(len(body)):
                    await response.write(body[position : position + 1])
                    await asyncio.sleep(DRIP_PAUSE)  # the server's pace, not the test's wait
            return response
        if self.mode == "truncated":
            real = await handler(request)
            assert isinstance(real, web.Response) and real.body is not None
            return web.Response(body=bytes(real.body)[:-100],  # type: ignore[arg-type]
                                content_type=real.content_type)
        raise AssertionError(f"unknown mode {self.mode!r}")


def failure(mode: str, **settings: Any) -> tuple[ProviderError, HostileDelivery]:
    """Generate one edit against a FakeBFL whose delivery is ``mode``; the error it ends in."""
    request = EditRequest(node="night", model=PRO, prompt="Make it night", width=256,
                          height=256, seed=7)

    async def scenario(fake: HostileDelivery) -> ProviderError:
        provider = BFL(api_key=KEY, base_url=fake.base_url, poll_interval=0.0, **settings)
        with pytest.raises(ProviderError) as caught:
            await provider.generate(request)
        return caught.value

    with HostileDelivery(mode) as fake:
        return asyncio.run(scenario(fake)), fake


def test_a_result_declared_larger_than_the_cap_is_refused_unread() -> None:
    """Content-Length 1.5 GB: refused at the header, billed, with one submission."""
    error, fake = failure("declared-huge")
    assert error.possibly_billed and f"larger than {DEFAULT_MAX_DOWNLOAD_BYTES} bytes" in str(error)
    assert len(fake.billed) == 1 and len(fake.deliveries) == 1


def test_a_gzip_bomb_result_stops_at_the_cap_on_decoded_bytes() -> None:
    """65 KB of gzip inflating past 64 MiB: cut at the cap, counted after decompression."""
    error, _ = failure("gzip-bomb")
    assert error.possibly_billed and "max_download_bytes" in str(error)


def test_a_redirect_loop_stops_after_five_redirects() -> None:
    """A result URL redirecting to itself: six requests, then a billed refusal."""
    error, fake = failure("loop")
    assert error.possibly_billed and "more than 5 redirects" in str(error)
    assert len(fake.deliveries) == 6 and len(fake.billed) == 1


def test_a_dripping_result_ends_at_the_providers_timeout() -> None:
    """One byte every 50 ms (each read quick): stopped at the 1 s deadline, billed."""
    error, fake = failure("drip", timeout=1.0)
    assert error.possibly_billed and "did not finish within 1 s" in str(error)
    assert len(fake.billed) == 1


def test_a_truncated_result_is_refused_by_its_missing_end_marker() -> None:
    """A result cut 100 bytes short (a whole header, no end): billed, not stored."""
    error, fake = failure("truncated")
    assert error.possibly_billed and "cut short (no end marker)" in str(error)
    assert len(fake.billed) == 1

"""BFL result downloads hold Together's guarantees: a size cap, at most 5 redirects, one
deadline. FakeBFL over real loopback, its delivery path made hostile by a route of its own."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from typing import Any

import pytest
import stamina

from editgraph.downloads import DEFAULT_MAX_DOWNLOAD_BYTES
from editgraph.errors import ProviderError
from editgraph.providers import BFL
from editgraph.requests import EditRequest
from editgraph.testing import FakeBFL
from editgraph.testing._server import Request, Response, Router

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


class HostileDelivery(FakeBFL):
    """FakeBFL whose result URLs (``/delivery/...``) answer as ``mode`` says."""

    def __init__(self, mode: str, **settings: Any) -> None:
        super().__init__(api_key=KEY, **settings)
        self.mode = mode
        self.deliveries: list[str] = []

    def _add_routes(self, router: Router) -> None:
        router.add("GET", "/delivery/{name}", self._hostile)  # tried before FakeBFL's own
        super()._add_routes(router)

    async def _hostile(self, request: Request) -> Response:
        self.deliveries.append(request.path)
        if self.mode == "loop":
            return Response(302, headers={"Location": request.path})
        if self.mode == "gzip-bomb":
            return Response(200, _GZIP_BOMB, "image/png", {"Content-Encoding": "gzip"})
        real = await self._handle_file(request)
        if self.mode == "truncated":
            return Response(200, real.body[:-100], real.content_type)
        if self.mode == "declared-huge":
            await self._by_hand(request, b"\x89PNG", declared=1_500_000_000)
        elif self.mode == "drip":
            await self._by_hand(request, real.body, declared=len(real.body), pause=DRIP_PAUSE)
        else:
            raise AssertionError(f"unknown mode {self.mode!r}")
        return Response()  # not written: the connection is closed by then

    @staticmethod
    async def _by_hand(request: Request, body: bytes, *, declared: int,
                       pause: float | None = None) -> None:
        """Answer ``body`` under a Content-Length of ``declared``, byte by byte with
        ``pause`` between bytes when given, then close the connection."""
        transport = request.transport
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                        b"Content-Length: %d\r\n\r\n" % declared)
        if pause is None:
            transport.write(body)
        else:
            for position in range(len(body)):
                if transport.is_closing():
                    break
                transport.write(body[position : position + 1])
                await asyncio.sleep(pause)  # the server's pace, not the test's wait
        transport.close()


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

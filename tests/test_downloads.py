"""downloads.fetch_once against real loopback servers: one resolution per hop, every address
checked, the connection made to a checked address (no DNS rebinding), over http and https."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
import trustme

from editgraph.downloads import DownloadError, fetch_once
from editgraph.providers import _http
from editgraph.providers._transport import AiohttpTransport

T = TypeVar("T")
LIMIT = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment: the downloads connect themselves."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a scenario on a fresh event loop."""

    async def main() -> T:
        return await make()

    return asyncio.run(main())


@dataclass
class Resolver:
    """A resolver fed a table of answers: each call pops the next answer for that name, so
    a name can answer differently on a second resolution (a rebinding DNS server)."""

    answers: dict[str, list[list[str]]]
    calls: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        pending = self.answers.get(host)
        if not pending:
            raise OSError(f"no answer for {host!r}")
        return pending.pop(0) if len(pending) > 1 else pending[0]


@dataclass
class Server:
    """A loopback HTTP(S) server that records each request's head and answers ``body``."""

    port: int = 0
    heads: list[str] = field(default_factory=list)
    connections: int = 0
    redirect_to: str | None = None
    body: bytes = b"the result"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()
            return
        self.heads.append(head)
        if self.redirect_to is not None:
            location, self.redirect_to = self.redirect_to, None
            answer = (f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n").encode()
        else:
            answer = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\n"
                      "Connection: close\r\n\r\n").encode() + self.body
        writer.write(answer)
        await writer.drain()
        writer.close()

    def host_header(self, index: int = -1) -> str:
        for line in self.heads[index].split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "host":
                return value.strip()
        raise AssertionError("no Host header")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(params=["aiohttp", "httpcore", "direct"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both transports the providers' clients may run on, and the providers' hot path
    straight through the aiohttp one (no httpx client machinery)."""
    return str(request.param)


def new_client(transport: str, verify: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    context = verify or ssl.create_default_context()
    if transport in ("aiohttp", "direct"):
        under = AiohttpTransport(context)
        client = httpx.AsyncClient(transport=under, verify=context, timeout=5.0)
        if transport == "direct":  # as providers._http.Clients registers its clients
            _http._DIRECT[client] = under
        return client
    return httpx.AsyncClient(verify=context, timeout=5.0, trust_env=False)


async def fetch(client: httpx.AsyncClient, url: str, **options: Any) -> bytes:
    """``fetch_once`` as a provider's download sends it through ``client``."""
    return await fetch_once(client, url, opener=_http.opener_for(client), **options)


async def serving(server: Server, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    server.port = int(listener.sockets[0].getsockname()[1])
    return listener


@pytest.mark.parametrize("answer", [["127.0.0.1"], ["10.1.2.3"], ["169.254.169.254"],
                                    ["::ffff:127.0.0.1"], ["fd00::7"],
                                    ["93.184.215.14", "127.0.0.1"]])
def test_a_name_resolving_to_any_internal_address_is_refused_unconnected(
    answer: list[str], transport: str
) -> None:
    """A public-looking name with any loopback, private or link-local answer is refused
    before a connection is opened, the service being public."""

    async def scenario() -> tuple[DownloadError, Server, list[str]]:
        server = Server()
        resolver = Resolver({"files.example": [answer]})
        async with await serving(server), new_client(transport) as client:
            with pytest.raises(DownloadError) as caught:
                await fetch(client, f"http://files.example:{server.port}/image",
                                 limit=LIMIT, internal_ok=False, resolve=resolver)
        return caught.value, server, resolver.calls

    error, server, calls = run(scenario)
    assert "loopback, private or link-local" in error.reason and not error.retryable
    assert server.connections == 0 and calls == ["files.example"]


def test_the_connection_goes_to_the_address_that_was_resolved_once(transport: str) -> None:
    """The download connects to the address its one resolution gave (a later answer, as a
    rebinding DNS server would give, is never asked for); Host still names the name."""

    async def scenario() -> tuple[bytes, Server, list[str]]:
        server = Server()
        # The second answer would send a second resolution to a port-less dead end.
        resolver = Resolver({"rebind.example": [["127.0.0.1"], ["127.0.0.2"]]})
        async with await serving(server), new_client(transport) as client:
            body = await fetch(client, f"http://rebind.example:{server.port}/image",
                                    limit=LIMIT, internal_ok=True, resolve=resolver)
        return body, server, resolver.calls

    body, server, calls = run(scenario)
    assert body == b"the result" and calls == ["rebind.example"]
    assert server.host_header() == f"rebind.example:{server.port}"


def test_each_redirect_hop_is_resolved_and_connected_the_same_way(transport: str) -> None:
    """A redirect to another name is resolved by the same resolver and fetched from its
    address, with its own Host."""

    async def scenario() -> tuple[bytes, Server, list[str]]:
        server = Server()
        resolver = Resolver({"next.example": [["127.0.0.1"]]})
        async with await serving(server), new_client(transport) as client:
            server.redirect_to = f"http://next.example:{server.port}/moved"
            body = await fetch(client, f"http://127.0.0.1:{server.port}/image",
                                    limit=LIMIT, internal_ok=True, resolve=resolver)
        return body, server, resolver.calls

    body, server, calls = run(scenario)
    assert body == b"the result" and calls == ["next.example"]
    assert [server.host_header(0), server.host_header(1)] == [
        f"127.0.0.1:{server.port}", f"next.example:{server.port}"]
    assert server.heads[1].startswith("GET /moved ")


def test_an_address_that_refuses_the_connection_passes_to_the_next_one(transport: str) -> None:
    """Nothing was sent to an address that refused to connect: the next checked one is tried."""

    async def scenario() -> tuple[bytes, Server]:
        server = Server()
        resolver = Resolver({"two.example": [["127.0.0.2", "127.0.0.1"]]})
        async with await serving(server), new_client(transport) as client:
            body = await fetch(client, f"http://two.example:{server.port}/image",
                                    limit=LIMIT, internal_ok=True, resolve=resolver)
        return body, server

    body, server = run(scenario)
    assert body == b"the result" and server.connections == 1


def test_a_name_that_does_not_resolve_is_a_retryable_failure(transport: str) -> None:
    """No address, no connection: the download may be tried again, nothing is fetched by name."""

    async def scenario() -> DownloadError:
        async with new_client(transport) as client:
            with pytest.raises(DownloadError) as caught:
                await fetch(client, "http://gone.example/image", limit=LIMIT,
                                 internal_ok=True, resolve=Resolver({}))
        return caught.value

    error = run(scenario)
    assert error.retryable and "does not resolve" in error.reason


@pytest.mark.parametrize("certified", ["secure.example", "other.example"])
def test_https_to_the_resolved_address_checks_the_certificate_against_the_name(
    certified: str, transport: str, ca: trustme.CA
) -> None:
    """Over TLS to the pinned address, the server name sent and checked is the URL's name:
    a certificate for that name passes, one for another name fails before any request."""

    async def scenario() -> tuple[bytes | DownloadError, Server]:
        server = Server()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(certified).configure_cert(tls)
        resolver = Resolver({"secure.example": [["127.0.0.1"]]})
        async with await serving(server, tls), new_client(transport, client_context(ca)) as client:
            try:
                return await fetch(client, f"https://secure.example:{server.port}/image",
                                        limit=LIMIT, internal_ok=True, resolve=resolver), server
            except DownloadError as exc:
                return exc, server

    outcome, server = run(scenario)
    if certified == "secure.example":
        assert outcome == b"the result"
        assert server.host_header() == f"secure.example:{server.port}"
    else:
        assert isinstance(outcome, DownloadError) and server.heads == []

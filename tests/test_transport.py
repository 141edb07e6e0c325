"""The providers' HTTP transport: aiohttp under httpx, its error map, and the httpcore
fallback (no aiohttp installed, or a proxy set in the environment)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from editgraph.providers._http import tls_context
from editgraph.providers._transport import AiohttpTransport, aiohttp_errors, new_transport
from editgraph.testing import FakeTogether

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic never goes through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def _key() -> aiohttp.client_reqrep.ConnectionKey:
    return aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)


#: Each aiohttp error, and the httpx one it must become: "never sent" only for failures
#: to connect; everything after that is a read/protocol error (an unknown outcome).
_CASES: list[tuple[Exception, type[httpx.TransportError]]] = [
    (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
    (aiohttp.ClientConnectorError(_key(), OSError(111, "refused")), httpx.ConnectError),
    (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError("cut"), httpx.ReadError),
    (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
    (aiohttp.ClientConnectionError("gone"), httpx.ReadError),
    (aiohttp.InvalidURL("x"), httpx.UnsupportedProtocol),
    (TimeoutError(), httpx.ReadTimeout),
]


@pytest.mark.parametrize(("raised", "expected"), _CASES,
                         ids=[type(raised).__name__ for raised, _ in _CASES])
def test_each_aiohttp_error_becomes_the_httpx_error_that_says_the_same(
    raised: Exception, expected: type[httpx.TransportError]
) -> None:
    """No aiohttp error slips through, and only a failure to connect reads as 'not sent'."""
    with pytest.raises(httpx.TransportError) as caught, aiohttp_errors():
        raise raised
    assert type(caught.value) is expected and caught.value.__cause__ is raised


def test_a_connection_dropped_after_the_request_is_a_protocol_error_not_a_connect_error() -> None:
    """httpx-aiohttp maps this to ConnectTimeout ('never sent'); it was sent: unknown outcome."""

    async def scenario() -> BaseException:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")  # the whole request arrived
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(transport=AiohttpTransport(tls_context())) as client:
            with pytest.raises(httpx.TransportError) as caught:
                await client.post(f"http://127.0.0.1:{port}/v1/x", content=b"{}")
            return caught.value

    error = asyncio.run(scenario())
    assert isinstance(error, httpx.RemoteProtocolError)


def test_a_body_streams_back_through_httpx_undecoded_by_aiohttp() -> None:
    """Status, headers and a gzip body arrive as httpx would have them (httpx decodes)."""
    import gzip

    async def scenario() -> tuple[int, str, bytes, bytes]:
        body = gzip.compress(b"hello " * 1000)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 201 Made\r\nContent-Encoding: gzip\r\nX-Mine: yes\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(transport=AiohttpTransport(tls_context())) as client:
            async with client.stream("GET", f"http://127.0.0.1:{port}/") as response:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            decoded = (await client.get(f"http://127.0.0.1:{port}/")).content
            return response.status_code, response.headers["x-mine"], raw, decoded

    status, mine, raw, decoded = asyncio.run(scenario())
    assert (status, mine) == (201, "yes")
    assert raw.startswith(b"\x1f\x8b") and decoded == b"hello " * 1000


def test_a_proxy_in_the_environment_keeps_httpx_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx honours HTTPS_PROXY only with its own transport: the fallback is used then."""
    assert isinstance(new_transport(tls_context()), AiohttpTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert new_transport(tls_context()) is None


@pytest.fixture
def fake() -> Iterator[FakeTogether]:
    with FakeTogether() as server:
        yield server


def test_without_aiohttp_the_together_provider_runs_on_httpcore(fake: FakeTogether) -> None:
    """A Python where aiohttp cannot be imported generates through httpx's own transport."""
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        sys.modules["aiohttp"] = None  # import aiohttp now raises ImportError
        import editgraph as eg
        from editgraph.providers._http import tls_context
        from editgraph.providers._transport import new_transport
        from editgraph.providers.together import Together

        async def main():
            provider = Together(api_key="k", base_url={fake.base_url!r})
            request = eg.EditRequest(node="n", model="black-forest-labs/FLUX.2-pro",
                                     prompt="p", width=256, height=256, seed=1)
            async with provider.session():
                image = await provider.generate(request)
            return image.media_type, len(image.data)

        media_type, size = asyncio.run(main())
        print(json.dumps([new_transport(tls_context()) is None, media_type, size]))
    """)
    environment = {name: value for name, value in os.environ.items()
                   if "proxy" not in name.lower()}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, env=environment, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    fallback, media_type, size = json.loads(done.stdout.strip().splitlines()[-1])
    assert fallback and media_type == "image/jpeg" and size > 0
    assert len(fake.billed) == 1


def test_clients_hand_their_aiohttp_transport_to_the_hot_path_and_no_other_client() -> None:
    """A client ``Clients`` built on aiohttp is sent through directly; an httpx client of
    anyone else's goes through httpx, with nothing assumed about its transport."""
    from editgraph.providers._http import Clients, direct_transport

    async def scenario() -> tuple[bool, bool]:
        async with Clients("t", 10.0, follow_redirects=False).new() as ours, \
                httpx.AsyncClient(transport=AiohttpTransport(tls_context())) as theirs:
            return (isinstance(direct_transport(ours), AiohttpTransport),
                    direct_transport(theirs) is None)

    assert asyncio.run(scenario()) == (True, True)


def test_a_direct_answer_reads_a_chunked_body_within_its_cap() -> None:
    """Without a declared length the body is fed piece by piece: whole under the cap,
    BodyTooLarge past it."""
    from editgraph.downloads import BodyTooLarge

    async def scenario() -> tuple[bytes, bool]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"".join(b"400\r\n" + bytes([65 + i]) * 1024 + b"\r\n"
                                        for i in range(8)) + b"0\r\n\r\n")
                await writer.drain()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        transport = AiohttpTransport(tls_context())
        timeout = httpx.Timeout(10.0)
        async with server:
            try:
                async with transport.open("GET", url, headers={}, timeout=timeout) as whole:
                    body = await whole.read(8192)
                async with transport.open("GET", url, headers={}, timeout=timeout) as capped:
                    try:
                        await capped.read(8191)
                    except BodyTooLarge:
                        refused = True
                    else:
                        refused = False
            finally:
                await transport.aclose()
        return body, refused

    body, refused = asyncio.run(scenario())
    assert body == b"".join(bytes([65 + i]) * 1024 for i in range(8)) and refused


def test_a_redirected_generation_is_followed_as_httpx_follows_it() -> None:
    """A 307 on the generation's POST (nothing acted on) is sent again through httpx and
    followed there, as before the direct path: the image comes from the new location."""
    import base64
    import io

    from PIL import Image

    import editgraph as eg
    from editgraph.providers.together import Together
    from editgraph.testing._server import LoopbackServer, Request, Response, Router, json_response

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(buffer, "PNG")
    png = base64.b64encode(buffer.getvalue()).decode()
    seen: list[str] = []

    class Moved(LoopbackServer):
        def _add_routes(self, router: Router) -> None:
            router.add("POST", "/v1/images/generations", self._old)
            router.add("POST", "/moved", self._new)

        async def _old(self, request: Request) -> Response:
            seen.append("old")
            return Response(307, b"", None, {"Location": "/moved"})

        async def _new(self, request: Request) -> Response:
            seen.append(f"new {request.header('authorization')[:6]} {len(request.body)}")
            return json_response({"data": [{"index": 0, "b64_json": png}]})

    async def scenario(base_url: str) -> bytes:
        provider = Together(api_key="k", base_url=base_url)
        async with provider.session():
            image = await provider.generate(eg.EditRequest(
                node="n", model="black-forest-labs/FLUX.2-pro", prompt="p", width=64,
                height=48, seed=1))
        return image.data

    with Moved() as server:
        data = asyncio.run(scenario(server.base_url))
    assert data == base64.b64decode(png)
    assert seen[:2] == ["old", "old"] and seen[2].startswith("new Bearer") and len(seen) == 3


def test_result_downloads_take_turns_and_a_stalled_one_holds_the_others_briefly() -> None:
    """With every turn held by a download that stalls, the next download waits
    TURN_PATIENCE for a turn, then goes anyway and finishes while the stalled ones still
    hold theirs (downloads take turns; no download is held back for long)."""
    import time

    from editgraph.providers import _http

    turns = _http.DOWNLOAD_TURNS

    async def scenario() -> tuple[float, bool, list[bytes]]:
        release = asyncio.Event()
        stalled = asyncio.Event()
        arrived: list[str] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await answer_each(reader, writer)
            finally:
                writer.close()

        async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                path = head.split(b" ", 2)[1].decode()
                arrived.append(path)
                if path.startswith("/stall"):
                    if sum(seen.startswith("/stall") for seen in arrived) == turns:
                        stalled.set()
                    await release.wait()
                body = path.encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server, _http.Clients("t", 10.0, follow_redirects=False).new() as client:

            def download(path: str) -> asyncio.Task[bytes]:
                return asyncio.ensure_future(_http.download_result(
                    client, f"{base}{path}", limit=1024, timeout=10.0, internal_ok=True,
                    node="n"))

            holding = [download(f"/stall/{number}") for number in range(turns)]
            await asyncio.wait_for(stalled.wait(), 10)
            started = time.monotonic()
            went = await asyncio.wait_for(download("/go"), 10)
            waited = time.monotonic() - started
            still_held = not any(task.done() for task in holding)
            release.set()
            bodies = [went, *await asyncio.gather(*holding)]
        return waited, still_held, bodies

    waited, still_held, bodies = asyncio.run(scenario())
    assert turns >= 1 and still_held
    assert waited >= _http.TURN_PATIENCE  # it waited for a turn first
    assert bodies == [b"/go", *(f"/stall/{number}".encode() for number in range(turns))]

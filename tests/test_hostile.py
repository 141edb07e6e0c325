"""Hostile input: every case of docs/reliability.md's table, refused early, clearly, without leaking.

The provider cases talk to ``HostileServer``, a loopback aiohttp server of our own that
answers generations with whatever a case needs and serves result downloads that trickle,
redirect in loops, declare or send huge bodies, gzip bombs, images of the wrong size and
pixel bombs. Cases where the service must look public go through the same server as an
HTTP proxy (``HTTP_PROXY``), so the provider sees ``http://api.together.example``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import stamina
from aiohttp import web
from click.testing import CliRunner
from PIL import Image
from typing_extensions import Self

import editgraph as eg
from editgraph.cli import main
from editgraph.errors import ConfigurationError, ProviderError
from editgraph.providers import Together
from editgraph.redact import MASK
from editgraph.requests import EditRequest

T = TypeVar("T")

KEY = "tgp_v1_HOSTILE_0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"
PRO = "black-forest-labs/FLUX.2-pro"
PUBLIC_BASE = "http://api.together.example"
#: Seconds between two bytes of a trickling answer (the hostile server's pace).
TRICKLE_PAUSE = 0.05


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """stamina waits nothing between tries."""
    with stamina.set_testing(True, attempts=20, cap=True):
        yield


def run(coroutine: Awaitable[T]) -> T:
    """Run ``coroutine`` on a fresh event loop."""

    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


def png(size: tuple[int, int] = (256, 256), colour: tuple[int, int, int] = (9, 8, 7)) -> bytes:
    """A solid-colour PNG made with Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def pixel_bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with one tiny data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def gzip_bomb(decoded_bytes: int) -> bytes:
    """Gzip of ``decoded_bytes`` zero bytes (about a thousandth of that on the wire)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\x00" * (1 << 20)
    parts = [compressor.compress(block) for _ in range(decoded_bytes >> 20)]
    return b"".join(parts) + compressor.flush()


def make_request(**changes: Any) -> EditRequest:
    """A 256 x 256 EditRequest for node 'night'."""
    fields: dict[str, Any] = {
        "node": "night", "model": PRO, "prompt": "Make it night", "width": 256,
        "height": 256, "seed": 7,
    }
    fields.update(changes)
    return EditRequest.model_validate(fields)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HostileServer:
    """A loopback server whose generation answer and result downloads each case scripts.

    ``answer`` makes the generation's response (default: JSON pointing at ``result_path``);
    ``downloads`` maps a path to its handler; ``log`` lists every request's path in order.
    It also answers absolute-form requests, so it works as an HTTP proxy.
    """

    def __init__(self) -> None:
        self.result_path = "/image"
        self.result_url: str | None = None
        self.answer: Handler | None = None
        self.log: list[str] = []
        self.authorizations: list[str] = []
        self.release = asyncio.Event()  # what trickling handlers wait for, set at the end
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.downloads: dict[str, Handler] = {
            "/image": self._image,
            "/trickle": self._trickle,
            "/loop": self._loop,
            "/huge-declared": self._huge_declared,
            "/huge-chunked": self._huge_chunked,
            "/gzip-bomb": self._gzip_bomb,
            "/gzip-bomb-65m": self._gzip_bomb_65m,
            "/brotli": self._brotli,
            "/wrong-size": self._wrong_size,
            "/pixel-bomb": self._pixel_bomb,
            "/to-file": self._to_file,
        }

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.log.append(request.path)
        if request.method == "POST" and request.path == "/v1/images/generations":
            await request.read()
            self.authorizations.append(request.headers.get("Authorization", ""))
            if self.answer is not None:
                return await self.answer(request)
            url = self.result_url or f"{self.base_url}{self.result_path}"
            return web.json_response({"id": "x", "data": [{"index": 0, "url": url}]})
        handler = self.downloads.get(request.path)
        if handler is None:
            return web.Response(status=404)
        return await handler(request)

    async def _image(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=png(), content_type="image/png")

    async def trickle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """``body`` one byte every 50 ms: no single read ever waits long."""
        response = web.StreamResponse()
        await response.prepare(request)
        for position in range(len(body)):
            await response.write(body[position : position + 1])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.release.wait(), TRICKLE_PAUSE)
            if self.release.is_set():
                break
        return response

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        return await self.trickle(request, png())

    async def _loop(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop")

    async def _huge_declared(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "image/png", "Content-Length": str(1_500_000_000)}
        )
        await response.prepare(request)
        await response.write(b"\x89PNG")
        await self.release.wait()
        return response

    async def _huge_chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        block = b"\x00" * 65536
        while not self.release.is_set():
            await response.write(block)  # endless, as fast as the client reads
        return response

    async def _gzip_bomb(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip_bomb(8 << 20),
            headers={"Content-Type": "image/png", "Content-Encoding": "gzip"},
        )

    async def _gzip_bomb_65m(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip_bomb(65 << 20),
            headers={"Content-Type": "image/png", "Content-Encoding": "gzip"},
        )

    async def _brotli(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=b"\x1b\xff\xff", headers={"Content-Type": "image/png", "Content-Encoding": "br"}
        )

    async def _wrong_size(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=png((512, 384)), content_type="image/png")

    async def _pixel_bomb(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=pixel_bomb_png(11000, 11000), content_type="image/png")

    async def _to_file(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("file:///etc/passwd")

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()


async def generate_against(
    server: HostileServer, *, base_url: str | None = None, **options: Any
) -> ProviderError:
    """The ProviderError that one generation against ``server`` ends in."""
    provider = Together(api_key=KEY, base_url=base_url or server.base_url, **options)
    try:
        await provider.generate(make_request())
    except ProviderError as exc:
        assert KEY[:6] not in str(exc) and KEY[-6:] not in str(exc)
        return exc
    raise AssertionError("the generation was expected to fail")


def download_failure(path: str, **options: Any) -> tuple[ProviderError, list[str]]:
    """Generate against a server whose result is at ``path``: the error and the request log."""

    async def scenario() -> tuple[ProviderError, list[str]]:
        async with HostileServer() as server:
            server.result_path = path
            error = await generate_against(server, **options)
            return error, list(server.log)

    return run(scenario())


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("ending", ["\r\n", "\n", " ", "\t"])
def test_a_key_with_surrounding_whitespace_is_stripped_and_works(
    ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOGETHER_API_KEY from a Windows .env (trailing CR LF) is sent clean, and works."""
    monkeypatch.setenv("TOGETHER_API_KEY", f"{KEY}{ending}")

    async def scenario() -> list[str]:
        async with HostileServer() as server:
            await Together(base_url=server.base_url).generate(make_request())
            return server.authorizations

    assert run(scenario()) == [f"Bearer {KEY}"]


@pytest.mark.parametrize(
    ("bad", "position"),
    [
        (KEY[:12] + " " + KEY[12:], 13),
        (KEY[:12] + "\t" + KEY[12:], 13),
        (KEY[:12] + "\r\n" + KEY[12:], 13),
        (KEY + "\u00e9", len(KEY) + 1),
        (KEY[:3] + "\x7f" + KEY[3:], 4),
    ],
    ids=["space", "tab", "cr-lf", "non-ascii", "delete"],
)
def test_a_key_with_a_bad_character_is_refused_at_construction(
    bad: str, position: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Space, tab, CR LF, non-ASCII or NUL inside the key: ConfigurationError, no key shown."""
    with pytest.raises(ConfigurationError, match=rf"^api_key= .*position {position} ") as given:
        Together(api_key=bad)
    monkeypatch.setenv("TOGETHER_API_KEY", bad)
    with pytest.raises(ConfigurationError, match=rf"^TOGETHER_API_KEY .*position {position} ") as env:
        Together()
    for caught in (given, env):
        assert KEY[:6] not in str(caught.value) and KEY[-6:] not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_the_command_refuses_a_bad_key_with_exit_2_before_any_spend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`editgraph run` with a key holding CR LF inside: one line, exit 2, no key printed."""
    recipe = tmp_path / "recipe.py"
    (tmp_path / "car.png").write_bytes(png())
    recipe.write_text(
        "import editgraph as eg\n"
        "def recipe() -> eg.Graph:\n"
        "    g = eg.Graph()\n"
        "    car = g.image('car.png')\n"
        "    g.edit(f'Paint {car} blue', name='blue')\n"
        "    return g\n"
    )
    monkeypatch.setenv("TOGETHER_API_KEY", KEY[:9] + "\r\n" + KEY[9:])
    monkeypatch.setenv("TOGETHER_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    result = CliRunner().invoke(main, ["run", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "TOGETHER_API_KEY" in result.output
    assert KEY[:6] not in result.output and KEY[-6:] not in result.output
    assert not (tmp_path / "out").exists()


def test_a_key_echoed_by_a_401_is_masked_in_messages_manifest_and_report(
    tmp_path: Path,
) -> None:
    """The service quotes part of the key: the error, manifest.json and report.html mask it."""

    async def echo(request: web.Request) -> web.StreamResponse:
        echoed = request.headers["Authorization"].removeprefix("Bearer ")[4:30]
        return web.json_response(
            {"error": {"message": f"Invalid API key provided: {echoed}...", "code": None}},
            status=401,
        )

    async def scenario() -> eg.RunError:
        async with HostileServer() as server:
            server.answer = echo
            graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
            car = graph.image(png(), name="car")
            graph.edit(f"Paint {car} blue", name="blue")
            provider = Together(api_key=KEY, base_url=server.base_url)
            assert KEY[:6] not in repr(provider)
            try:
                await graph.arun(provider=provider)
            except eg.RunError as exc:
                return exc
        raise AssertionError("the run was expected to fail")

    error = run(scenario())
    assert MASK in str(error) and "401" in str(error)
    assert error.run is not None
    out = error.run.save(tmp_path / "out")
    report = error.run.report(tmp_path / "out" / "report.html")
    for text in (str(error), (out / "manifest.json").read_text(), Path(report).read_text()):
        for start in range(len(KEY) - 5):
            assert KEY[start : start + 6] not in text


# --------------------------------------------------------------------------- downloads


def test_a_trickling_download_ends_at_the_providers_timeout_and_is_possibly_billed() -> None:
    """One byte every 50 ms (each read well within the timeout): stopped at the deadline."""
    error, log = download_failure("/trickle", timeout=1.0)
    assert error.possibly_billed and "within 1 s" in str(error)
    assert log == ["/v1/images/generations", "/trickle"]


def test_a_redirect_loop_stops_after_five_redirects() -> None:
    """/loop redirecting to itself: six requests, then a possibly-billed refusal."""
    error, log = download_failure("/loop")
    assert error.possibly_billed and "more than 5 redirects" in str(error)
    assert log.count("/loop") == 6


def test_a_redirect_to_a_file_url_is_refused() -> None:
    """A redirect to file:///etc/passwd is refused by scheme, never read."""
    error, _ = download_failure("/to-file")
    assert error.possibly_billed and "scheme 'file' is not http or https" in str(error)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.png", "data:image/png;base64,AAAA"])
def test_a_result_url_that_is_not_http_is_refused(url: str) -> None:
    """A result URL in another scheme is refused, possibly billed."""

    async def scenario() -> ProviderError:
        async with HostileServer() as server:
            server.result_url = url
            return await generate_against(server)

    error = run(scenario())
    assert error.possibly_billed and "is not http or https" in str(error)


def test_a_declared_huge_body_is_refused_before_it_is_read() -> None:
    """Content-Length 1.5 GB against a 64 MiB cap: refused at the header."""
    error, _ = download_failure("/huge-declared")
    assert error.possibly_billed and f"larger than {64 * 1024 * 1024} bytes" in str(error)


def test_an_endless_chunked_body_stops_at_the_cap() -> None:
    """A body with no length that never ends is cut at max_download_bytes."""
    error, _ = download_failure("/huge-chunked", max_download_bytes=1 << 20)
    assert error.possibly_billed and "max_download_bytes" in str(error)


def test_a_gzip_bomb_is_stopped_at_the_cap_counting_decoded_bytes() -> None:
    """8 MiB of zeros in 8 KiB of gzip: refused at a 1 MiB cap on the decoded size."""
    error, _ = download_failure("/gzip-bomb", max_download_bytes=1 << 20)
    assert error.possibly_billed and f"larger than {1 << 20} bytes" in str(error)


def test_an_unknown_content_encoding_is_refused() -> None:
    """A brotli body (which could inflate without bound) is not decoded."""
    error, _ = download_failure("/brotli")
    assert error.possibly_billed and "content encoding 'br'" in str(error)


def test_a_result_of_the_wrong_pixel_size_is_refused() -> None:
    """512 x 384 for a 256 x 256 request: possibly billed, names both sizes."""
    error, _ = download_failure("/wrong-size")
    assert error.possibly_billed and "512 x 384 pixels, not the 256 x 256" in str(error)


def test_a_pixel_bomb_is_refused_from_its_header() -> None:
    """An 11000 x 11000 PNG header: refused as more than 64 MP, never decoded."""
    error, _ = download_failure("/pixel-bomb")
    assert error.possibly_billed and "11000 x 11000" in str(error)


def test_a_200_that_is_not_json_is_possibly_billed() -> None:
    """The service answered success with garbage: the generation may have happened."""

    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"<html>oops", content_type="text/html")

    async def scenario() -> ProviderError:
        async with HostileServer() as server:
            server.answer = garbage
            return await generate_against(server)

    error = run(scenario())
    assert error.possibly_billed and error.status == 200 and "not JSON" in str(error)


def test_a_huge_json_answer_is_refused_not_read() -> None:
    """A 200 declaring 1.5 GB of JSON is refused at the header, possibly billed."""

    async def huge(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=b"{}", headers={"Content-Type": "application/json",
                                 "Content-Length": str(1_500_000_000)},
        )

    async def scenario() -> ProviderError:
        async with HostileServer() as server:
            server.answer = huge
            return await generate_against(server)

    error = run(scenario())
    assert error.possibly_billed and "larger than" in str(error)


def test_a_trickling_generation_answer_is_an_unknown_outcome_at_the_deadline() -> None:
    """A 200 whose JSON trickles forever ends as 'no whole answer', possibly billed."""

    async def scenario() -> tuple[ProviderError, int]:
        async with HostileServer() as server:

            async def trickle(request: web.Request) -> web.StreamResponse:
                return await server.trickle(request, b'{"data": [' + b" " * 10_000 + b"]}")

            server.answer = trickle
            error = await generate_against(server, timeout=0.5, unknown_outcome_retries=0)
            return error, server.log.count("/v1/images/generations")

    error, posts = run(scenario())
    assert error.possibly_billed and "no whole answer" in str(error) and posts == 1


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "10.0.0.1", "192.168.1.20",
     "169.254.169.254", "[fe80::1]", "[::ffff:127.0.0.1]:{port}"],
)
def test_a_result_on_an_internal_address_is_refused_when_the_service_is_public(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loopback, private and link-local result URLs from a public service are never fetched."""

    async def scenario() -> tuple[ProviderError, list[str]]:
        async with HostileServer() as server:
            monkeypatch.setenv("HTTP_PROXY", server.base_url)  # the "public" service
            port = server.base_url.rsplit(":", 1)[1]
            server.result_url = f"http://{target.format(port=port)}/image"
            error = await generate_against(server, base_url=PUBLIC_BASE)
            return error, server.log

    error, log = run(scenario())
    assert error.possibly_billed and "loopback, private or link-local" in str(error)
    assert log == ["/v1/images/generations"]  # the result URL was never requested


def test_a_result_on_loopback_is_fetched_when_the_service_is_on_loopback() -> None:
    """Tests and private gateways: a base URL on loopback allows loopback results."""

    async def scenario() -> bytes:
        async with HostileServer() as server:
            provider = Together(api_key=KEY, base_url=server.base_url)
            return (await provider.generate(make_request())).data

    assert hashlib.sha256(run(scenario())).hexdigest() == hashlib.sha256(png()).hexdigest()


# --------------------------------------------------------------------------- sources


def test_a_source_above_forty_megapixels_is_refused_when_declared(tmp_path: Path) -> None:
    """A 144-megapixel PNG (header only: never decoded) is a GraphError naming the source."""
    path = tmp_path / "huge.png"
    path.write_bytes(pixel_bomb_png(12000, 12000))
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    with pytest.raises(eg.GraphError, match=r"source 'huge': .* 144,000,000 pixels, more than "
                                            r"max_source_pixels=40,000,000"):
        graph.image(path)
    assert "huge" not in graph


def _peak_bytes_declaring(graph: eg.Graph, path: Path) -> tuple[str, int]:
    """The GraphError ``graph.image(path)`` raises, and the peak of Python memory
    allocated meanwhile (what reading the file whole would show)."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(eg.GraphError) as caught:
            graph.image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(caught.value), peak


def _padded(path: Path, head: bytes, size: int) -> Path:
    """``head`` then zeros up to ``size`` bytes (a sparse file: no disk spent)."""
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return path


@pytest.mark.parametrize("image_format", ["PNG", "BMP"])
def test_a_large_file_too_big_in_pixels_is_refused_from_its_header(
    tmp_path: Path, image_format: str
) -> None:
    """A 48 MB file whose header declares 64 megapixels (a PNG's, read by editgraph; a
    BMP's, read by Pillow's open without decoding) is refused naming the source and
    max_source_pixels, having read only its head: far less than the file."""
    if image_format == "PNG":
        head = pixel_bomb_png(8000, 8000)
    else:
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, format="BMP")
        head = bytearray(buffer.getvalue())
        struct.pack_into("<ii", head, 18, 8000, 8000)  # BITMAPINFOHEADER width, height
        head = bytes(head)
    path = _padded(tmp_path / f"big.{image_format.lower()}", head, 48 << 20)
    message, peak = _peak_bytes_declaring(eg.Graph(cache_dir=tmp_path / "cache"), path)
    assert message.startswith("source 'big': ")
    assert "64,000,000 pixels, more than max_source_pixels=40,000,000" in message
    assert peak < 4 << 20, f"{peak:,} bytes allocated for a {48 << 20:,}-byte file"


def test_a_source_file_above_the_byte_cap_is_refused_unread(tmp_path: Path) -> None:
    """A 100 MB file, though its header declares a small image, is refused by its size
    naming the source and the cap, before any of it is read."""
    path = _padded(tmp_path / "padded.png", png((64, 64)), 100 << 20)
    message, peak = _peak_bytes_declaring(
        eg.Graph(cache_dir=tmp_path / "cache", max_source_pixels=10**9), path
    )
    assert message.startswith("source 'padded': ")
    assert f"is {100 << 20:,} bytes, more than the {64 << 20:,}-byte cap" in message
    assert peak < 4 << 20, f"{peak:,} bytes allocated for a {100 << 20:,}-byte file"


def test_a_source_file_is_read_whole_within_the_bounds(tmp_path: Path) -> None:
    """A source larger than the head read first, within both bounds, is read whole and
    hashed as the file's bytes."""
    big = Image.effect_noise((1500, 1000), 64).convert("RGB")
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) > 64 * 1024
    path = tmp_path / "noise.png"
    path.write_bytes(data)
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    graph.image(path)
    assert graph.sources["noise"].hash == hashlib.sha256(data).hexdigest()


def test_max_source_pixels_is_a_graph_setting(tmp_path: Path) -> None:
    """Graph(max_source_pixels=...) lowers (or raises) the limit."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", max_source_pixels=100 * 100)
    graph.image(png((100, 100)), name="fits")
    with pytest.raises(eg.GraphError, match="source 'big': .* max_source_pixels=10,000"):
        graph.image(png((101, 100)), name="big")
    with pytest.raises(eg.GraphError, match="max_source_pixels: must be a positive int"):
        eg.Graph(max_source_pixels=0)


def test_a_decompression_bomb_in_another_format_is_refused(tmp_path: Path) -> None:
    """A GIF Pillow flags as a decompression bomb (no header we read) is refused."""
    buffer = io.BytesIO()
    Image.new("P", (10, 10)).save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    struct.pack_into("<HH", data, 6, 15000, 15000)  # the screen size
    struct.pack_into("<HH", data, data.index(b",") + 5, 15000, 15000)  # the frame size
    graph = eg.Graph(cache_dir=tmp_path / "cache", max_source_pixels=10**9)
    with pytest.raises(eg.GraphError, match="source 'bomb': .*too large to decode safely"):
        graph.image(bytes(data), name="bomb")


@pytest.mark.parametrize("image_format", ["GIF", "BMP", "TIFF"])
def test_undocumented_formats_are_converted_to_png_and_hashed_as_sent(
    image_format: str, tmp_path: Path
) -> None:
    """A GIF, BMP or TIFF source becomes PNG bytes; its hash is the PNG's."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buffer, format=image_format)
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    graph.image(buffer.getvalue(), name="src")
    node = graph.sources["src"]
    assert node.media_type == "image/png" and node.data.startswith(b"\x89PNG")
    assert node.hash == hashlib.sha256(node.data).hexdigest()
    with Image.open(io.BytesIO(node.data)) as image:
        assert image.size == (32, 24)
        assert image.convert("RGB").getpixel((0, 0)) == (200, 10, 10)


def test_a_cmyk_tiff_is_converted_to_rgb_png(tmp_path: Path) -> None:
    """A mode PNG cannot store (CMYK) is converted to RGB first."""
    buffer = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(buffer, format="TIFF")
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    graph.image(buffer.getvalue(), name="print")
    with Image.open(io.BytesIO(graph.sources["print"].data)) as image:
        assert image.format == "PNG" and image.mode == "RGB"


def source_server_case(path: str) -> str:
    """The GraphError message of g.image() on ``path`` of a hostile server."""

    async def scenario() -> str:
        async with HostileServer() as server:
            url = f"{server.base_url}{path}?X-Amz-Signature=SECRETTOKEN"
            graph = eg.Graph()
            try:
                await asyncio.to_thread(graph.image, url, "src")
            except eg.GraphError as exc:
                return str(exc)
        raise AssertionError("the source was expected to be refused")

    message = run(scenario())
    assert "SECRETTOKEN" not in message
    return message


def test_a_url_source_larger_than_the_cap_is_refused_without_reading_it() -> None:
    """A source URL declaring 1.5 GB: GraphError at the header, no MemoryError."""
    message = source_server_case("/huge-declared")
    assert f"is larger than {64 * 1024 * 1024:,} bytes" in message


def test_an_endless_url_source_is_cut_at_the_cap() -> None:
    """A source URL streaming without end is refused at 64 MiB, not read into memory whole."""
    message = source_server_case("/huge-chunked")
    assert "the download cap" in message


def test_a_gzip_bomb_url_source_is_refused_when_it_inflates_past_the_cap() -> None:
    """The decoded size counts: 65 MiB of zeros in 65 KiB of gzip passes the 64 MiB cap."""
    message = source_server_case("/gzip-bomb-65m")
    assert "the download cap" in message


# --------------------------------------------------------------------------- names


@pytest.fixture
def graph(tmp_path: Path) -> eg.Graph:
    """A graph with one source, 'car'."""
    g = eg.Graph(cache_dir=tmp_path / "cache")
    g.image(png(), name="car")
    return g


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a" * 101, "101 characters, over the 100"),
        ("\u732b" * 70, "210 bytes in UTF-8, over the 200"),
        ("a/b", "no '/'"),
        ("a\\b", "no '/'"),
        ("c:d", "no '/'"),
        ("what?", "no '/'"),
        ('say"hi"', "no '/'"),
        ("a<b>", "no '/'"),
        ("a|b", "no '/'"),
        ("star*", "no '/'"),
        ("bell\x07", "no '/'"),
        ("esc\x1b[31m", "no '/'"),
        ("c1\x9b", "no '/'"),
        ("new\nline", "no '/'"),
        ("con", "Windows device name"),
        ("NUL", "Windows device name"),
        ("com1", "Windows device name"),
        ("Lpt9.v2", "Windows device name"),
        ("com\u00b9", "Windows device name"),
        (".hidden", "no leading or trailing dot"),
    ],
)
def test_unportable_node_names_are_refused_when_declared(
    graph: eg.Graph, name: str, why: str
) -> None:
    """Each name fails on some system's file names: GraphError naming the node and 'name'."""
    with pytest.raises(eg.GraphError, match=r"^node .*: name: ") as caught:
        graph.edit("Paint @car blue", name=name)
    assert why in str(caught.value) and len(str(caught.value)) < 400
    assert name not in graph


def test_a_hundred_cjk_characters_pass_when_under_two_hundred_bytes(graph: eg.Graph) -> None:
    """66 CJK characters (198 bytes) are a valid name, and so is a name of 100 ASCII ones."""
    graph.edit("Paint @car blue", name="\u732b" * 66)
    graph.edit("Paint @car red", name="r" * 100)


@pytest.mark.parametrize("twin", ["Car", "CAR", "car"])
def test_names_equal_ignoring_case_collide(graph: eg.Graph, twin: str) -> None:
    """'Car' next to 'car' would be one file on macOS and Windows: refused."""
    with pytest.raises(eg.GraphError, match=rf"node '{twin}': name: .*'car' already exists"):
        graph.edit("Paint @car blue", name=twin)


def test_names_equal_after_nfc_collide(graph: eg.Graph) -> None:
    """'caf\\u00e9' and 'cafe\\u0301' (the same text, two encodings) collide."""
    graph.edit("Paint @car blue", name="caf\u00e9")
    with pytest.raises(eg.GraphError, match="already exists"):
        graph.edit("Paint @car red", name="cafe\u0301")


def test_a_failed_declaration_does_not_reserve_its_name(graph: eg.Graph) -> None:
    """An edit refused for another reason leaves its name free, in any case."""
    with pytest.raises(eg.GraphError):
        graph.edit("Paint @nobody blue", name="Blue")
    graph.edit("Paint @car blue", name="blue")


def test_default_names_from_file_stems_are_made_portable(tmp_path: Path) -> None:
    """Files named con.png, Car.png next to car.png, and a 150-char stem get valid names."""
    for stem in ("con", "car", "Car", "x" * 150):
        (tmp_path / f"{stem}.png").write_bytes(png(colour=(len(stem), 1, 2)))
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    names = [graph.image(tmp_path / f"{stem}.png").name for stem in ("con", "car", "Car",
                                                                      "x" * 150)]
    assert names[0] == "con_image" and names[1] == "car" and names[2] == "Car_1"
    assert len(names[3]) <= 92


# --------------------------------------------------------------------------- terminal

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m\r"


def escape_recipe(folder: Path) -> Path:
    """A recipe whose prompt carries terminal escape sequences."""
    (folder / "car.png").write_bytes(png())
    path = folder / "escapes.py"
    path.write_text(
        "import editgraph as eg\n"
        "def recipe() -> eg.Graph:\n"
        "    g = eg.Graph(width=256, height=256)\n"
        "    car = g.image('car.png')\n"
        f"    g.edit(f'Paint {{car}} red ' + {ESCAPES!r}, name='blue')\n"
        "    return g\n"
    )
    return path


def test_for_terminal_shows_control_characters_as_text() -> None:
    """ESC, BEL, CR, C1 and DEL become visible escapes; newline and tab stay."""
    from editgraph.redact import for_terminal

    assert for_terminal("a\x1b[31m\x07\r\x9b\x7f\u202e\n\tz") == (
        "a\\x1b[31m\\x07\\x0d\\x9b\\x7f\\u202e\n\tz"
    )


@pytest.mark.parametrize("command", ["plan", "show"])
def test_plan_and_show_print_no_escape_sequence(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt's escape sequences are printed as text, never sent to the terminal raw."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [command, str(escape_recipe(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\x9b" not in result.output and "\r" not in result.output
    assert "\\x1b" in result.output


def run_command(*args: str, base_url: str, cwd: Path) -> tuple[int, str, str]:
    """`editgraph ARGS` in a child process against ``base_url``: exit code, stdout, stderr."""
    import os
    import subprocess
    import sys

    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("TOGETHER_", "HTTP_PROXY", "http_proxy"))}
    environment.update(TOGETHER_API_KEY=KEY, TOGETHER_BASE_URL=base_url,
                       EDITGRAPH_CACHE_DIR=str(cwd / "cache"), NO_COLOR="1")
    done = subprocess.run(
        [sys.executable, "-m", "editgraph", *args], capture_output=True, text=True,
        env=environment, cwd=cwd, check=False, timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_retries_go_to_the_editgraph_logger_never_raw_to_stderr(
    verbose: bool, tmp_path: Path
) -> None:
    """A 503 then success: stderr never shows stamina's line; --verbose shows the retry."""
    from editgraph.testing import FakeTogether

    recipe = escape_recipe(tmp_path)
    with FakeTogether() as fake:
        fake.fail_next(503, retry_after=0.05, message=f"overloaded {ESCAPES}")
        args = ["--verbose"] if verbose else []
        code, out, err = run_command(*args, "run", str(recipe), "--out", "out",
                                     base_url=fake.base_url, cwd=tmp_path)
    assert code == 0, err
    assert "stamina" not in err and "\x1b" not in out + err
    if verbose:
        assert "node 'blue': Together answered 503: overloaded \\x1b]0;pwned" in err
        assert "retrying in 0.05 s (try 2)" in err
    else:
        assert "retrying" not in err


def test_a_service_message_with_escapes_is_printed_as_text(tmp_path: Path) -> None:
    """A 400 whose message carries escape sequences: exit 1, the message shown as text."""
    from editgraph.testing import FakeTogether

    recipe = escape_recipe(tmp_path)
    with FakeTogether() as fake:
        fake.fail_next(400, message=f"no {ESCAPES} thanks")
        code, out, err = run_command("run", str(recipe), "--out", "out",
                                     base_url=fake.base_url, cwd=tmp_path)
    assert code == 1
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "no \\x1b]0;pwned" in err


# --------------------------------------------------------------------------- files


def test_planted_symlinks_are_replaced_never_followed(tmp_path: Path) -> None:
    """Links planted at the final and the once-predictable temporary names write nothing."""
    import os

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(png(), name="car")
    graph.edit(f"Paint {car} blue", name="blue")
    result = graph.run(provider=eg.providers.Preview())
    image = result["blue"].filename
    planted = [image, "manifest.json", "report.html", "drawing.svg",
               f".report.html.{os.getpid()}.tmp"]
    for name in planted:
        (out / name).symlink_to(victim)
    result.save(out)
    result.report(out / "report.html")
    from editgraph.report import report_from_folder

    report_from_folder(out)
    monkey_cwd = CliRunner().invoke(
        main, ["show", str(escape_recipe(tmp_path)), "--svg", "--out", str(out / "drawing.svg")]
    )
    assert monkey_cwd.exit_code == 0, monkey_cwd.output
    assert victim.read_text() == "precious"
    for name in planted[:4]:
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


# --------------------------------------------------------------------------- saved runs


@pytest.fixture
def saved_run(tmp_path: Path) -> Path:
    """A two-edit Preview run saved to tmp_path/out; the source next to it as car.png."""
    (tmp_path / "car.png").write_bytes(png())
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(tmp_path / "car.png")
    blue = graph.edit(f"Paint {car} blue", name="blue")
    graph.edit(f"Make {blue} a night scene", name="night", output_format="png")
    return graph.run(provider=eg.providers.Preview()).save(tmp_path / "out")


def tamper(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite folder/manifest.json after ``change`` edits its JSON."""
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def assert_refused(args: list[str], *fragments: str) -> str:
    """The command exits 2 with one line naming ``fragments``, and no traceback."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output
    return result.output


@pytest.mark.parametrize(
    "file", ["/etc/hostname", "../car.png", "sub/../../car.png", "bl\x00ue.jpg", ""]
)
def test_a_report_refuses_a_manifest_file_outside_the_run_folder(
    saved_run: Path, file: str
) -> None:
    """file: an absolute path, '..', a NUL or nothing: exit 2 naming node and field."""

    def point_away(manifest: dict[str, Any]) -> None:
        manifest["edits"][0]["file"] = file

    tamper(saved_run, point_away)
    assert_refused(["report", str(saved_run)], "node 'blue': file")
    assert not (saved_run / "report.html").exists()


def test_a_link_inside_the_run_folder_that_leads_outside_is_refused(
    saved_run: Path, tmp_path: Path
) -> None:
    """blue.jpg replaced by a symlink to a file elsewhere: the report will not embed it."""
    target = saved_run / "blue.jpg"
    target.unlink()
    target.symlink_to(tmp_path / "car.png")
    assert_refused(["report", str(saved_run)], "node 'blue': file", "outside the run folder")


@pytest.mark.parametrize("created_at", [1e300, -5.0])
def test_a_manifest_with_an_impossible_date_is_refused(
    saved_run: Path, created_at: float
) -> None:
    """created_at 1e300 (or negative): one line, exit 2, for report and replay alike."""

    def far_future(manifest: dict[str, Any]) -> None:
        manifest["edits"][1]["created_at"] = created_at

    tamper(saved_run, far_future)
    assert_refused(["report", str(saved_run)], "created_at")
    assert_refused(["replay", str(saved_run / "manifest.json")], "created_at")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"model": "black-forest-labs/FLUX.2-pro", "steps": 28}, "steps: not documented"),
        ({"width": 4000, "height": 4000}, "width: 4000 is not allowed"),
        ({"negative_prompt": "blurry"}, "negative_prompt"),
        ({"node": "con"}, "Windows device name"),
    ],
)
def test_replay_puts_every_recorded_edit_through_g_edits_checks(
    saved_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    change: dict[str, Any], fragment: str,
) -> None:
    """A tampered manifest is refused before any request reaches the service."""
    from editgraph.testing import FakeTogether

    def rewrite(manifest: dict[str, Any]) -> None:
        entry = manifest["edits"][0]
        for field, value in change.items():
            if field in ("model", "node"):
                entry[field] = value
            else:
                entry["parameters"][field] = value

    tamper(saved_run, rewrite)
    with FakeTogether() as fake:
        monkeypatch.setenv("TOGETHER_API_KEY", KEY)
        monkeypatch.setenv("TOGETHER_BASE_URL", fake.base_url)
        assert_refused(["replay", str(saved_run / "manifest.json"), "--provider", "together",
                        "--cache-dir", str(tmp_path / "fresh")], fragment)
        assert fake.requests == []


def itxt_chunk(body: bytes) -> bytes:
    """A PNG iTXt chunk with ``body``."""
    return (struct.pack(">I", len(body)) + b"iTXt" + body
            + struct.pack(">I", zlib.crc32(b"iTXt" + body) & 0xFFFFFFFF))


def with_chunk(chunk: bytes) -> bytes:
    """A small PNG with ``chunk`` right after IHDR."""
    data = png((8, 8))
    return data[:33] + chunk + data[33:]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (with_chunk(itxt_chunk(b"editgraph\x00")), "iTXt chunk is malformed"),
        (with_chunk(itxt_chunk(b"editgraph\x00\x01\x00\x00\x00" + b"not zlib")),
         "does not inflate"),
        (with_chunk(itxt_chunk(b"editgraph\x00\x01\x00\x00\x00"
                               + zlib.compress(b" " * (4 << 20), 9))), "inflates past"),
        (with_chunk(itxt_chunk(b"editgraph\x00\x00\x00\x00\x00\xff\xfe")), "not UTF-8"),
        (with_chunk(itxt_chunk(b"editgraph\x00\x00\x00\x00\x00{}")), "not valid"),
        (with_chunk(itxt_chunk(b"editgraph\x00\x00\x00\x00\x00" + b"x" * (1 << 20 | 1))),
         "over 1,048,576"),
        (png((8, 8))[:50], "truncated"),
        (png((8, 8)), "carries no editgraph record"),
    ],
    ids=["no-nul", "bad-zlib", "zlib-bomb", "not-utf8", "empty-record", "huge-record",
         "truncated", "no-record"],
)
def test_malformed_provenance_is_a_provenance_error(
    data: bytes, fragment: str, tmp_path: Path
) -> None:
    """Every damaged block is one ProvenanceError, never IndexError, zlib.error or the like."""
    path = tmp_path / "image.png"
    path.write_bytes(data)
    with pytest.raises(eg.ProvenanceError, match=fragment):
        eg.provenance(path)


def jpeg_with_xmp(packet: bytes) -> bytes:
    """A small JPEG with an APP1 XMP segment holding ``packet``."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    body = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + data[2:]


@pytest.mark.parametrize(
    ("packet", "fragment"),
    [
        ((b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]><x>https://pypi.org/project/editgraph/ns/'
          b"provenance/1.0/&a;</x>"), "declares a DTD"),
        (b"<x>https://pypi.org/project/editgraph/ns/provenance/1.0/", "not well-formed"),
    ],
    ids=["entity-expansion", "broken-xml"],
)
def test_malformed_xmp_is_a_provenance_error(packet: bytes, fragment: str) -> None:
    """An XMP packet with a DTD (entity expansion) or broken XML: ProvenanceError."""
    from editgraph.provenance import read_provenance

    with pytest.raises(eg.ProvenanceError, match=fragment):
        read_provenance(jpeg_with_xmp(packet))


def test_a_truncated_extended_xmp_segment_is_a_provenance_error() -> None:
    """An extended-XMP segment shorter than its header: ProvenanceError, not struct.error."""
    from editgraph.provenance import read_provenance

    data = jpeg_with_xmp(b"<x/>")
    body = b"http://ns.adobe.com/xmp/extension/\x00ABC"
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + data[2:]
    with pytest.raises(eg.ProvenanceError, match="extended.XMP segment is truncated"):
        read_provenance(data)


def test_random_damage_to_a_saved_record_only_ever_raises_provenance_error(
    saved_run: Path,
) -> None:
    """Bytes flipped anywhere in a saved PNG's or JPEG's record: a record, None or ProvenanceError."""
    import random

    from editgraph.provenance import read_provenance

    generator = random.Random(13)
    for name in ("blue.jpg", "night.png"):
        data = (saved_run / name).read_bytes()
        for _ in range(300):
            damaged = bytearray(data)
            for _ in range(generator.randint(1, 4)):
                damaged[generator.randrange(2, min(len(data), 4000))] = generator.randrange(256)
            try:
                read_provenance(bytes(damaged))
            except eg.ProvenanceError:
                pass

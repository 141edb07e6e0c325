"""A light Together-shaped server in a child process: the "server in another process that
spends < 1 ms per call" of the client-side measures.

FakeTogether validates, reads references, draws and encodes a picture per call (2-3 ms of
CPU); this one only sleeps ``latency`` per generation and answers a result URL whose
bytes are a JPEG of the requested size, encoded once per size and padded with comment
segments to ``result_bytes`` (a real 1 MB result, header to EOI, without the encoding
cost per call). Each result is made unique by a 16-byte comment segment naming its call
(so results, and the cache keys of edits that take them as references, differ from run to
run as real generations do). It counts requests and its own CPU time.

The server is editgraph's own lean one (``editgraph.testing._server``, what the fakes
run on), not aiohttp's ``web.Application``: the server shares this machine's CPUs with
the client being measured, so its cost per call falls on every client's wall time.

Run as ``python -m benchmarks.light_server '{"latency": 0.2}'``: it prints its base URL,
then answers each ``stats`` line on stdin with a JSON line (requests, billed, cpu seconds),
as ``benchmarks.fake_service`` does, so ``FakeService(server="light")`` drives either.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import sys
import time
from typing import Any

from PIL import Image

from editgraph.testing._server import (
    LoopbackServer,
    Request,
    Response,
    Router,
    json_response,
    text_response,
)

RESULT_BYTES = 1024 * 1024


def padded_jpeg(width: int, height: int, size: int = RESULT_BYTES) -> bytes:
    """A valid JPEG of ``width`` x ``height`` pixels, ``size`` bytes long (COM segments).

    The padding is random bytes (the same for a given size), as dense as a real JPEG's
    scan: zeros would make a result cheaper to handle than a real one anywhere its bytes
    are looked at (a line-by-line file write cost 4 times more on real data than on
    zeros)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width % 251, height % 241, 90)).save(
        buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    missing = size - len(jpeg)
    noise = random.Random(width * 100_003 + height).randbytes(max(0, missing))
    segments = []
    while missing > 4:
        payload = min(missing - 4, 65533)
        segments.append(b"\xff\xfe" + (payload + 2).to_bytes(2, "big")
                        + noise[len(noise) - missing : len(noise) - missing + payload])
        missing -= payload + 4
    # SOI, the padding, then the rest of the image (its headers, scan and EOI).
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


class LightServer(LoopbackServer):
    """The routes and counters of the light server, on editgraph's lean loopback server
    (``editgraph.testing._server``: an ``asyncio.Protocol``, uvloop when installed), as
    the fakes use. aiohttp's ``web.Application`` spent 1.3 ms of CPU per call here (two
    requests and a megabyte written); this spends a fraction of that (the benchmark rows
    print it)."""

    def __init__(self, latency: float, result_bytes: int) -> None:
        super().__init__()
        self.latency = latency
        self.result_bytes = result_bytes
        self.requests = 0
        self.billed = 0
        # Per size: the JPEG, 20 bytes short of result_bytes (the mark makes it whole).
        self._results: dict[tuple[int, int], bytes] = {}

    def _add_routes(self, router: Router) -> None:
        router.add("POST", "/v1/images/generations", self.generations, eager=True)
        router.add("GET", "/results/{name}", self.result, eager=True)

    async def generations(self, request: Request) -> Response:
        """POST /v1/images/generations: wait ``latency``, answer one result URL."""
        self.requests += 1
        body = request.json()
        if not isinstance(body, dict):
            return json_response({"error": {"message": "not a JSON object"}}, 400)
        width, height = int(body.get("width", 1024)), int(body.get("height", 768))
        if (width, height) not in self._results:
            self._results[(width, height)] = padded_jpeg(width, height, self.result_bytes - 20)
        await asyncio.sleep(self.latency)
        self.billed += 1
        url = f"http://{request.header('host')}/results/{width}x{height}-{self.billed}.jpg"
        return json_response({"id": str(self.billed), "model": body.get("model"),
                              "object": "list", "data": [{"index": 0, "url": url}]})

    async def result(self, request: Request) -> Response:
        """GET /results/WxH-N.jpg: the pre-encoded JPEG of that size, marked with N."""
        self.requests += 1
        size, _, name = request.match.partition("-")
        width, _, height = size.partition("x")
        data = (self._results.get((int(width), int(height)))
                if width.isdigit() and height.isdigit() else None)
        if data is None:
            return text_response("404: Not Found", 404)
        mark = name.encode()[:16].ljust(16, b" ")
        # SOI, the 20-byte mark segment, then the shared JPEG after its SOI: written as a
        # view of it, so no megabyte is copied per call.
        return Response(200, b"".join((data[:2], b"\xff\xfe\x00\x12", mark)), "image/jpeg",
                        tail=(memoryview(data)[2:],))


def _serve(settings: dict[str, Any]) -> None:
    server = LightServer(float(settings.get("latency", 0.0)),
                         int(settings.get("result_bytes", RESULT_BYTES)))
    with server:
        print(server.base_url, flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                answer = {"requests": server.requests, "billed": server.billed,
                          "cpu": time.process_time()}
                print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))

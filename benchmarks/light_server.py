"""A light Together-shaped server in a child process: the "server in another process that
spends < 1 ms per call" of the client-side measures.

FakeTogether validates, reads references, draws and encodes a picture per call (2-3 ms of
CPU); this one only sleeps ``latency`` per generation and answers a result URL whose
bytes are a JPEG of the requested size, encoded once per size and padded with comment
segments to ``result_bytes`` (a real 1 MB result, header to EOI, without the encoding
cost per call). Each result is made unique by a 16-byte comment segment naming its call
(so results, and the cache keys of edits that take them as references, differ from run to
run as real generations do). It counts requests and its own CPU time.

Run as ``python -m benchmarks.light_server '{"latency": 0.2}'``: it prints its base URL,
then answers each ``stats`` line on stdin with a JSON line (requests, billed, cpu seconds),
as ``benchmarks.fake_service`` does, so ``FakeService(server="light")`` drives either.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import time
from typing import Any

from aiohttp import web
from PIL import Image

RESULT_BYTES = 1024 * 1024


def padded_jpeg(width: int, height: int, size: int = RESULT_BYTES) -> bytes:
    """A valid JPEG of ``width`` x ``height`` pixels, ``size`` bytes long (COM segments)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width % 251, height % 241, 90)).save(
        buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    missing = size - len(jpeg)
    segments = []
    while missing > 4:
        payload = min(missing - 4, 65533)
        segments.append(b"\xff\xfe" + (payload + 2).to_bytes(2, "big") + b"\x00" * payload)
        missing -= payload + 4
    # SOI, the padding, then the rest of the image (its headers, scan and EOI).
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


class LightServer:
    """The routes and counters of the light server."""

    def __init__(self, latency: float, result_bytes: int) -> None:
        self.latency = latency
        self.result_bytes = result_bytes
        self.requests = 0
        self.billed = 0
        # Per size: the JPEG, 20 bytes short of result_bytes (the mark makes it whole).
        self._results: dict[tuple[int, int], bytes] = {}

    async def generations(self, request: web.Request) -> web.Response:
        """POST /v1/images/generations: wait ``latency``, answer one result URL."""
        self.requests += 1
        body = await request.json()
        width, height = int(body.get("width", 1024)), int(body.get("height", 768))
        if (width, height) not in self._results:
            self._results[(width, height)] = padded_jpeg(width, height, self.result_bytes - 20)
        await asyncio.sleep(self.latency)
        self.billed += 1
        url = f"http://{request.host}/results/{width}x{height}/{self.billed}.jpg"
        return web.json_response({"id": str(self.billed), "model": body.get("model"),
                                  "object": "list", "data": [{"index": 0, "url": url}]})

    async def result(self, request: web.Request) -> web.StreamResponse:
        """GET /results/WxH/N.jpg: the pre-encoded JPEG of that size, marked with N."""
        self.requests += 1
        width, height = (int(part) for part in request.match_info["size"].split("x"))
        data = self._results.get((width, height))
        if data is None:
            raise web.HTTPNotFound()
        mark = request.match_info["name"].encode()[:16].ljust(16, b" ")
        head = b"".join((data[:2], b"\xff\xfe\x00\x12", mark))
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = len(head) + len(data) - 2
        await response.prepare(request)
        await response.write(head)
        await response.write(memoryview(data)[2:])  # no copy of the megabyte per call
        await response.write_eof()
        return response


def _serve(settings: dict[str, Any]) -> None:
    server = LightServer(float(settings.get("latency", 0.0)),
                         int(settings.get("result_bytes", RESULT_BYTES)))
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/v1/images/generations", server.generations)
    app.router.add_get("/results/{size}/{name}", server.result)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"http://127.0.0.1:{port}", flush=True)
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def read_stdin() -> None:
            for line in sys.stdin:
                if line.strip() == "stats":
                    answer = {"requests": server.requests, "billed": server.billed,
                              "cpu": time.process_time()}
                    print(json.dumps(answer), flush=True)
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=read_stdin, daemon=True).start()
        await done.wait()
        await runner.cleanup()

    asyncio.run(main())


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))

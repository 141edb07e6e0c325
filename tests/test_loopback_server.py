"""The fakes' lean loopback server: answers whose body is written in pieces."""

from __future__ import annotations

import asyncio
import threading

import httpx

from editgraph.testing._server import LoopbackServer, Request, Response, Router

_SHARED = bytes(range(256)) * 4096  # 1 MiB, served as a view of itself


class _Pieces(LoopbackServer):
    def _add_routes(self, router: Router) -> None:
        router.add("GET", "/pieces/{name}", self._pieces)

    async def _pieces(self, request: Request) -> Response:
        return Response(200, request.match.encode(), "application/octet-stream",
                        tail=(memoryview(_SHARED)[1:], b"!"))


def test_a_tail_of_views_is_sent_whole_after_the_body_with_its_length() -> None:
    """A Response's tail follows its body on the wire, counted in Content-Length, and a
    HEAD of it gets the length and no bytes; the connection serves the next request."""
    with _Pieces() as server, httpx.Client(base_url=server.base_url) as client:
        for name in ("first", "second"):
            answer = client.get(f"/pieces/{name}")
            assert answer.status_code == 200
            assert answer.content == name.encode() + _SHARED[1:] + b"!"
            assert answer.headers["content-length"] == str(len(name) + len(_SHARED))
        head = client.head("/pieces/x")
        assert head.headers["content-length"] == str(1 + len(_SHARED))
        assert head.content == b""


class _Echo(LoopbackServer):
    def _add_routes(self, router: Router) -> None:
        router.add("POST", "/echo", self._echo)

    async def _echo(self, request: Request) -> Response:
        return Response(200, request.header("x-n").encode() + b":" + request.body, "text/plain")


def test_a_body_arriving_after_its_head_is_read_whole_and_the_next_request_fresh() -> None:
    """A head answered 100 Continue (parsed, its body not there yet) gets its body in two
    writes, the second carrying the next request too: each answer has its own headers and
    whole body."""
    import socket

    with _Echo() as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-N: 1\r\nContent-Length: 10\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"01234")
            sock.sendall(b"56789POST /echo HTTP/1.1\r\nHost: x\r\nX-N: 2\r\nContent-Length: 3\r\n"
                         b"Connection: close\r\n\r\nabc")
            answer = b""
            while received := sock.recv(65536):
                answer += received
    first, second = answer.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert first.endswith(b"\r\n\r\n1:0123456789") and b"Content-Length: 12\r\n" in first
    assert second.endswith(b"\r\n\r\n2:abc") and b"Connection: close\r\n" in second


class _Eager(LoopbackServer):
    """Eager routes (first step run as the request is parsed) and one of a task."""

    def __init__(self) -> None:
        super().__init__()
        self.in_task: dict[str, bool] = {}
        self.waiting = threading.Event()
        self._opened_gate: asyncio.Event | None = None

    def _add_routes(self, router: Router) -> None:
        router.add("GET", "/now", self._now, eager=True)
        router.add("GET", "/wait", self._wait, eager=True)
        router.add("GET", "/open", self._open, eager=True)
        router.add("GET", "/boom", self._boom, eager=True)
        router.add("GET", "/task", self._now)

    async def _opened(self) -> None:
        self._opened_gate = asyncio.Event()

    async def _now(self, request: Request) -> Response:
        self.in_task[request.path] = asyncio.current_task() is not None
        return Response(200, b"now", "text/plain")

    async def _wait(self, request: Request) -> Response:
        assert self._opened_gate is not None
        self.in_task["/wait before"] = asyncio.current_task() is not None
        self.waiting.set()
        await self._opened_gate.wait()
        self.in_task["/wait after"] = asyncio.current_task() is not None
        await asyncio.sleep(0)  # a bare yield, then a future again
        await asyncio.sleep(0.001)
        return Response(200, b"waited", "text/plain")

    async def _open(self, request: Request) -> Response:
        assert self._opened_gate is not None
        self._opened_gate.set()
        return Response(200, b"opened", "text/plain")

    async def _boom(self, request: Request) -> Response:
        raise ValueError("a handler's bug")


def test_eager_routes_answer_without_a_task_and_go_on_in_one_when_they_wait() -> None:
    """An eager handler that never waits runs outside any task; one that waits is
    answered once its wait ends, the rest in a task; a route not eager runs in a task;
    an eager handler's error is a 500 and the connection serves on."""

    async def main(server: _Eager) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
            waited = asyncio.ensure_future(client.get("/wait"))
            await asyncio.to_thread(server.waiting.wait, 10)
            assert not waited.done()
            opened = await client.get("/open")
            return [await waited, opened, await client.get("/now"),
                    await client.get("/task"), await client.get("/boom"),
                    await client.get("/now")]

    with _Eager() as server:
        answers = asyncio.run(main(server))
    assert [answer.content for answer in answers[:4]] == [b"waited", b"opened", b"now", b"now"]
    assert answers[4].status_code == 500 and answers[5].status_code == 200
    assert server.in_task == {"/wait before": False, "/wait after": True, "/now": False,
                              "/task": True}


def test_stop_cuts_an_eager_handler_that_waits() -> None:
    """An eager handler still waiting when the server stops is cut after the grace period:
    stop() returns and the client sees the connection dropped."""

    async def main(server: _Eager) -> BaseException | None:
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
            waited = asyncio.ensure_future(client.get("/wait"))
            await asyncio.to_thread(server.waiting.wait, 10)
            await asyncio.to_thread(server.stop)
            try:
                await waited
            except httpx.TransportError as exc:
                return exc
            return None

    server = _Eager()
    server.start()
    assert isinstance(asyncio.run(main(server)), httpx.RemoteProtocolError)

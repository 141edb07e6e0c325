"""The fakes' lean loopback server: answers whose body is written in pieces."""

from __future__ import annotations

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

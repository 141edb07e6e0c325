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

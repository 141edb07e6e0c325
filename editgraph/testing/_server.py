"""The lifecycle every fake shares: a lean HTTP/1.1 server on 127.0.0.1, served from a thread.

Why not aiohttp's server: a fake's own CPU is the floor under every benchmark that talks
to it, and aiohttp's request machinery (router, middlewares, multidict headers, stream
readers) spent 0.5 to 0.6 ms of CPU per request here against 0.2 to 0.3 ms for this
module on an ``asyncio.Protocol``, where answering a static response costs about 0.19 ms
(measured in a child process, interleaved; benchmarks/fake_cpu.py). The fakes need
little of HTTP: one request at a time per connection (no client here pipelines), bodies
by ``Content-Length`` or ``chunked``, keep-alive, ``Expect: 100-continue``, ``HEAD`` on
what ``GET`` serves, 404/405/400/413 of their own, and dropping a connection on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import threading
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qsl, unquote

__all__ = ["LoopbackServer", "Request", "Response", "Router", "json_response", "text_response"]

_log = logging.getLogger(__name__)

#: Longest request line plus headers accepted (aiohttp's limits are of this order).
_MAX_HEAD_BYTES = 64 * 1024
_REASONS: dict[int, bytes] = {status.value: status.phrase.encode() for status in HTTPStatus}


class _BadRequest(Exception):
    """A request this server refuses to parse: answered with ``status`` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    """One parsed request: what a fake's handlers read."""

    method: str
    path: str
    query: Mapping[str, str]
    #: Header names in lower case; the last value wins for a repeated header.
    headers: Mapping[str, str]
    body: bytes
    #: The path segment a ``{name}`` route matched ("" for an exact route).
    match: str
    _transport: asyncio.Transport = field(repr=False)

    def header(self, name: str, default: str = "") -> str:
        """The value of header ``name`` (any case), else ``default``."""
        return self.headers.get(name.lower(), default)

    def abort(self) -> None:
        """Close the connection at once, without answering (a dropped connection)."""
        self._transport.abort()

    @property
    def transport(self) -> asyncio.Transport:
        """The connection, for an answer written by hand (a hostile one: a false length, a
        body that drips). Close it when done: the server then writes nothing more."""
        return self._transport

    def json(self) -> object:
        """The body parsed as JSON, or ``None`` when it is not JSON."""
        try:
            parsed: object = json.loads(self.body)
        except ValueError:
            return None
        return parsed


@dataclass(frozen=True)
class Response:
    """One answer: status, body, its media type and any extra headers."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: More of the body, written after ``body`` piece by piece and never joined: a large
    #: buffer shared by many answers goes out as a ``memoryview`` of it, with no copy.
    #: The server holds them until written; they must not change meanwhile.
    tail: tuple[bytes | memoryview, ...] = ()

    @property
    def length(self) -> int:
        """The body's length in bytes, ``tail`` included."""
        return len(self.body) + sum(memoryview(piece).nbytes for piece in self.tail)


def json_response(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``data`` as a JSON answer (``application/json; charset=utf-8``, as aiohttp writes it)."""
    return Response(status, json.dumps(data).encode(), "application/json; charset=utf-8",
                    headers or {})


def text_response(text: str, status: int = 200) -> Response:
    """A plain-text answer."""
    return Response(status, text.encode(), "text/plain; charset=utf-8")


Handler = Callable[[Request], Awaitable[Response]]


class Router:
    """Routes by method and path: exact paths, or ``/prefix/{name}`` matching one segment.

    A path that matches a route of another method is a 405 with ``Allow``; a ``GET``
    route serves ``HEAD`` too. Routes are tried in the order they were added.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, str, bool, Handler, bool]] = []

    def add(self, method: str, path: str, handler: Handler, *, eager: bool = False) -> None:
        """Serve ``method`` on ``path`` (``/files/{name}``: any one segment after the prefix).

        ``eager``: the handler's first step runs as the request is parsed, outside any
        task (a task is made only if it waits); for handlers that need no current task
        (aiohttp's client and ``asyncio.timeout`` do)."""
        is_prefix = path.endswith("}")
        pattern = path[: path.rindex("{")] if is_prefix else path
        self._routes.append((method, pattern, is_prefix, handler, eager))

    def resolve(self, method: str, path: str) -> tuple[Handler, str, bool] | Response:
        """The handler for a request, the segment it matched and whether it is eager, else
        a 404 or 405 answer."""
        allowed: list[str] = []
        for route_method, pattern, is_prefix, handler, eager in self._routes:
            if is_prefix:
                match = path[len(pattern):] if path.startswith(pattern) else ""
                if not match or "/" in match:
                    continue
            elif path != pattern:
                continue
            else:
                match = ""
            if method == route_method or (method == "HEAD" and route_method == "GET"):
                return handler, match, eager
            allowed.append(route_method)
        if allowed:
            return Response(405, b"405: Method Not Allowed", "text/plain; charset=utf-8",
                            {"Allow": ",".join(dict.fromkeys(allowed))})
        return Response(404, b"404: Not Found", "text/plain; charset=utf-8")


@functools.lru_cache(maxsize=256)
def _status_lines(status: int, content_type: str | None) -> bytes:
    """An answer's status line and Content-Type, up to its Content-Length's value."""
    reason = _REASONS.get(status, b"Unknown")
    lines = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    if content_type is not None:
        lines += b"Content-Type: " + content_type.encode("latin-1") + b"\r\n"
    return lines + b"Content-Length: "


class _Connection(asyncio.Protocol):
    """One client connection: parses requests one at a time and writes their answers."""

    def __init__(self, server: LoopbackServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._continued = False  # 100 Continue already sent for the request being read
        self._eof = False  # the client has closed its side
        # The head of the request being read, parsed, while its body arrives (a client
        # often sends them in two writes): (where the body starts, method, target,
        # version, headers).
        self._head: tuple[int, str, str, str, dict[str, str]] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not subclasses of asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._next_request()

    def eof_received(self) -> bool:
        # The client is done sending: keep the write side open for an answer in progress
        # (it closes the connection once written), else let the transport close.
        self._eof = True
        return self._task is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)

    # -- requests --------------------------------------------------------------------

    @property
    def busy(self) -> asyncio.Task[None] | None:
        return self._task

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _next_request(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        try:
            parsed = self._parse()
        except _BadRequest as bad:
            self._write(Response(bad.status, bad.message.encode(), "text/plain; charset=utf-8"),
                        head_only=False, keep_alive=False)
            return
        if parsed is None:
            return
        request, keep_alive = parsed
        resolved = self._server._router.resolve(request.method, request.path)
        serving = self._serve(request, keep_alive, resolved)
        if not isinstance(resolved, Response) and not resolved[2]:
            self._task = asyncio.get_running_loop().create_task(serving)
            return
        # An eager route's (or the router's own answer's) first step runs here, at once:
        # most never wait (a file, a 404, a generation without latency), and then no task
        # is made nor a turn of the loop spent. One that waits goes on in a task from
        # where it stopped.
        try:
            waiting = serving.send(None)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001 - a bug of ours: logged, the connection dropped
            _log.exception("%s: unhandled error serving %s %s", self._server._label,
                           request.method, request.path)
            self.abort()
            return
        self._task = asyncio.get_running_loop().create_task(_go_on(serving, waiting))

    async def _serve(
        self, request: Request, keep_alive: bool, resolved: tuple[Handler, str, bool] | Response
    ) -> None:
        if isinstance(resolved, Response):
            response = resolved
        else:
            handler, match, _ = resolved
            if match:
                request = Request(request.method, request.path, request.query, request.headers,
                                  request.body, unquote(match), request._transport)
            try:
                response = await handler(request)
            except Exception:  # noqa: BLE001 - any handler bug is a 500, as aiohttp answers
                _log.exception("%s: unhandled error answering %s %s",
                               self._server._label, request.method, request.path)
                response = text_response("500: Internal Server Error", 500)
        self._task = None
        self._write(response, head_only=request.method == "HEAD",
                    keep_alive=keep_alive and not self._eof)
        if keep_alive and self._buffer:
            self._next_request()

    def _write(self, response: Response, *, head_only: bool, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # dropped on purpose, or gone: nothing to answer
        length = response.length
        head = _status_lines(response.status, response.content_type) + b"%d\r\n" % length
        if response.headers:
            head += "".join(
                f"{name}: {value}\r\n" for name, value in response.headers.items()
            ).encode("latin-1")
        head += b"\r\n" if keep_alive else b"Connection: close\r\n\r\n"
        if head_only or not length:
            transport.write(head)
        elif response.tail:
            # uvloop's writelines keeps each piece as it is until sent (asyncio's joins
            # them before Python 3.12: a copy, still correct).
            transport.writelines((head + response.body, *response.tail))
        elif len(response.body) < 64 * 1024:
            transport.write(head + response.body)
        else:
            transport.writelines((head, response.body))
        if not keep_alive:
            transport.close()

    def _parse_head(self) -> tuple[int, str, str, str, dict[str, str]] | None:
        """The head of the next request in the buffer, or None while it is incomplete."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD_BYTES:
                raise _BadRequest(431, "Request header fields too large")
            return None
        if end > _MAX_HEAD_BYTES:
            raise _BadRequest(431, "Request header fields too large")
        lines = buffer[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[1].startswith("/"):
            raise _BadRequest(400, "Bad request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequest(505, "HTTP version not supported")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name[0] in " \t" or name[-1] in " \t":
                raise _BadRequest(400, "Bad header line")
            headers[name.lower()] = value.strip()
        return end + 4, method, target, version, headers

    def _parse(self) -> tuple[Request, bool] | None:
        """The next whole request in the buffer (removed from it), or None to wait for more."""
        buffer = self._buffer
        head = self._head
        if head is None:
            head = self._parse_head()
            if head is None:
                return None
        start, method, target, version, headers = head
        if "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked" or "content-length" in headers:
                raise _BadRequest(400, "Unsupported Transfer-Encoding")
            decoded = self._chunked_body(start)
            if decoded is None:
                self._head = head
                self._maybe_continue(headers, version)
                return None
            body, consumed = decoded
        else:
            length_text = headers.get("content-length", "0")
            if not length_text.isdigit():
                raise _BadRequest(400, "Bad Content-Length")
            length = int(length_text)
            if length > self._server.max_body_bytes:
                raise _BadRequest(413, "Request body too large")
            if len(buffer) - start < length:
                self._head = head
                self._maybe_continue(headers, version)
                return None
            body, consumed = bytes(buffer[start : start + length]), start + length
        del buffer[:consumed]
        self._head = None
        self._continued = False
        connection = headers.get("connection", "").lower()
        keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        path, _, query = target.partition("?")
        assert self._transport is not None
        request = Request(method, unquote(path) if "%" in path else path,
                          dict(parse_qsl(query)) if query else {}, headers, body, "",
                          self._transport)
        return request, keep_alive

    def _maybe_continue(self, headers: Mapping[str, str], version: str) -> None:
        if (not self._continued and version == "HTTP/1.1"
                and headers.get("expect", "").lower() == "100-continue"):
            self._continued = True
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _chunked_body(self, start: int) -> tuple[bytes, int] | None:
        """The chunked body from ``start`` and where it ends, or None while incomplete."""
        buffer, position, total = self._buffer, start, 0
        pieces: list[bytes] = []
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise _BadRequest(400, "Bad chunk size") from exc
            total += size
            if total > self._server.max_body_bytes:
                raise _BadRequest(413, "Request body too large")
            position = line_end + 2
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", position - 2)
                if trailer_end < 0:
                    return None
                return b"".join(pieces), trailer_end + 4
            if len(buffer) < position + size + 2:
                return None
            pieces.append(bytes(buffer[position : position + size]))
            position += size + 2


async def _go_on(coroutine: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Run the rest of ``coroutine``, whose first step already ran and is ``waiting``."""
    await _resumed(coroutine, waiting)


@types.coroutine
def _resumed(coroutine: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """``coroutine`` from where its first step stopped, ``waiting`` on what it yielded:
    the task running this sees ``waiting`` as if the coroutine had yielded it to it, and
    each result or exception it sends back goes on to the coroutine."""
    while True:
        try:
            sent = yield waiting
        except BaseException as exc:  # noqa: BLE001 - a cancellation, passed on as sent
            try:
                waiting = coroutine.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = coroutine.send(sent)
            except StopIteration:
                return


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (the ``testing`` extra brings it where it builds):
    it takes a sixth off the server's CPU per request here; else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class LoopbackServer:
    """An HTTP/1.1 server on 127.0.0.1 in a background thread; ``start``/``stop`` or ``with``.

    A fake adds its routes in ``_add_routes`` and may open and close what its handlers
    share (a client session) in ``_opened`` / ``_closing``, on the server's loop.
    """

    #: Largest request body accepted: eight references sent as data: URIs are large.
    max_body_bytes = 256 * 1024**2
    #: How long stop() lets in-flight requests finish before cancelling them.
    shutdown_grace_seconds = 0.25

    def __init__(self, port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port!r}")
        self._listen_port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._port: int | None = None
        self._router = Router()
        self._connections: set[_Connection] = set()

    @property
    def _label(self) -> str:
        return type(self).__name__

    def _add_routes(self, router: Router) -> None:
        raise NotImplementedError

    async def _opened(self) -> None:
        """Called on the server's loop once it accepts connections."""

    async def _closing(self) -> None:
        """Called on the server's loop as it stops."""

    def start(self) -> None:
        """Start serving on 127.0.0.1 (``port``, else a free one); returns once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError(f"{self._label} is already running; call stop() first")
        ready = threading.Event()
        self._startup_error = None
        thread = threading.Thread(
            target=self._serve_in_thread, args=(ready,), name=self._label, daemon=True
        )
        thread.start()
        ready.wait()
        if self._startup_error is not None:
            thread.join()
            raise RuntimeError(f"{self._label} could not start its server") from self._startup_error
        self._thread = thread

    def stop(self) -> None:
        """Stop serving and join the server thread; in-flight requests are cut short."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or stop_event is None:
            return
        loop.call_soon_threadsafe(stop_event.set)
        thread.join()
        self._thread = None
        self._loop = None
        self._stop_event = None
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "stopped"
        return f"<{self._label} {where}>"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: where to point editgraph (or an SDK) at the fake."""
        if self._port is None:
            raise RuntimeError(
                f"{self._label} is not running; use it as a context manager or call start()"
            )
        return f"http://127.0.0.1:{self._port}"

    def _serve_in_thread(self, ready: threading.Event) -> None:
        factory = _loop_factory()
        if factory is None or sys.version_info < (3, 11):
            asyncio.run(self._serve(ready))
            return
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        self._router = Router()
        self._add_routes(self._router)
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: _Connection(self), "127.0.0.1", self._listen_port
            )
        except OSError as exc:
            self._startup_error = exc
            ready.set()
            return
        self._port = int(server.sockets[0].getsockname()[1])
        self._loop = loop
        self._stop_event = asyncio.Event()
        await self._opened()
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            await self._shut_connections()
            await self._closing()

    async def _shut_connections(self) -> None:
        """Close idle connections; give in-flight requests the grace period, then cut them."""
        for connection in list(self._connections):
            if connection.busy is None:
                connection.close()
        in_flight: list[asyncio.Task[Any]] = [
            task for connection in self._connections if (task := connection.busy) is not None
        ]
        if in_flight:
            _, pending = await asyncio.wait(in_flight, timeout=self.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for connection in list(self._connections):
            connection.abort()
        await asyncio.sleep(0)  # let the transports run connection_lost

"""The lifecycle every fake shares: an aiohttp app on 127.0.0.1, served from a thread."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import TypeVar

from aiohttp import web

__all__ = ["LoopbackServer"]

_Self = TypeVar("_Self", bound="LoopbackServer")


class LoopbackServer:
    """An aiohttp app on 127.0.0.1 in a background thread; ``start``/``stop`` or ``with``.

    A fake adds its routes in ``_add_routes`` and may open and close what its handlers
    share (a client session) in ``_opened`` / ``_closing``, on the server's loop.
    """

    #: Largest request body accepted: eight references sent as data: URIs easily pass
    #: aiohttp's 1 MiB default.
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

    @property
    def _label(self) -> str:
        return type(self).__name__

    def _add_routes(self, app: web.Application) -> None:
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

    def __enter__(self: _Self) -> _Self:
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
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application(client_max_size=self.max_body_bytes)
        self._add_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.shutdown_grace_seconds)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self._listen_port)
            await site.start()
            self._port = int(runner.addresses[0][1])
            self._loop = asyncio.get_running_loop()
            self._stop_event = asyncio.Event()
        except OSError as exc:
            self._startup_error = exc
            await runner.cleanup()
            ready.set()
            return
        await self._opened()
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await runner.cleanup()
            await self._closing()

"""Store writes off the event loop: one writer thread per store, one commit per group.

A run hands its writes to :class:`Writes` (one per run, on the run's event loop). Writes
queued during one turn of the loop form a group (the edits of a layer that finish
together); the store's writer thread takes every group queued since its last commit and
commits them in one transaction. Each write may have a ``stage`` step that runs in the
writer thread before the transaction opens: hashing a large result and writing its blob
file, so the transaction (and the database's write lock) is held only for the rows.

When the group's commit fails (disk full, I/O error), each write is retried on its own,
so one write that cannot be kept never discards the others. Every write's outcome comes
back to its caller as an asyncio future on the caller's loop; one store shared by several
threads or loops at once has one writer thread, whose groups resolve on their own loops.
The thread runs while some run uses it and is joined when the last one closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from ..store import Store

__all__ = ["StoreWriter", "Writes", "stage_blob"]

logger = logging.getLogger("editgraph")

T = TypeVar("T")

#: Results at least this large are hashed in a worker thread, off the event loop.
HASH_OFF_LOOP_BYTES = 128 * 1024

#: A group waits for results still being hashed (so a layer shares one commit) at most
#: this long before it goes to the writer anyway.
MAX_HOLD_SECONDS = 0.02


@runtime_checkable
class _Stages(Protocol):
    def stage_blob(self, content_hash: str, data: bytes) -> None: ...


def stage_blob(store: Store, content_hash: str, data: bytes) -> None:
    """Write a blob's bytes ahead of the transaction that keeps it, where the store can
    (its ``put_blob`` inside the transaction then only adds the row)."""
    if isinstance(store, _Stages):
        store.stage_blob(content_hash, data)


class _Write:
    """One queued write: an optional stage (outside the transaction), then the operation
    (inside it), which receives what the stage returned."""

    __slots__ = ("error", "operation", "result", "stage", "staged")

    def __init__(self, operation: Callable[[Any], Any], stage: Callable[[], Any] | None) -> None:
        self.operation = operation
        self.stage = stage
        self.staged: Any = None
        self.result: Any = None
        self.error: BaseException | None = None


class _Group:
    """The writes one loop queued during one turn, and how to tell it they are done."""

    __slots__ = ("done", "futures", "loop", "started", "writes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.started = loop.time()
        self.writes: list[_Write] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.done = threading.Event()


class StoreWriter:
    """The one writer thread of a store (see the module's docstring)."""

    _registry: ClassVar[weakref.WeakKeyDictionary[Any, StoreWriter]] = (
        weakref.WeakKeyDictionary())
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, store: Store) -> None:
        # Held only while some run uses the writer: the registry's value must not keep
        # its (weak) key alive.
        self._store: Store | None = store
        self._queue: list[_Group] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._users = 0
        #: Transactions opened so far (a group's commit, and each retry on its own).
        self.commits = 0

    @classmethod
    def of(cls, store: Store) -> StoreWriter:
        """The writer of ``store`` (one per store object), taken for one more user;
        give it back with :meth:`release`."""
        with cls._registry_lock:
            try:
                writer = cls._registry.get(store)
            except TypeError:  # a store that cannot be weakly referenced: its own writer
                writer = None
                known = False
            else:
                known = True
            if writer is None:
                writer = cls(store)
                if known:
                    cls._registry[store] = writer
            with writer._changed:
                writer._users += 1
                writer._store = store
            return writer

    def release(self) -> None:
        """One user fewer; the last one stops the thread (after every queued write) and
        joins it."""
        with self._changed:
            self._users -= 1
            thread = self._thread if self._users == 0 else None
            if thread is not None:
                self._thread = None
                self._changed.notify_all()
        if thread is not None:
            thread.join()
        with self._changed:
            if self._users == 0:
                self._store = None

    def enqueue(self, group: _Group) -> None:
        """Queue ``group`` for the next commit (from any thread)."""
        with self._changed:
            self._queue.append(group)
            if self._thread is None or not self._thread.is_alive():  # (also after a fork)
                self._thread = threading.Thread(
                    target=self._work, args=(self._store,),
                    name=f"editgraph writer {self._store!r}", daemon=True,
                )
                self._thread.start()
            self._changed.notify_all()

    def _work(self, store: Store) -> None:
        me = threading.current_thread()
        while True:
            with self._changed:
                while not self._queue and self._thread is me:
                    self._changed.wait()
                if not self._queue:
                    return  # released by its last user, nothing left to write
                groups, self._queue = self._queue, []
            writes = [write for group in groups for write in group.writes]
            try:
                self._commit(store, writes)
            except BaseException as error:  # noqa: BLE001 - never leave a caller waiting
                for write in writes:
                    if write.error is None:
                        write.result, write.error = None, error
            for group in groups:
                group.done.set()
                try:
                    group.loop.call_soon_threadsafe(_resolve, group)
                except RuntimeError:  # that loop is closed: nobody is waiting
                    pass

    def _commit(self, store: Store, writes: list[_Write]) -> None:
        self.commits += _commit(store, writes)


def _commit(store: Store, writes: list[_Write]) -> int:
    """Stage each write, then run them all in one transaction; when that fails, each one
    again in its own. The number of transactions opened."""
    live = []
    for write in writes:
        if write.stage is not None:
            try:
                write.staged = write.stage()
            except Exception as error:  # noqa: BLE001 - handed to its caller
                write.error = error
                continue
        live.append(write)
    if not live:
        return 0
    try:
        with store.batch():
            for write in live:
                _run(write)
        return 1
    except Exception:  # noqa: BLE001 - the commit failed: retry each write on its own
        # (disk full, I/O error): one write that cannot be kept must not discard the
        # other finished results queued with it.
        for write in live:
            write.result, write.error = None, None
            try:
                with store.batch():
                    _run(write)
            except Exception as error:  # noqa: BLE001 - handed to its caller
                write.result, write.error = None, error
        return 1 + len(live)


_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _workers() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that hash large results: a few, kept for the process (starting
    threads in the middle of a busy turn of the loop would stall it), made anew in a
    forked child."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            workers = max(1, min(4, os.cpu_count() or 1))
            _pool = (os.getpid(), concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="editgraph hashing"))
        return _pool[1]


def _sha256(data: bytes) -> str:
    """The content hash (as ``keys.content_hash``: the store sits below keys)."""
    return hashlib.sha256(data).hexdigest()


def _run(write: _Write) -> None:
    try:
        write.result = write.operation(write.staged)
    except Exception as error:  # noqa: BLE001 - handed to its caller
        write.error = error


def _resolve(group: _Group) -> None:
    """On the group's loop: hand each write's outcome to its future."""
    for write, future in zip(group.writes, group.futures, strict=True):
        _resolve_one(write, future)


def _resolve_one(write: _Write, future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    if write.error is None:
        future.set_result(write.result)
    else:
        future.set_exception(write.error)


class Writes:
    """One run's writes, on its event loop: grouped per turn of the loop and handed to
    the store's writer thread. :meth:`close` (every exit path) waits until all of them
    are committed, then gives the writer back."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._writer: StoreWriter | None = None
        self._group: _Group | None = None
        self._sent: list[_Group] = []
        self._closed = False
        self._hashing = 0  # results being hashed now, whose writes the group waits for
        self._timer: asyncio.TimerHandle | None = None

    @property
    def writer(self) -> StoreWriter:
        """The store's writer (taken on first use)."""
        if self._writer is None:
            self._writer = StoreWriter.of(self._store)
        return self._writer

    def submit(
        self, operation: Callable[[], T], *, stage: Callable[[], Any] | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``operation`` for the next commit; the future holds its result."""
        return self.submit_staged(lambda _staged: operation(), stage=stage)

    def submit_staged(
        self, operation: Callable[[Any], T], *, stage: Callable[[], Any] | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``stage`` (run in the writer thread before the transaction) and
        ``operation`` (inside it, given what ``stage`` returned)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._closed:  # a straggler after close (a cancelled edit's cleanup): inline
            write = _Write(operation, stage)
            self._alone(write)
            _resolve_one(write, future)
            return future
        if self._group is None:
            self._group = _Group(loop)
            loop.call_soon(self.hand_over)
        self._group.writes.append(_Write(operation, stage))
        self._group.futures.append(future)
        return future

    async def digest(self, data: bytes) -> str:
        """sha256 of ``data`` (see ``off_loop``)."""
        return await self.off_loop(functools.partial(_sha256, data), size=len(data))

    async def off_loop(self, work: Callable[[], T], *, size: int) -> T:
        """``work`` on a result of ``size`` bytes (hashing it, reading its header): in a
        worker thread when the result is large (hashlib lets go of the GIL), here when
        it is small. The group being formed waits for the write that follows, so
        results that finish together still share one commit."""
        if size < HASH_OFF_LOOP_BYTES:
            return work()
        self._hashing += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(_workers(), work)
        finally:
            self._hashing -= 1
            if not self._hashing and self._group is not None:
                self._group.loop.call_soon(self.hand_over)

    def hand_over(self, *, wait_for_hashes: bool = True) -> None:
        """Send what this turn of the loop queued to the writer thread (unless results
        still being hashed are to join it, for at most ``MAX_HOLD_SECONDS``)."""
        group = self._group
        if group is None:
            return
        if wait_for_hashes and self._hashing:
            waited = group.loop.time() - group.started
            if waited < MAX_HOLD_SECONDS:
                if self._timer is None:
                    self._timer = group.loop.call_later(MAX_HOLD_SECONDS - waited,
                                                        self._hand_over_late)
                return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._group = None
        if group.writes:
            self._sent = [sent for sent in self._sent if not sent.done.is_set()]
            self._sent.append(group)
            self.writer.enqueue(group)

    def _alone(self, write: _Write) -> None:
        """Stage and commit one write here, in this thread."""
        try:
            if write.stage is not None:
                write.staged = write.stage()
            with self._store.batch():
                _run(write)
        except Exception as error:  # noqa: BLE001 - handed to its caller
            write.result, write.error = None, error

    def _hand_over_late(self) -> None:
        self._timer = None
        self.hand_over(wait_for_hashes=False)

    def wait(self) -> None:
        """Block this thread until every write handed over so far is committed."""
        self.hand_over(wait_for_hashes=False)
        for group in self._sent:
            group.done.wait()

    async def close(self) -> None:
        """Wait (without blocking the loop) until every write is committed, then give
        the writer back. Cancelled meanwhile, it still waits, blocking, and re-raises:
        nothing queued is left behind."""
        group = self._group
        if self._writer is None and group is not None and not self._hashing:
            # Nothing of this run went to the writer thread (a cached re-run): its last
            # bookkeeping is committed here rather than starting a thread for it.
            self._group = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            _commit(self._store, group.writes)
            _resolve(group)
        self.hand_over(wait_for_hashes=False)
        futures = [future for group in self._sent for future in group.futures]
        try:
            if futures:
                await asyncio.shield(asyncio.gather(*futures, return_exceptions=True))
        except asyncio.CancelledError:
            self.wait()
            raise
        finally:
            self._closed = True
            self.wait()  # at once: every group is done (or waited for just above)
            if self._writer is not None:
                writer, self._writer = self._writer, None
                writer.release()

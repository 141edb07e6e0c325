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
The thread runs while some run uses it, and stays idle a while after the last one closes
(the next run on the same folder finds it warm, with its connection open).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from ..errors import StoreLockedError
from ..store import Store

__all__ = ["StoreWriter", "Writes", "stage_blob"]

logger = logging.getLogger("editgraph")
#: What the user is waiting for (the command prints it as one line).
notices = logging.getLogger("editgraph.store")

T = TypeVar("T")

#: Results at least this large are hashed in a worker thread, off the event loop.
HASH_OFF_LOOP_BYTES = 128 * 1024

#: A group waits for results still being hashed (so a layer shares one commit) at most
#: this long before it goes to the writer anyway.
MAX_HOLD_SECONDS = 0.02
#: A run whose writes have waited this long for the store says so, once: another
#: process holding the database is the usual cause.
WAIT_NOTICE_SECONDS = 3.0


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
    """The writes one loop queued during one turn for one store, and how to tell it they
    are done."""

    __slots__ = ("done", "futures", "loop", "started", "store", "writes")

    def __init__(self, loop: asyncio.AbstractEventLoop, store: Store) -> None:
        self.loop = loop
        self.store = store
        self.started = loop.time()
        self.writes: list[_Write] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.done = threading.Event()


#: A writer no run uses any more keeps its thread, and that thread's SQLite connection,
#: this long for the next run on the same folder (a notebook's next cell, a new Graph
#: each round): starting both again cost 2-16 ms on the first hand-over of a run.
IDLE_SECONDS = 30.0
#: At most this many writers idle at once (each holds a thread and a connection); the
#: one idle longest stops first.
MAX_IDLE = 4


class StoreWriter:
    """The one writer thread of a store (see the module's docstring).

    Stores that share their backend (``DiskStore`` objects on one folder share its open
    database) share one writer: ``writer_key``, when a store has one, names it."""

    _registry: ClassVar[weakref.WeakKeyDictionary[Any, StoreWriter]] = (
        weakref.WeakKeyDictionary())
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()
    #: Writers no run uses, whose thread is still up (by ``id``), idle longest first.
    _idle: ClassVar[dict[int, StoreWriter]] = {}

    def __init__(self, store: Store) -> None:
        # Held only while some run uses the writer: the registry's value must not keep
        # its (weak) key alive, nor the thread, idle, a store.
        self._store: Store | None = store
        self._queue: list[_Group] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._users = 0
        #: Transactions opened so far (a group's commit, and each retry on its own).
        self.commits = 0

    @classmethod
    def of(cls, store: Store) -> StoreWriter:
        """The writer of ``store`` (one per store object, or per ``writer_key``), taken
        for one more user; give it back with :meth:`release`."""
        key = getattr(store, "writer_key", store)
        with cls._registry_lock:
            try:
                writer = cls._registry.get(key)
            except TypeError:  # a store that cannot be weakly referenced: its own writer
                writer = None
                known = False
            else:
                known = True
            if writer is None:
                writer = cls(store)
                if known:
                    cls._registry[key] = writer
            cls._idle.pop(id(writer), None)
            with writer._changed:
                writer._users += 1
                writer._store = store
            return writer

    def release(self) -> None:
        """One user fewer. The last one leaves the thread idle, for the next run, for
        at most ``IDLE_SECONDS`` (every queued write is committed by then: a run gives
        its writer back once its writes are durable); beyond ``MAX_IDLE`` idle writers,
        the one idle longest is stopped and joined."""
        with self._registry_lock:
            with self._changed:
                self._users -= 1
                if self._users:
                    return
                self._store = None
                self._changed.notify_all()  # its idle clock starts
                if self._thread is None:
                    return
            StoreWriter._idle[id(self)] = self
            surplus = []
            while len(StoreWriter._idle) > MAX_IDLE:
                oldest = next(iter(StoreWriter._idle))
                surplus.append(StoreWriter._idle.pop(oldest))
        for writer in surplus:
            writer._stop()

    def _stop(self) -> None:
        """Stop the thread once every queued write is committed, and join it (unless a
        run took the writer meanwhile)."""
        with self._changed:
            thread = self._thread if self._users == 0 else None
            if thread is not None:
                self._thread = None
                self._changed.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @classmethod
    def stop_idle(cls) -> int:
        """Stop every idle writer's thread now, and join it (at exit, and in tests): the
        number stopped."""
        with cls._registry_lock:
            idle = list(cls._idle.values())
            cls._idle.clear()
        for writer in idle:
            writer._stop()
        return len(idle)

    def enqueue(self, group: _Group) -> None:
        """Queue ``group`` for the next commit (from any thread)."""
        with self._changed:
            self._queue.append(group)
            if self._thread is None or not self._thread.is_alive():  # (also after a fork)
                self._thread = threading.Thread(
                    target=self._work, name=f"editgraph writer {group.store!r}", daemon=True,
                )
                self._thread.start()
            self._changed.notify_all()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            groups = self._next(me)
            if groups is None:
                return
            self._commit_groups(groups)  # empties groups: idle, the thread holds no store

    def _next(self, me: threading.Thread) -> list[_Group] | None:
        """The groups queued since the last commit (waiting for some); None when the
        thread is to stop: stopped, or idle (no user) for ``IDLE_SECONDS``."""
        with self._changed:
            while not self._queue and self._thread is me:
                if self._users:
                    self._changed.wait()
                elif not self._changed.wait(IDLE_SECONDS) and not self._queue and (
                        not self._users and self._thread is me):
                    self._thread = None  # idle too long
                    with contextlib.suppress(KeyError):
                        del StoreWriter._idle[id(self)]
            if not self._queue:
                return None
            groups, self._queue = self._queue, []
            return groups

    def _commit_groups(self, groups: list[_Group]) -> None:
        """Commit ``groups`` (one transaction per store) and tell each caller, handing
        each group over as it goes: once a caller is told, this thread holds nothing of
        its store (the caller may be about to let the store go)."""
        self._commit_stores(groups)
        while groups:
            done, loop = groups[-1].done, groups[-1].loop
            try:
                loop.call_soon_threadsafe(_resolve, groups.pop())
            except RuntimeError:  # that loop is closed: nobody is waiting
                pass
            done.set()

    def _commit_stores(self, groups: list[_Group]) -> None:
        stores: dict[int, tuple[Store, list[_Write]]] = {}
        for group in groups:
            stores.setdefault(id(group.store), (group.store, []))[1].extend(group.writes)
        for store, writes in stores.values():
            try:
                self._commit(store, writes)
            except BaseException as error:  # noqa: BLE001 - never leave a caller waiting
                for write in writes:
                    if write.error is None:
                        write.result, write.error = None, error

    def _commit(self, store: Store, writes: list[_Write]) -> None:
        self.commits += _commit(store, writes)


@atexit.register
def _stop_idle_writers() -> None:
    """At exit, idle writer threads stop and are joined (before the store closes its
    open databases, registered earlier)."""
    StoreWriter.stop_idle()


def _forget_writers() -> None:
    """In a forked child: the parent's writers (their threads are not in the child, and
    their locks may be held) are forgotten; the child makes its own."""
    StoreWriter._registry = weakref.WeakKeyDictionary()
    StoreWriter._registry_lock = threading.Lock()
    StoreWriter._idle = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers)


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
    except StoreLockedError as error:
        # Another process held the database for the whole lock timeout: each write alone
        # would wait as long again. Every caller hears it (its result stands, uncached).
        for write in live:
            write.result, write.error = None, error
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
        #: Checks, at most one pending, that the writes sent are not stuck (see
        #: ``WAIT_NOTICE_SECONDS``); ``_told`` once the run said they were.
        self._watch: asyncio.TimerHandle | None = None
        self._told = False

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
            self._group = _Group(loop, self._store)
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
            if self._watch is None and not self._told:
                self._watch = group.loop.call_later(WAIT_NOTICE_SECONDS, self._check_waiting)

    def _check_waiting(self) -> None:
        """Say, once, that this run's writes have waited ``WAIT_NOTICE_SECONDS`` for the
        store; else look again when the oldest of them will have."""
        self._watch = None
        waiting = [group for group in self._sent if not group.done.is_set()]
        if not waiting or self._told:
            return
        oldest = waiting[0]
        waited = oldest.loop.time() - oldest.started
        if waited < WAIT_NOTICE_SECONDS:
            self._watch = oldest.loop.call_later(WAIT_NOTICE_SECONDS - waited,
                                                 self._check_waiting)
            return
        self._told = True
        count = sum(len(group.writes) for group in waiting)
        notices.warning(
            "waiting for the cache (%r) to take %d write(s) for %.0f s: another process "
            "may hold its database; editgraph waits up to its lock timeout (60 s), then "
            "goes on with the results uncached (kept in memory and saved, nothing lost)",
            self._store, count, waited,
        )

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
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            self.wait()  # at once: every group is done (or waited for just above)
            if self._writer is not None:
                writer, self._writer = self._writer, None
                writer.release()

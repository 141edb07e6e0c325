"""The content-addressed store: image bytes by hash, a JSON record per key, leases.

The store is a small protocol (:class:`Store`) so that other backends (a shared
S3-compatible bucket is planned) fit the same seam; :class:`DiskStore`, on diskcache, is
the default. Nothing in it is pickled: values are bytes or JSON text, and a cache
directory holding anything else is refused rather than unpickled.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import hashlib
import io
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import diskcache
import platformdirs
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import StoreError, StoreLockedError
from .records import RECORD_VERSION, EditRecord, RecordFacts
from .requests import Submission

__all__ = [
    "DEFAULT_GRAPH",
    "LEASE_SECONDS",
    "CacheDamage",
    "CacheStats",
    "DiskStore",
    "JournalEntry",
    "Store",
    "default_cache_dir",
]

#: The graph name of a Graph not given one (a notebook, a script).
DEFAULT_GRAPH = "__main__"

#: A lease not renewed for this long is taken over by whoever wants it.
LEASE_SECONDS = 30.0
#: Once a commit gave up on a database another process kept locked (diskcache's 60 s
#: timeout), how long each next commit waits for it, until one gets through.
LOCKED_RETRY_SECONDS = 1.0

_RECORD = "record:"
_BLOB = "blob:"
_LEASE = "lease:"
_HISTORY = "history:"
_JOURNAL = "journal:"
_SAVED = "stats:saved_microdollars"
_NOTE = "note:"

_MODE_RAW = diskcache.core.MODE_RAW


@functools.lru_cache(maxsize=64)
def _rows_with_query(count: int, blobs: int) -> str:
    """``_rows_query`` of ``count`` names, and then the rows of ``blobs`` names without
    their values (whether each is kept), in one statement (see ``lookup_with``)."""
    return (
        _rows_query(count) + " UNION ALL SELECT key, mode, filename, NULL FROM Cache WHERE key "
        f"IN ({','.join('?' * blobs)}) AND raw = 1 "
        "AND (expire_time IS NULL OR expire_time > ?)"
    )


@functools.lru_cache(maxsize=64)
def _rows_query(count: int) -> str:
    """The SELECT of ``count`` names' live rows (see ``DiskStore._rows``)."""
    return (
        "SELECT key, mode, filename, value FROM Cache WHERE key IN "
        f"({','.join('?' * count)}) AND raw = 1 "
        "AND (expire_time IS NULL OR expire_time > ?)"
    )


#: diskcache's ``add`` of one row (a str key, kept raw), as one statement: a new row, or
#: one in place of an expired row kept inline (one kept in a file goes through diskcache,
#: which removes the file). diskcache's triggers keep its count and size as ever.
_ADD_ROW = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag,"
    " size, mode, filename, value) VALUES (?, 1, ?, ?, ?, 0, NULL, ?, ?, ?, ?)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
    " expire_time = excluded.expire_time, access_time = excluded.access_time,"
    " access_count = 0, tag = NULL, size = excluded.size, mode = excluded.mode,"
    " filename = excluded.filename, value = excluded.value"
    " WHERE Cache.filename IS NULL"
)
#: ... only when the row there has expired.
_ADD_ROW_NEW = (_ADD_ROW + " AND Cache.expire_time IS NOT NULL"
                " AND Cache.expire_time <= excluded.store_time")

#: The saved total (``_SAVED``, microdollars as text, kept in its row) grown by an
#: amount (< 10**17), in one statement: a new row, or the sum in place of the row there
#: when it is up to 18 digits of text kept in its row, without expiry (any other is
#: read and replaced through diskcache by ``_add_saved``).
_ADD_SAVED = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag,"
    " size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, ?, ?, NULL, ?)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
    " access_time = excluded.access_time, expire_time = NULL,"
    " value = CAST(CAST(Cache.value AS INTEGER) + CAST(excluded.value AS INTEGER) AS TEXT)"
    " WHERE Cache.filename IS NULL AND Cache.expire_time IS NULL AND Cache.mode = excluded.mode"
    " AND typeof(Cache.value) = 'text' AND Cache.value GLOB '[0-9]*'"
    " AND NOT Cache.value GLOB '*[^0-9]*' AND length(Cache.value) <= 18"
)

#: A lease of one owner given back, in one statement (``_lease_value`` writes the owner
#: first: ``{"owner": "<hex>", ...``).
_DELETE_LEASE = (
    "DELETE FROM Cache WHERE key = ? AND raw = 1 AND typeof(value) = 'text'"
    " AND instr(value, ?) > 0"
)


#: What diskcache and sqlite raise when the directory cannot be read or written
#: (diskcache.Timeout: the database stayed locked by another process).
_BACKEND_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)


class JournalEntry(BaseModel):
    """A paid task submitted for ``key`` and not yet delivered (the submission journal).

    ``request`` is the provider request as JSON (references without their bytes), so
    ``editgraph resume`` can finish the task without the recipe.
    """

    model_config = ConfigDict(frozen=True)

    key: str
    provider: str
    submission: Submission
    request: dict[str, Any]


class CacheDamage(BaseModel):
    """One damaged entry that ``verify`` found: a record or an image, and what is wrong."""

    model_config = ConfigDict(frozen=True)

    entry: str
    problem: str


class CacheStats(BaseModel):
    """Totals for ``editgraph cache info``."""

    directory: str
    records: int
    blobs: int
    bytes: int
    saved_usd: float


class Store(Protocol):
    """Records by key and blobs by hash (both write-once), leases, and a name index."""

    def get_record(self, key: str) -> EditRecord | None:
        """The record for ``key``, or None (also when its image is gone)."""
        ...

    def get_verified_record(self, key: str) -> EditRecord | None:
        """The record for ``key`` whose image reads back with its hash, or None.

        A damaged entry (unreadable record, image missing or not matching its hash) is
        a miss: it is removed and counted in ``repaired``.
        """
        ...

    def lookup(self, keys: Sequence[str]) -> dict[str, RecordFacts]:
        """The verified hits among ``keys`` (what ``get_verified_record`` would serve,
        as the facts a cached result needs), read together; misses are absent.

        Damaged entries are misses, removed and counted in ``repaired``, as there.
        """
        ...

    @property
    def repaired(self) -> int:
        """Damaged records and images this store object has removed so far."""
        ...

    def put_record(self, record: EditRecord) -> None:
        """Keep ``record``; a record already there for its key wins."""
        ...

    def get_blob(self, content_hash: str) -> bytes:
        """The bytes with this hash, checked against it; StoreError when missing or
        damaged (a damaged image is removed)."""
        ...

    def put_blob(self, content_hash: str, data: bytes) -> None:
        """Keep ``data`` under its hash (once)."""
        ...

    def has_blob(self, content_hash: str) -> bool:
        """Whether bytes with this hash are kept."""
        ...

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Group the writes made inside into one atomic commit."""
        ...

    def acquire_lease(self, key: str) -> bool:
        """Take the in-flight lease for ``key``; False while a live holder has it."""
        ...

    def renew_lease(self, key: str) -> None:
        """Keep a held lease from expiring."""
        ...

    def release_lease(self, key: str) -> None:
        """Give up a held lease."""
        ...

    def get_history(self, name: str, graph: str = DEFAULT_GRAPH) -> EditRecord | None:
        """The record of the edit ``name`` of ``graph`` last ran (or was served) as."""
        ...

    def history_keys(self, names: Sequence[str], graph: str = DEFAULT_GRAPH) -> dict[str, str]:
        """For each of ``names`` with a history in ``graph``, the key of the record it
        names (``get_history(name, graph).key``), read together."""
        ...

    def put_history(self, name: str, record: EditRecord, graph: str = DEFAULT_GRAPH) -> None:
        """Remember the record of the edit ``name`` of ``graph``, for ``plan``'s reasons."""
        ...

    def add_saved(self, usd: float) -> None:
        """Add to the running total of spend that cache hits saved."""
        ...

    def get_journal(self, key: str) -> JournalEntry | None:
        """The task journaled for ``key``, if any."""
        ...

    def put_journal(self, entry: JournalEntry) -> None:
        """Journal a submitted task, durably (replacing an earlier one for its key)."""
        ...

    def delete_journal(self, key: str) -> None:
        """Forget the task journaled for ``key`` (delivered, or nothing left to collect)."""
        ...

    def journal_entries(self) -> Iterator[JournalEntry]:
        """Every journaled task."""
        ...


def default_cache_dir() -> Path:
    """``$EDITGRAPH_CACHE_DIR``, else the platform's user cache directory."""
    configured = os.environ.get("EDITGRAPH_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("editgraph", appauthor=False))


class _BytesAndTextDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that stores only str keys and bytes or str values, never pickle.

    A value's file may be written ahead (``stage``), outside any transaction: the write
    that then stores the same key and bytes only adds its row.
    """

    def __init__(self, directory: str, **settings: Any) -> None:
        super().__init__(directory, **settings)
        self._staged: dict[str, tuple[int, tuple[Any, ...]]] = {}
        self._staged_lock = threading.Lock()

    def stage(self, key: str, value: bytes) -> None:
        """Write ``value``'s file now, for the next ``store`` of ``key``."""
        fields = super().store(value, False, key=key)
        with self._staged_lock:
            previous = self._staged.pop(key, None)
            self._staged[key] = (len(value), fields)
        if previous is not None:
            self.remove(previous[1][2])

    def _take_staged(self, key: Any, value: Any) -> tuple[Any, ...] | None:
        if type(key) is not str or type(value) is not bytes:
            return None
        with self._staged_lock:
            staged = self._staged.pop(key, None)
        if staged is None:
            return None
        if staged[0] != len(value):  # not the bytes staged (cannot happen for a blob)
            self.remove(staged[1][2])
            return None
        return staged[1]

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise StoreError(f"cache keys are str, got {type(key).__name__}")
        return super().put(key)  # type: ignore[no-any-return]

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise StoreError("the cache holds a pickled key; refusing to unpickle it")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if read or type(value) not in (bytes, str):
            raise StoreError(f"cache values are bytes or JSON text, got {type(value).__name__}")
        staged = self._take_staged(key, value)
        if staged is not None:
            return staged
        return super().store(value, read, key=key)

    def _write(self, full_path: str, iterator: Any, mode: str, encoding: str | None = None) -> int:
        """Write a value's file: bytes in one ``write``.

        diskcache hands bytes over as ``io.BytesIO`` and writes whatever iterating it
        yields, which is *lines*: a megabyte of JPEG (about 4,000 newline bytes) went out
        in 4,000 small writes, 3.6-4.0 ms of CPU against 0.7-1.0 ms for one write. The
        BytesIO's value is the bytes themselves (shared, not copied). Other values (text)
        go through diskcache's own loop.
        """
        if not isinstance(iterator, io.BytesIO):
            return int(super()._write(full_path, iterator, mode, encoding))
        data = iterator.getvalue()
        directory = os.path.dirname(full_path)
        for attempt in range(1, 11):  # diskcache's retries: another cache may remove the
            with contextlib.suppress(OSError):  # directory before the file is opened
                os.makedirs(directory)
            try:
                writer = open(full_path, mode)  # noqa: SIM115 - closed just below
            except OSError:
                if attempt == 10:
                    raise
                continue
            with writer:
                writer.write(data)
            return len(data)
        raise AssertionError("unreachable: the tenth failure is raised")  # pragma: no cover

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise StoreError("the cache holds a pickled value; refusing to unpickle it")
        return super().fetch(mode, filename, value, read)


def _parse_record(text: Any) -> EditRecord | None:
    """The record in ``text`` (0.1.0's migrated), or None when it is unreadable or a
    newer version wrote it."""
    try:
        return EditRecord.from_json(text)
    except ValueError:  # pydantic's ValidationError included
        return None


def _is_damaged(text: Any) -> bool:
    """Whether a record's text is unreadable: not a JSON object, or one this version
    should read but cannot.

    A record of a newer schema version is not damage (a newer editgraph may still serve
    it); it is a miss that a new record may replace.
    """
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return True
    if not isinstance(value, dict):
        return True
    version = value.get("schema_version", 1)
    if isinstance(version, int) and version > RECORD_VERSION:
        return False
    return _parse_record(text) is None


def _history_name(graph: str, node: str) -> str:
    """The index entry of one node of one graph (JSON: graph names are paths).

    Exactly ``json.dumps([graph, node])``, spelt out: a cached run names every node.
    """
    return f"{_HISTORY}[{_json_string(graph)}, {_json_string(node)}]"


_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _history_key(text: str) -> str | None:
    """The ``key`` of a history entry's JSON text; None when it has none, or the text is
    cut short (not ending in "}"). It is the first "key" member: editgraph writes a
    record's own fields (node, kind, version, provider) before its key, and a string
    holds its quotes escaped."""
    if not text.endswith("}"):
        return None
    start = text.find('"key":"')
    if start < 0:
        return None
    start += 7
    end = text.find('"', start)
    return None if end < 0 else text[start:end]


#: Not read yet (``None`` in a memo: read, and no history).
_UNREAD: Any = object()
#: Graphs whose history keys a store remembers (a batch runs many graphs).
_HISTORY_MEMO_GRAPHS = 4


class _HistoryMemo:
    """History keys read through one connection, with that connection's stamp then.

    SQLite's ``data_version`` changes when any other connection (another process, or
    this store's writer thread) commits, and ``total_changes`` counts the rows this
    connection changed itself: while both stay as they were, the database did not
    change, and the keys stand. The one write a cached re-run makes (the spend saved,
    not history) moves the stamp along (``DiskStore.add_saved``)."""

    __slots__ = ("keys", "stamp")

    def __init__(self, stamp: tuple[sqlite3.Connection, int, int]) -> None:
        self.stamp = stamp
        self.keys: dict[str, str | None] = {}

    def holds(self, stamp: tuple[sqlite3.Connection, int, int]) -> bool:
        """Whether nothing changed from ``self.stamp`` to ``stamp``."""
        return (stamp[0] is self.stamp[0] and stamp[1] == self.stamp[1]
                and stamp[2] == self.stamp[2])


def _boot_id() -> str | None:
    """This machine's boot id (Linux), or None where there is none to read."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    """This process's pid namespace (Linux: ``pid:[4026531836]``), or None."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _lease_identity() -> dict[str, Any]:
    """Who holds a lease: a random owner id, and where its pid means something.

    A pid names a process only on one host, since one boot, inside one pid namespace
    (two containers on one cache volume share the host name and boot id, not pids).
    """
    pid = os.getpid()
    if _MACHINE.get("pid") != pid:  # read once per process (a store opens per Graph)
        _MACHINE.update(pid=pid, boot_id=_boot_id(), pid_ns=_pid_namespace())
    return {
        "owner": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "boot_id": _MACHINE["boot_id"],
        "pid_ns": _MACHINE["pid_ns"],
        "pid": pid,
    }


_MACHINE: dict[str, Any] = {}


def _lease_owner(holder: Any) -> dict[str, Any]:
    """The JSON object of a lease, or {} when it is not one."""
    try:
        owner = json.loads(holder)
    except (ValueError, TypeError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Cache(diskcache.Cache):  # type: ignore[misc]
    """diskcache's Cache whose connections (one per thread) also take ``pragmas``."""

    pragmas: tuple[tuple[str, int], ...] = ()

    @property
    def _con(self) -> sqlite3.Connection:
        local = self._local
        applied = getattr(local, "bounded", None)
        if (applied is not None and applied[1] is self.pragmas
                and getattr(local, "con", None) is applied[0]
                and getattr(local, "pid", None) == os.getpid()):
            # This thread's connection, bounded already: the path of every statement.
            return cast(sqlite3.Connection, applied[0])
        if not self.pragmas or getattr(self._local, "connecting", False):
            # No bound asked, or diskcache's own setup of a new connection (inside).
            inner: sqlite3.Connection = super()._con
            return inner
        self._local.connecting = True
        try:
            con: sqlite3.Connection = super()._con  # then diskcache's settings are applied
        finally:
            self._local.connecting = False
        applied = getattr(self._local, "bounded", None)
        if self.pragmas and (applied is None or applied[0] is not con
                             or applied[1] != self.pragmas):
            for name, value in self.pragmas:
                con.execute(f"PRAGMA {name} = {int(value)}").fetchall()
            self._local.bounded = (con, self.pragmas)
        return con

    def unbound(self) -> None:
        """Drop ``pragmas``: this thread's connection gets diskcache's settings back now;
        a thread's connection made later has them anyway."""
        if not self.pragmas:
            return
        self.pragmas = ()
        con: sqlite3.Connection = super()._con
        for name in ("mmap_size", "cache_size"):
            con.execute(f"PRAGMA {name} = {int(getattr(self, 'sqlite_' + name))}").fetchall()
        self._local.bounded = None


#: Caches this process opened lately, by folder, most recent last (see _open_cache).
_OPEN_CACHES: collections.OrderedDict[str, tuple[diskcache.Cache, tuple[int, ...]]] = (
    collections.OrderedDict()
)
_OPEN_LIMIT = 4
_OPEN_LOCK = threading.Lock()


def _database_identity(directory: Path) -> tuple[int, int, int, int] | None:
    """Which database file is at ``directory`` now, or None: its device, inode and last
    change (a folder deleted and made anew may get the same inode number), and this
    process."""
    try:
        found = os.stat(directory / diskcache.core.DBNAME)
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_ctime_ns, os.getpid()


def _open_cache(directory: Path) -> diskcache.Cache:
    """The diskcache of ``directory``, reusing the one this process opened lately.

    Opening a diskcache costs milliseconds (about 60 statements to set it up, then
    closing that connection checkpoints SQLite's write-ahead log); a notebook cell run
    again makes a new Graph, and so a new store, each time. A folder whose database was
    replaced or deleted since, or a forked child, opens anew.
    """
    folder = str(directory.resolve())
    with _OPEN_LOCK:
        kept = _OPEN_CACHES.get(folder)
        if kept is not None:
            if _database_identity(directory) == kept[1]:
                _OPEN_CACHES.move_to_end(folder)
                return kept[0]
            del _OPEN_CACHES[folder]
            kept[0]._editgraph_kept = False
        cache = _Cache(
            folder,
            disk=_BytesAndTextDisk,
            # editgraph prunes on request (`editgraph cache prune`): no eviction, and
            # no culling scan on every write (an expired lease counts as absent).
            eviction_policy="none",
            cull_limit=0,
        )
        identity = _database_identity(directory)
        if identity is not None:
            cache._editgraph_kept = True
            _OPEN_CACHES[folder] = (cache, identity)
            while len(_OPEN_CACHES) > _OPEN_LIMIT:
                _OPEN_CACHES.popitem(last=False)[1][0]._editgraph_kept = False
    return cache


def _release_cache(cache: diskcache.Cache) -> None:
    """Close a dropped store's cache unless it is kept for the next store.

    A finalizer: it may run in the middle of anything (a garbage collection inside
    ``_open_cache`` included), so it takes no lock and reads one flag.
    """
    if not getattr(cache, "_editgraph_kept", False):
        cache.close()


@atexit.register
def _close_open_caches() -> None:
    with _OPEN_LOCK:
        kept = [cache for cache, _ in _OPEN_CACHES.values()]
        _OPEN_CACHES.clear()
    for cache in kept:
        cache._editgraph_kept = False
        cache.close()


class DiskStore:
    """The default store: one diskcache directory, safe for several processes at once.

    ``clock`` (wall-clock seconds, ``time.time`` by default) decides when a lease expires:
    a holder that cannot be looked up (another host, boot or pid namespace) keeps its
    lease until the ``expires_at`` it wrote has passed on this clock. Tests pass a
    settable one to reach that expiry without waiting ``LEASE_SECONDS``.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = _open_cache(self.directory)
        except _BACKEND_ERRORS as exc:
            raise StoreError(
                f"cache directory {str(self.directory)!r} cannot be opened for writing "
                f"({exc}); set EDITGRAPH_CACHE_DIR or pass cache_dir="
            ) from exc
        # A store dropped without close() (a Graph keeps one for its lifetime) still
        # closes its database, unless the folder's connection is kept for the next store
        # (see _open_cache): Python 3.13 warns about unclosed sqlite3 connections.
        self._closer = weakref.finalize(self, _release_cache, self._cache)
        self._leases_here: set[str] = set()
        self._leases_lock = threading.Lock()
        self._repaired = 0
        #: Whether the last commit gave up on a database locked by another process.
        self._locked_out = False
        self._identity = _lease_identity()
        #: ``_lease_value``'s JSON up to its expiry, written once (a lease is taken or
        #: renewed in the writer's commit for every edit generated).
        self._lease_head = json.dumps(self._identity)[:-1] + ', "expires_at": '
        #: The record ``put_record`` last wrote and its JSON, for ``put_history`` of the
        #: same record (the two rows of a generated edit hold the same text).
        self._last_record: tuple[EditRecord, str] | None = None
        #: Per graph, what ``history_keys`` last read and when (see ``_HistoryMemo``),
        #: most recent last.
        self._history_memo: collections.OrderedDict[str, _HistoryMemo] = (
            collections.OrderedDict()
        )
        #: While a batch holds them (``hold_saved``): microdollars ``add_saved`` was given
        #: and not committed yet; None: ``add_saved`` commits at once.
        self._held_saved: int | None = None

    def __repr__(self) -> str:
        return f"DiskStore({str(self.directory)!r})"

    @property
    def writer_key(self) -> object:
        """What names this store's writer thread: its folder's open database, which the
        stores of this process on one folder share (so do they the writer, warm from
        one Graph to the next; see ``stores.writer``)."""
        return self._cache

    def close(self) -> None:
        """Close the underlying database connection (it reopens if the store is used again)."""
        self._cache.close()

    def bound_memory(self, cache_kib: int | None = 4096) -> None:
        """Hold SQLite's memory to about ``cache_kib`` KiB of page cache and no memory map
        in every connection of this store (one per thread: the writer thread's too), so a
        long pass (a batch of 100,000 items) stays flat in memory instead of growing to
        the defaults' 32 MB cache + 64 MB map. Not kept in the directory: other processes
        keep the defaults. Stores of this process share the open cache, and the bound:
        ``None`` gives back diskcache's defaults (a batch does as it ends)."""
        if cache_kib is None:
            self._read(self._cache.unbound)
        else:
            self._cache.pragmas = (("mmap_size", 0), ("cache_size", -cache_kib))

    # records and blobs

    def get_record(self, key: str) -> EditRecord | None:
        """The record for ``key``, or None (also when its image is gone).

        An unreadable record, or one whose image is gone (its row or its file), is
        removed and counted in ``repaired``; the image bytes are not read here (see
        ``get_verified_record``).
        """
        text = self._get(_RECORD + key)
        if text is None:
            return None
        record = _parse_record(text)
        if record is None:
            if _is_damaged(text):
                self._remove_damaged(_RECORD + key, expected=text)
            return None
        if record.key != key:
            # Another key's record (copied or restored under the wrong name) would serve
            # that key's image as this one's: damage, like bytes that miss their hash.
            self._remove_damaged(_RECORD + key, expected=text)
            return None
        if not self._blob_present(record.output_hash):
            self._remove_damaged(_RECORD + key, expected=text)
            self._remove_damaged(_BLOB + record.output_hash)
            return None
        return record

    def get_verified_record(self, key: str) -> EditRecord | None:
        """The record for ``key`` whose image reads back with its hash, or None.

        A damaged entry (unreadable record, image missing or not matching its hash) is
        a miss: it is removed and counted in ``repaired``.
        """
        record = self.get_record(key)
        if record is None:
            return None
        try:
            self.get_blob(record.output_hash)
        except StoreError:
            self._remove_damaged(_RECORD + key, expected=self._get(_RECORD + key))
            return None
        return record

    def lookup(self, keys: Sequence[str]) -> dict[str, RecordFacts]:
        """The verified hits among ``keys``, read together; misses are absent.

        One SELECT for the records and one for their images (a layer of a graph is
        looked up at once); each image is read and checked against its hash, as
        ``get_verified_record`` does. A record not in the current shape, or anything
        damaged, goes through ``get_verified_record`` itself (migrated, or removed and
        counted in ``repaired``).
        """
        names = {_RECORD + key: key for key in keys}
        return self._verified(names, self._rows(list(names)))

    def lookup_with(
        self, keys: Sequence[str], *, blobs: Sequence[str], history: Sequence[str], graph: str
    ) -> tuple[dict[str, RecordFacts], bool, dict[str, str]]:
        """``lookup(keys)``, whether every one of ``blobs`` is kept (``has_blob``), and
        ``history_keys(history, graph)``, with the records, the blobs' rows and the
        history entries in one SELECT (a cached batch item's first layer: one statement
        where there were four). The images of the hits are read and hashed as ``lookup``
        does; anything unusual (an entry kept in a file, the default graph, whose older
        entries had another name) is read the ordinary way."""
        names = {_RECORD + key: key for key in keys}
        entries = {_history_name(graph, name): name for name in history}
        blob_names = [_BLOB + content_hash for content_hash in blobs]
        if (graph == DEFAULT_GRAPH or len(names) + len(entries) > 250
                or len(blob_names) > 250):
            return (self.lookup(keys), all(self.has_blob(h) for h in blobs),
                    self.history_keys(history, graph))
        wanted = [*names, *entries]
        rows = self._select(_rows_with_query(len(wanted), len(blob_names)),
                            (*wanted, time.time(), *blob_names, time.time()))
        records: list[tuple[str, int, str | None, Any]] = []
        kept: set[str] = set()
        found_history: dict[str, str] = {}
        for row in rows:
            name = row[0]
            if name in names:
                records.append(row)
            elif name in entries:  # as ``_history_keys`` reads one
                text = row[3]
                if row[1] != _MODE_RAW:  # kept in a file
                    record = self.get_history(entries[name], graph)
                    key = None if record is None else record.key
                else:
                    key = _history_key(text) if isinstance(text, str) else None
                if key is not None:
                    found_history[entries[name]] = key
            else:
                kept.add(name)
        return (self._verified(names, records),
                all(name in kept for name in blob_names), found_history)

    def _verified(self, names: Mapping[str, str],
                  rows: Sequence[tuple[str, int, str | None, Any]]) -> dict[str, RecordFacts]:
        """``lookup``'s hits from the record ``rows`` of ``names`` (row name -> key): each
        image read (one SELECT) and hashed; the rest through ``get_verified_record``."""
        found: dict[str, RecordFacts] = {}
        slow: list[str] = []
        users: dict[str, list[tuple[str, RecordFacts]]] = {}
        from_json = RecordFacts.from_json
        for name, mode, filename, value in rows:
            text = value if mode == _MODE_RAW else self._fetch((mode, filename, value))
            facts = None if text is None else from_json(text)
            # (A record of another key under this name: the slow read removes it.)
            if facts is None or facts.key != names[name]:
                slow.append(names[name])
                continue
            using = users.get(facts.output_hash)
            if using is None:
                users[facts.output_hash] = [(names[name], facts)]
            else:
                using.append((names[name], facts))
        if users:
            sha256 = hashlib.sha256
            for name, mode, filename, value in self._rows([_BLOB + h for h in users]):
                data = value if mode == _MODE_RAW else self._fetch((mode, filename, value))
                content_hash = name[len(_BLOB):]
                if type(data) is bytes and sha256(data).hexdigest() == content_hash:
                    found.update(users.pop(content_hash))
            for using in users.values():  # gone or damaged: the slow read removes it
                slow.extend(key for key, _ in using)  # and counts the repair
        for key in slow:
            record = self.get_verified_record(key)
            if record is not None:
                found[key] = RecordFacts.of(record)
        return found

    def _rows(self, names: Sequence[str]) -> list[tuple[str, int, str | None, Any]]:
        """The live rows (name, mode, filename, value) of ``names``, in one SELECT per
        500.

        diskcache has no multi-get; this reads its table as ``Cache.get`` does (str keys
        are stored raw; an expired row is absent) and leaves decoding a value kept in a
        file to ``_fetch`` (one kept in the row is the value itself).
        """
        found: list[tuple[str, int, str | None, Any]] = []
        now = time.time()
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            found += self._select(_rows_query(len(chunk)), (*chunk, now))
        return found

    def _select(self, query: str, parameters: Sequence[Any]) -> list[Any]:
        """The rows of one SELECT on diskcache's table (its connection, this thread's)."""
        return list(self._read(lambda: self._cache._sql(query, parameters).fetchall()))

    def _fetch(self, row: tuple[int, str | None, Any]) -> Any:
        """A row's value (a file's bytes when kept in a file); None when its file is gone."""
        try:
            return self._read(lambda: self._cache.disk.fetch(*row, False))
        except StoreError as error:
            if isinstance(error.__cause__, OSError):
                return None
            raise

    @property
    def repaired(self) -> int:
        """Damaged records and images this store object has removed so far."""
        return self._repaired

    def put_record(self, record: EditRecord) -> None:
        """Keep ``record``; a readable record already there for its key wins.

        Write-once holds for readable records only: one that cannot be read (damaged,
        or written by another schema version) is replaced, or the key would be paid
        for on every run.
        """
        name = _RECORD + record.key
        text = record.model_dump_json()
        self._last_record = (record, text)

        def put() -> None:
            if self._put_row(name, text):
                return
            with self._cache.transact():
                there = _parse_record(self._cache.get(name))
                if there is None or there.key != record.key:  # (another key's: damage)
                    self._cache.set(name, text)

        self._write(put)

    def get_blob(self, content_hash: str) -> bytes:
        """The bytes with this hash, checked against it; StoreError when missing or
        damaged (a damaged image is removed, and counted in ``repaired``)."""
        name = _BLOB + content_hash
        data = self._get(name)
        if not isinstance(data, bytes):
            if self._contains(name):  # the row is there, its file is gone
                self._remove_damaged(name)
                raise StoreError(
                    f"image {content_hash[:12]} is missing from the cache (its file is "
                    "gone); removed its entry: run again to make it anew"
                )
            raise StoreError(f"image {content_hash[:12]} is missing from the cache")
        if hashlib.sha256(data).hexdigest() != content_hash:
            self._remove_damaged(name)
            raise StoreError(
                f"image {content_hash[:12]} in the cache is damaged (its bytes no longer "
                "match their hash); removed it: run again to make it anew"
            )
        return data

    def put_blob(self, content_hash: str, data: bytes) -> None:
        """Keep ``data`` under its hash (once)."""
        self._write(lambda: self._put_row(_BLOB + content_hash, data))

    def _put_row(self, name: str, value: str | bytes, *, expire: float | None = None,
                 replace: bool = False) -> bool:
        """diskcache's ``add`` of ``name`` (``replace``: its ``set``) in one statement
        (diskcache's own takes two or three, and its Python costs as much as SQLite):
        whether the row was written. A row kept in a file that is to be replaced goes
        through diskcache itself, which removes the file.

        Inside ``batch`` it joins the open transaction; outside, the one statement is
        its own. The value's file (a large blob's, written ahead by ``stage_blob``) is
        written before the row, and removed when the row is not written."""
        cache = self._cache
        now = time.time()
        expire_time = None if expire is None else now + expire
        size, mode, filename, db_value = cache.disk.store(value, False, key=name)
        try:
            written = cache._con.execute(
                _ADD_ROW if replace else _ADD_ROW_NEW,
                (name, now, expire_time, now, size, mode, filename, db_value),
            ).rowcount
        except BaseException:
            if filename is not None:
                cache.disk.remove(filename)
            raise
        if written:
            return True
        if filename is not None:
            cache.disk.remove(filename)
        if replace:  # the row there is kept in a file
            return bool(cache.set(name, value, expire=expire))
        kept = cache._con.execute(
            "SELECT expire_time, filename FROM Cache WHERE key = ? AND raw = 1", (name,),
        ).fetchall()
        if kept and kept[0][0] is not None and kept[0][0] <= now and kept[0][1] is not None:
            return bool(cache.add(name, value, expire=expire))  # expired, in a file
        return False

    def has_blob(self, content_hash: str) -> bool:
        """Whether bytes with this hash are kept."""
        return self._contains(_BLOB + content_hash)

    def stage_blob(self, content_hash: str, data: bytes) -> None:
        """Write the file of a blob about to be kept, before (outside) the transaction
        whose ``put_blob`` then only adds its row: the database's write lock is not held
        while megabytes are written. Small blobs (kept in the database) need nothing."""
        if len(data) < self._cache.disk.min_file_size or self.has_blob(content_hash):
            return
        self._write(lambda: self._cache.disk.stage(_BLOB + content_hash, data))

    def _blob_present(self, content_hash: str) -> bool:
        """Whether the image's row is there and, when kept as a file, the file too
        (opened, not read: a cache hit stays one database read and one open)."""

        def present() -> bool:
            handle = self._cache.get(_BLOB + content_hash, read=True)
            if handle is None:
                return False
            if hasattr(handle, "close"):
                handle.close()
            return True

        return bool(self._read(present))

    def _remove_damaged(self, name: str, expected: Any = None) -> None:
        """Remove a damaged row (``expected``: only while it still holds that value, so
        a good record written meanwhile by another process stays)."""

        def remove() -> bool:
            with self._cache.transact():
                if expected is not None and self._cache.get(name) != expected:
                    return False
                return bool(self._cache.delete(name))

        if self._write(remove):
            with self._leases_lock:
                self._repaired += 1

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the writes made inside into one atomic commit.

        Writes that happen together (the edits of one layer finishing at once) then
        pay for one commit instead of one each.
        """
        # After a commit gave up on a database another process kept locked, the next ones
        # wait briefly (it is likely locked still) until one gets through: a run meeting
        # a stuck lock waits one lock timeout in all, not one per commit.
        con = self._cache._con if self._locked_out else None
        if con is not None:
            con.execute(f"PRAGMA busy_timeout = {int(LOCKED_RETRY_SECONDS * 1000)}")
        try:
            with self._cache.transact():
                yield
        except diskcache.Timeout as exc:
            self._locked_out = True
            held = (f"still held its database {LOCKED_RETRY_SECONDS:g} s after a commit "
                    "gave up on it" if con is not None else
                    f"held its database for {self._cache.timeout:g} s (the lock timeout)")
            raise StoreLockedError(
                f"cache {str(self.directory)!r}: another process {held}, so this write "
                "gave up; the result stands but is not cached"
            ) from exc
        except _BACKEND_ERRORS as exc:
            raise StoreError(
                f"cache {str(self.directory)!r}: cannot write ({exc}); check the directory "
                "is writable and has free space, or set EDITGRAPH_CACHE_DIR"
            ) from exc
        else:
            self._locked_out = False
        finally:
            if con is not None:
                con.execute(f"PRAGMA busy_timeout = {int(self._cache.timeout * 1000)}")

    # leases

    def acquire_lease(self, key: str) -> bool:
        """Take the in-flight lease for ``key``; False while a live holder has it.

        The holder may be another process, or another run in this one (two runs of
        the same graph at once share this store, and must not both generate).
        """
        with self._leases_lock:
            if key in self._leases_here:
                return False
            acquired = self._acquire(key)
            if acquired:
                self._leases_here.add(key)
            return acquired

    def _lease_value(self) -> str:
        """This store's lease JSON: its identity and when the lease expires unless renewed."""
        return f"{self._lease_head}{self._clock() + LEASE_SECONDS!r}}}"

    def _is_ours(self, holder: Any) -> bool:
        return bool(_lease_owner(holder).get("owner") == self._identity["owner"])

    def _holder_is_dead(self, holder: Any) -> bool:
        """Whether the lease's holder is known to be gone (its lease may be taken at once).

        Only a holder on this host, since this boot, in this pid namespace can be looked
        up by its pid; any other is presumed alive until its lease expires.
        """
        owner = _lease_owner(holder)
        if not owner:
            return True  # not a lease editgraph wrote: nobody holds it
        mine = self._identity
        if any(owner.get(field) != mine[field] for field in ("host", "boot_id", "pid_ns")):
            return False
        pid = owner.get("pid")
        return isinstance(pid, int) and not _process_alive(pid)

    def _lease_expired(self, holder: Any) -> bool:
        """Whether the lease's ``expires_at`` has passed on this store's clock (its row
        also ends then on the real clock, when diskcache stops reading it)."""
        expires_at = _lease_owner(holder).get("expires_at")
        return isinstance(expires_at, (int, float)) and expires_at <= self._clock()

    def _acquire(self, key: str) -> bool:
        name = _LEASE + key
        if self._write(lambda: self._put_row(name, self._lease_value(), expire=LEASE_SECONDS)):
            return True
        holder = self._get(name)
        if holder is None:
            return bool(self._write(
                lambda: self._put_row(name, self._lease_value(), expire=LEASE_SECONDS)
            ))
        if self._is_ours(holder):
            return True  # ours, left over from an interrupted run of this process
        if not self._holder_is_dead(holder) and not self._lease_expired(holder):
            return False

        # The holder's process is gone, or it stopped renewing: take over, unless someone
        # else just did.
        def take_over() -> bool:
            with self._cache.transact():
                if self._cache.get(name) != holder:
                    return False
                self._cache.set(name, self._lease_value(), expire=LEASE_SECONDS)
                return True

        return bool(self._write(take_over))

    def renew_lease(self, key: str) -> None:
        """Keep a held lease from expiring (never someone else's)."""
        name = _LEASE + key

        def renew() -> None:
            with self._cache.transact():
                holder = self._cache.get(name)
                if holder is None:  # it expired while we worked, and nobody took it
                    self._cache.add(name, self._lease_value(), expire=LEASE_SECONDS)
                elif self._is_ours(holder):
                    self._cache.set(name, self._lease_value(), expire=LEASE_SECONDS)

        self._write(renew)

    def release_lease(self, key: str) -> None:
        """Give up a held lease."""
        name = _LEASE + key
        owner = f'"owner": "{self._identity["owner"]}"'
        try:
            self._write(lambda: self._cache._con.execute(_DELETE_LEASE, (name, owner)))
        finally:
            with self._leases_lock:
                self._leases_here.discard(key)

    # history and stats

    def get_history(self, name: str, graph: str = DEFAULT_GRAPH) -> EditRecord | None:
        """The record of the edit ``name`` of ``graph`` last ran (or was served) as.

        History is per graph: a node is compared only with the same node of the same
        graph (a recipe's resolved path, a notebook's ``Graph(name=...)``). Entries from
        before graphs were named (keyed by node name alone) count as the default
        graph's. editgraph 0.1.0 kept only the request's key and parameters: its
        entries are read through the record of that key, while the cache still holds it.
        """
        text = self._get(_history_name(graph, name))
        if text is None and graph == DEFAULT_GRAPH:
            text = self._get(_HISTORY + name)
        if text is None:
            return None
        record = _parse_record(text)
        if record is not None:
            return record
        try:
            legacy = json.loads(text)
        except ValueError:
            return None
        if not isinstance(legacy, dict) or not isinstance(legacy.get("key"), str):
            return None
        text = self._get(_RECORD + legacy["key"])
        return None if text is None else _parse_record(text)

    def history_keys(self, names: Sequence[str], graph: str = DEFAULT_GRAPH) -> dict[str, str]:
        """For each of ``names`` with a history in ``graph``, the key of the record it
        names, read together (the key is cut from each entry's text: no record is
        parsed). An entry that is not inline text goes through ``get_history``.

        What was read for ``graph`` is not read again while the database provably did
        not change since (see ``_HistoryMemo``): a cached re-run compares a thousand
        edits with their history without reading a thousand entries."""
        stamp = self._stamp()
        memo = self._history_memo.get(graph)
        if memo is None or stamp is None or not memo.holds(stamp):
            memo = None if stamp is None else _HistoryMemo(stamp)
        found: dict[str, str] = {}
        unread: list[str] = []
        known = memo.keys if memo is not None else {}
        for name in names:
            key = known.get(name, _UNREAD)
            if key is _UNREAD:
                unread.append(name)
            elif key is not None:
                found[name] = key
        if unread:
            read = self._read_history_keys(unread, graph)
            found.update(read)
            if memo is not None:
                for name in unread:
                    known[name] = read.get(name)
        if memo is not None:
            self._history_memo[graph] = memo
            self._history_memo.move_to_end(graph)
            while len(self._history_memo) > _HISTORY_MEMO_GRAPHS:
                self._history_memo.popitem(last=False)
        return found

    def _read_history_keys(self, names: Sequence[str], graph: str) -> dict[str, str]:
        """``history_keys`` read from the database."""
        entries = {_history_name(graph, name): name for name in names}
        found, slow = self._history_keys(entries)
        if graph == DEFAULT_GRAPH:  # entries from before graphs were named
            older = {_HISTORY + name: name for name in names
                     if name not in found and name not in slow}
            more, more_slow = self._history_keys(older) if older else ({}, [])
            found.update(more)
            slow += more_slow
        for name in slow:
            record = self.get_history(name, graph)
            if record is not None:
                found[name] = record.key
        return found

    def _history_keys(self, entries: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """The ``key`` of each entry's text (by entry's node; see ``_history_key``), and
        the nodes whose entry is not inline text (kept in a file)."""
        found: dict[str, str] = {}
        slow: list[str] = []
        names = list(entries)
        now = time.time()
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            query = (
                "SELECT key, mode, CASE WHEN typeof(value) = 'text' THEN value END "
                f"FROM Cache WHERE key IN ({','.join('?' * len(chunk))}) AND raw = 1 "
                "AND (expire_time IS NULL OR expire_time > ?)"
            )
            for name, mode, text in self._select(query, (*chunk, now)):
                if mode != diskcache.core.MODE_RAW:
                    slow.append(entries[name])
                elif text is not None:
                    key = _history_key(text)
                    if key is not None:
                        found[entries[name]] = key
        return found, slow

    def _stamp(self) -> tuple[sqlite3.Connection, int, int] | None:
        """This thread's connection, SQLite's count of commits by any other connection
        (``data_version``) and the rows this one changed itself (``total_changes``);
        None when they cannot be read, or inside a transaction (which may roll back
        what is read)."""
        try:
            con: sqlite3.Connection = self._cache._con
            if con.in_transaction:
                return None
            (version,) = con.execute("PRAGMA data_version").fetchone()
            return con, int(version), con.total_changes
        except _BACKEND_ERRORS:
            return None

    def put_history(self, name: str, record: EditRecord, graph: str = DEFAULT_GRAPH) -> None:
        """Remember the record of the edit ``name`` of ``graph``, for ``plan``'s reasons."""
        last = self._last_record
        text = last[1] if last is not None and last[0] is record else record.model_dump_json()
        self._write(lambda: self._put_row(_history_name(graph, name), text, replace=True))

    def add_saved(self, usd: float) -> None:
        """Add to the running total of spend that cache hits saved (held in memory
        until ``commit_held`` while a batch holds it, see ``hold_saved``)."""
        if usd > 0:
            microdollars = round(usd * 1_000_000)
            with self._leases_lock:
                if self._held_saved is not None:
                    self._held_saved += microdollars
                    return
            self._write_not_history(lambda: self._add_saved(microdollars))

    def _write_not_history(self, write: Callable[[], None]) -> None:
        """``_write`` a change that is not history: this connection's history memos still
        hold after it (see ``_HistoryMemo``)."""
        con = self._read(lambda: self._cache._con)
        before = con.total_changes
        self._write(write)
        after = con.total_changes
        for memo in self._history_memo.values():
            if memo.stamp[0] is con and memo.stamp[2] == before:
                memo.stamp = (con, memo.stamp[1], after)

    def _add_saved(self, microdollars: int) -> None:
        """The saved total grown by ``microdollars``: one statement (its own transaction,
        or part of the caller's); diskcache's get and set took five, and a batch pass
        commits it once per group of items finishing. A row not as it writes it (kept in
        a file, not digits) is read and replaced through diskcache, as before."""
        cache = self._cache
        now = time.time()
        size, mode, filename, value = cache.disk.store(str(microdollars), False, key=_SAVED)
        if filename is None and 0 <= microdollars < 10**17 and cache._con.execute(
            _ADD_SAVED, (_SAVED, now, now, size, mode, value),
        ).rowcount:
            return
        if filename is not None:  # (a text that short is never kept in a file)
            cache.disk.remove(filename)
        with cache.transact():
            current = int(cache.get(_SAVED, "0"))
            cache.set(_SAVED, str(current + microdollars))

    def hold_saved(self, hold: bool = True) -> None:
        """Hold what ``add_saved`` adds in memory, for ``commit_held`` to write many items'
        worth in one transaction (a cached batch pass: one commit per group of items
        rather than one each); ``hold=False`` writes what is held and stops holding."""
        try:
            if not hold:
                self.commit_held()
        finally:
            with self._leases_lock:
                self._held_saved = (self._held_saved or 0) if hold else None

    @property
    def holds_saved(self) -> bool:
        """Whether ``add_saved`` is held in memory now (no write; see ``hold_saved``)."""
        return self._held_saved is not None

    def commit_held(self, notes: Mapping[str, str] | None = None) -> None:
        """Commit, in one transaction, the saved spend held so far and ``notes`` (small
        facts kept under ``note:<name>``, read with ``note``); none when there is none."""
        with self._leases_lock:
            held, self._held_saved = (self._held_saved or 0,
                                      None if self._held_saved is None else 0)
        if not held and not notes:
            return

        def commit() -> None:
            if not notes:  # one statement, its own transaction
                self._add_saved(held)
                return
            with self._cache.transact():
                if held:
                    self._add_saved(held)
                for name, value in notes.items():
                    self._cache.set(_NOTE + name, value)

        try:
            self._write_not_history(commit)
        except StoreError:
            with self._leases_lock:  # kept for the next commit
                if self._held_saved is not None:
                    self._held_saved += held
            raise

    def drop_notes(self, prefix: str, stale: Callable[[str], bool]) -> int:
        """Remove the notes named ``prefix...`` whose text ``stale`` says is of no more
        use (a note that is not text goes too); the number removed."""
        first = _NOTE + prefix
        names = self._read(lambda: [row[0] for row in self._cache._con.execute(
            "SELECT key FROM Cache WHERE key >= ? AND key < ? AND raw = 1",
            (first, first + "\U0010ffff"),
        ).fetchall()])
        dropped = 0
        for name in names:
            text = self.note(name[len(_NOTE):])
            if text is None or stale(text):
                self._write(functools.partial(self._cache.delete, name))
                dropped += 1
        return dropped

    def note(self, name: str) -> str | None:
        """The note ``commit_held`` kept under ``name``, or None."""
        # One row read as ``_rows`` reads it (a short note is its row's own text); a
        # note kept otherwise (never written so) is read through diskcache.
        for _, mode, filename, value in self._rows([_NOTE + name]):
            if mode != diskcache.core.MODE_RAW:
                value = self._fetch((mode, filename, value))
            return value if isinstance(value, str) else None
        return None

    # the submission journal

    def get_journal(self, key: str) -> JournalEntry | None:
        """The task journaled for ``key``, if any (an unreadable entry counts as none)."""
        text = self._get(_JOURNAL + key)
        if text is None:
            return None
        try:
            return JournalEntry.model_validate_json(text)
        except ValidationError:
            return None

    def put_journal(self, entry: JournalEntry) -> None:
        """Journal a submitted task; committed before this returns."""
        self._write(lambda: self._cache.set(_JOURNAL + entry.key, entry.model_dump_json()))

    def delete_journal(self, key: str) -> None:
        """Forget the task journaled for ``key``."""
        self._write(functools.partial(self._cache.delete, _JOURNAL + key))

    def journal_entries(self) -> Iterator[JournalEntry]:
        """Every readable journaled task."""
        for name in self._iterkeys():
            if name.startswith(_JOURNAL):
                entry = self.get_journal(name[len(_JOURNAL) :])
                if entry is not None:
                    yield entry

    # maintenance

    def records(self) -> Iterator[EditRecord]:
        """Every readable record."""
        for name in self._iterkeys():
            if name.startswith(_RECORD):
                record = self.get_record(name[len(_RECORD) :])
                if record is not None:
                    yield record

    def stats(self) -> CacheStats:
        """Entries, bytes and saved spend."""
        records = blobs = 0
        for name in self._iterkeys():
            records += name.startswith(_RECORD)
            blobs += name.startswith(_BLOB)
        return CacheStats(
            directory=str(self.directory),
            records=records,
            blobs=blobs,
            bytes=int(self._read(self._cache.volume)),
            saved_usd=int(self._get(_SAVED) or "0") / 1_000_000,
        )

    def prune(self, *, older_than: float | None = None, max_bytes: int | None = None) -> int:
        """Drop records older than ``older_than`` seconds, then oldest first down to
        ``max_bytes`` of images; records that can no longer be served (image gone,
        another schema) and images no record uses go too. Returns records dropped."""
        now = time.time()
        names = list(self._iterkeys())
        records: list[EditRecord] = []
        drop: set[str] = set()
        for name in names:
            if name.startswith(_RECORD):
                record = self.get_record(name[len(_RECORD) :])
                if record is None:
                    drop.add(name[len(_RECORD) :])
                else:
                    records.append(record)
        records.sort(key=lambda record: record.created_at)
        if older_than is not None:
            drop |= {r.key for r in records if now - r.created_at > older_than}
        kept = [r for r in records if r.key not in drop]
        if max_bytes is not None:
            # Several keys can share one image (same output bytes): count it once, and
            # free it only when its last record goes.
            users: dict[str, int] = {}
            sizes: dict[str, int] = {}
            for record in kept:
                users[record.output_hash] = users.get(record.output_hash, 0) + 1
                sizes[record.output_hash] = record.size_bytes or 0
            total = sum(sizes.values())
            for record in kept:
                if total <= max_bytes:
                    break
                drop.add(record.key)
                users[record.output_hash] -= 1
                if not users[record.output_hash]:
                    total -= sizes[record.output_hash]
        # An image stays while a kept record made it or took it as a reference (the
        # sources a saved run needs to be replayed).
        used = set()
        for record in records:
            if record.key not in drop:
                used.add(record.output_hash)
                used.update(reference.hash for reference in record.references)
        unused = [n for n in names if n.startswith(_BLOB) and n[len(_BLOB) :] not in used]
        for name in [_RECORD + key for key in drop] + unused:
            self._write(functools.partial(self._cache.delete, name))
        return len(drop)

    def verify(self, *, repair: bool = False) -> list[CacheDamage]:
        """Check every record and image: records readable, images present and matching
        their hashes. Returns what is damaged; with ``repair``, removes it too."""
        damage: list[CacheDamage] = []
        bad: list[tuple[str, Any]] = []
        names = list(self._iterkeys())
        blobs = {name[len(_BLOB) :] for name in names if name.startswith(_BLOB)}
        broken: dict[str, str] = {}
        for content_hash in sorted(blobs):
            name = _BLOB + content_hash
            data = self._get(name)
            if not isinstance(data, bytes):
                broken[content_hash] = "its file is missing"
            elif hashlib.sha256(data).hexdigest() != content_hash:
                broken[content_hash] = "its bytes do not match their hash"
            else:
                continue
            damage.append(CacheDamage(entry=f"image {content_hash[:12]}",
                                      problem=broken[content_hash]))
            bad.append((name, None))
        for name in names:
            if not name.startswith(_RECORD):
                continue
            text = self._get(name)
            record = _parse_record(text)
            if record is None:
                if _is_damaged(text):
                    damage.append(CacheDamage(entry=f"record {name[len(_RECORD):][:12]}",
                                              problem="unreadable (not a record)"))
                    bad.append((name, text))
                continue
            label = f"record {record.key[:12]} ({record.node})"
            if record.key != name[len(_RECORD):]:
                label = f"record {name[len(_RECORD):][:12]}"
                problem = f"it is the record of another key ({record.key[:12]})"
            elif record.output_hash in broken:
                problem = f"its image {record.output_hash[:12]} is damaged"
            elif record.output_hash not in blobs:
                problem = f"its image {record.output_hash[:12]} is missing"
            else:
                continue
            damage.append(CacheDamage(entry=label, problem=problem))
            bad.append((name, text))
        if repair:
            for name, expected in bad:
                self._remove_damaged(name, expected=expected)
        return damage

    def clear(self) -> None:
        """Remove everything."""
        self._write(self._cache.clear)

    # diskcache errors become StoreErrors at this boundary

    def _get(self, name: str) -> Any:
        return self._read(lambda: self._cache.get(name))

    def _contains(self, name: str) -> bool:
        return bool(self._read(lambda: name in self._cache))

    def _iterkeys(self) -> Iterator[str]:
        return iter(self._read(lambda: list(self._cache.iterkeys())))

    def _read(self, operation: Callable[[], Any]) -> Any:
        try:
            return operation()
        except _BACKEND_ERRORS as exc:
            raise StoreError(f"cache {str(self.directory)!r}: cannot read ({exc})") from exc

    def _write(self, operation: Callable[[], Any]) -> Any:
        try:
            return operation()
        except _BACKEND_ERRORS as exc:
            raise StoreError(
                f"cache {str(self.directory)!r}: cannot write ({exc}); check the directory "
                "is writable and has free space, or set EDITGRAPH_CACHE_DIR"
            ) from exc

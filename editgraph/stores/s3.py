"""The shared store: an S3-compatible bucket behind the store protocol, a disk cache in front.

A team (or the workers of one batch) points at one ``s3://bucket/prefix`` and pays for each
edit once. Correctness rests on the bucket's conditional writes: blobs and records are
created with ``If-None-Match: *`` (write-once; a lost race is fine) and leases are taken by
a create-only write, renewed and taken over with ``If-Match: <etag>``. The store probes
that the bucket honours both before its first use and refuses one that does not. Layout
under the prefix::

    blobs/sha256/<2 hex>/<hash>   records/<key>.json   leases/<key>.json
    history/<graph>/<node>.json   journal/<key>.json   (journal: BFL's submissions)

Every object is read through a local diskcache folder (``~/.cache/editgraph/s3/<bucket>/
<prefix>`` on Linux) and written through it, so a second pass on one machine makes no S3
request for what it already holds. Every blob read is checked against its sha256; a
mismatch is a miss, and the damaged object is removed. Endpoint and credentials come from
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``
(obstore, the ``s3`` extra, does the talking; docs/scale-out.md says why).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import platformdirs

from ..errors import StoreError
from ..records import RECORD_VERSION, EditRecord, RecordFacts
from ..store import (
    LEASE_SECONDS,
    CacheStats,
    DiskStore,
    JournalEntry,
    _boot_id,  # how a lease's holder is named and found gone, as for the disk store
    _parse_record,  # one reading of a record's JSON (with migration) for every backend
    _pid_namespace,
    _process_alive,
)
from .absent import UnkeptLocalCache

if TYPE_CHECKING:
    from obstore.store import S3Store as ObjectStore

__all__ = [
    "DEFAULT_GRAPH", "Damage", "S3Location", "S3Store", "connect", "missing_bucket", "parse_s3_url",
]

T = TypeVar("T")

#: The graph whose plan history a node name belongs to when none is named (a notebook's).
DEFAULT_GRAPH = "__main__"
#: A file in the local cache: the endpoints at which this bucket was probed and honours
#: conditional writes (so a second pass makes no S3 request for the probe either).
_PROBED = "probed-conditional-writes"


class Damage(NamedTuple):
    """One damaged entry ``verify`` found: a record or an image, and what is wrong."""

    entry: str
    problem: str


class S3Location(NamedTuple):
    """``s3://bucket/prefix`` taken apart (the prefix without slashes at either end)."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_s3_url(location: str) -> S3Location:
    """``s3://bucket/prefix`` → its bucket and prefix; StoreError when it is not one."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise StoreError(
            f"{location!r} is not an S3 location; write it as s3://BUCKET or s3://BUCKET/PREFIX"
        )
    return S3Location(parts.netloc, parts.path.strip("/"))


def _settings() -> dict[str, str]:
    """obstore settings from the usual AWS variables (only those that are set)."""
    variables = {
        "endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
        "access_key_id": ("AWS_ACCESS_KEY_ID",),
        "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
        "session_token": ("AWS_SESSION_TOKEN",),
    }
    settings = {}
    for setting, names in variables.items():
        value = next((os.environ[name] for name in names if os.environ.get(name)), None)
        if value is not None:
            settings[setting] = value
    settings.setdefault("region", "us-east-1")
    return settings


def _secrets() -> list[str]:
    return [os.environ[name] for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
            if os.environ.get(name)]


def _scrub(text: str) -> str:
    """``text`` with any credential from the environment blanked out."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


def connect(location: S3Location) -> ObjectStore:
    """An obstore client for ``location``'s bucket and prefix, configured from the
    environment; an ``http://`` endpoint (MinIO, moto) is used as given."""
    try:
        from obstore.store import S3Store as ObjectStore
    except ImportError as exc:
        raise StoreError(
            f"{location}: the S3 store needs obstore; pip install 'editgraph[s3]'"
        ) from exc
    settings = _settings()
    endpoint = settings.get("endpoint", "")
    try:
        return ObjectStore(
            location.bucket,
            prefix=location.prefix or None,
            config=settings,  # type: ignore[arg-type]
            client_options={"allow_http": endpoint.startswith("http://")},
        )
    except Exception as exc:  # obstore's configuration errors
        raise StoreError(f"{location}: cannot configure the S3 client: {_scrub(str(exc))}") from exc


def missing_bucket(location: S3Location) -> StoreError:
    """The one line for a PUT that answered 404 (NoSuchBucket): for the store and the
    image host alike."""
    return StoreError(
        f"{location}: the bucket {location.bucket!r} does not exist (or these credentials "
        "cannot see it); create it, or check AWS_ENDPOINT_URL and the bucket's name"
    )


def _default_local_dir(location: S3Location) -> Path:
    base = Path(platformdirs.user_cache_dir("editgraph", appauthor=False)) / "s3" / location.bucket
    return base / location.prefix if location.prefix else base


def _blob_path(content_hash: str) -> str:
    return f"blobs/sha256/{content_hash[:2]}/{content_hash}"


def _history_path(graph: str, node: str) -> str:
    return f"history/{urllib.parse.quote(graph, safe='')}/{urllib.parse.quote(node, safe='')}.json"


def _journal_path(key: str) -> str:
    return f"journal/{key}.json"


class S3Store:
    """Records, blobs, leases and history in an S3-compatible bucket, read and written
    through a local disk cache.

    Args:
        location: ``s3://bucket/prefix``.
        local_dir: the local cache folder (default: the platform cache directory's
            ``editgraph/s3/<bucket>/<prefix>``).
        clock: wall-clock seconds, for lease expiry (injectable for tests).
        create: False for what only reads (plan, ``cache info|verify``): a local cache
            folder that does not exist is not made; what the bucket serves is then not
            kept on this machine.

    Raises:
        StoreError: the location is not ``s3://...``, obstore is missing, or the bucket
            does not honour conditional writes (the probe, on first use).
    """

    def __init__(
        self,
        location: str,
        *,
        local_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
        create: bool = True,
    ) -> None:
        self.location = parse_s3_url(location)
        self._objects = connect(self.location)
        directory = Path(local_dir) if local_dir is not None else _default_local_dir(self.location)
        self.local: DiskStore | UnkeptLocalCache
        if not create and not os.path.lexists(directory):
            self.local = UnkeptLocalCache(directory)
        else:
            self.local = DiskStore(directory)
        self._clock = clock
        self._repaired = 0
        self._lock = threading.Lock()
        self._leases: dict[str, str] = {}  # key -> the etag of the lease we hold
        self._acquiring: set[str] = set()  # keys whose lease a run here is taking now
        self._uploaded: set[str] = set()  # blobs staged (in the bucket), rows not yet kept
        self._identity = {
            "owner": uuid.uuid4().hex, "host": os.uname().nodename, "boot_id": _boot_id(),
            "pid_ns": _pid_namespace(), "pid": os.getpid(),
        }
        self._probe()

    def __repr__(self) -> str:
        return f"S3Store({str(self.location)!r})"

    def close(self) -> None:
        """Close the local cache's database (it reopens if the store is used again)."""
        self.local.close()

    @property
    def repaired(self) -> int:
        """Damaged records and images this store object has removed so far."""
        return self._repaired + int(getattr(self.local, "repaired", 0))

    # ------------------------------------------------------------------ the probe

    def _probe(self) -> None:
        """Refuse a bucket that ignores ``If-None-Match: *`` or ``If-Match``: leases and
        write-once records would silently fail, and edits be paid twice."""
        marker = self.local.directory / _PROBED
        endpoint = _settings().get("endpoint", "aws")
        with contextlib.suppress(OSError):
            if endpoint in marker.read_text(encoding="utf-8").splitlines():
                return
        import obstore
        from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

        path = f"probe/{uuid.uuid4().hex}.json"
        try:
            created = self._call(
                "write", lambda: obstore.put(self._objects, path, b"{}", mode="create"))
        except (NotFoundError, FileNotFoundError):  # a PUT answered 404: NoSuchBucket
            raise missing_bucket(self.location) from None
        etag = created.get("e_tag")

        def answers(write: Callable[[], object], expected: type[Exception] | None) -> bool:
            """Whether ``write`` fails with ``expected`` (None: succeeds); any other
            outcome (accepted when it should not be, 501 Not Implemented...) is a no."""
            try:
                write()
            except Exception as exc:  # noqa: BLE001 - every other outcome is a "no"
                return expected is not None and isinstance(exc, expected)
            return expected is None

        create_only = answers(
            lambda: obstore.put(self._objects, path, b"{}", mode="create"), AlreadyExistsError)
        if_match = etag is not None and answers(
            lambda: obstore.put(self._objects, path, b"{}", mode={"e_tag": '"0-editgraph-probe"'}),
            PreconditionError,
        ) and answers(lambda: obstore.put(self._objects, path, b"{}", mode={"e_tag": etag}), None)
        self._call("write", lambda: obstore.delete(self._objects, path))
        if not (create_only and if_match):
            missing = " and ".join(
                header for header, ok in (("If-None-Match: *", create_only),
                                          ("If-Match", if_match)) if not ok
            )
            raise StoreError(
                f"{self.location}: the bucket ignores conditional writes ({missing} on "
                "PUT); editgraph's shared cache needs them to pay for each edit once. Use "
                "AWS S3, Cloudflare R2, MinIO or another store that honours If-None-Match "
                "and If-Match on PutObject"
            )
        # (With no local folder, opened only to read, there is nowhere to note it: the
        # next use probes again, which leaves nothing behind in the bucket either.)
        with contextlib.suppress(OSError), marker.open("a", encoding="utf-8") as lines:
            lines.write(endpoint + "\n")

    # ------------------------------------------------------------------ S3 calls

    def _call(self, action: str, operation: Callable[[], T]) -> T:
        """Run one S3 operation; obstore's own errors pass through for the caller to
        read (not found, precondition), any other failure becomes a StoreError."""
        from obstore.exceptions import (
            AlreadyExistsError,
            NotFoundError,
            PreconditionError,
        )

        try:
            return operation()
        except (AlreadyExistsError, NotFoundError, FileNotFoundError, PreconditionError):
            raise
        except Exception as exc:  # obstore raises its own tree and OSErrors
            raise StoreError(
                f"{self.location}: cannot {action} ({_scrub(str(exc)).splitlines()[0]}); "
                "check AWS_ENDPOINT_URL, the credentials and the bucket"
            ) from exc

    def _get(self, path: str) -> tuple[bytes, str | None] | None:
        """The object's bytes and etag, or None when there is none."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            result = self._call("read", lambda: obstore.get(self._objects, path))
            return bytes(result.bytes()), result.meta.get("e_tag")
        except (NotFoundError, FileNotFoundError):
            return None

    def _create(self, path: str, data: bytes) -> str | None:
        """Create ``path`` with ``data`` unless it exists; its etag, or None when it did."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            result = self._call("write", lambda: obstore.put(self._objects, path, data, mode="create"))
        except (AlreadyExistsError, PreconditionError):
            return None
        return result.get("e_tag")

    def _replace(self, path: str, data: bytes, etag: str) -> str | None:
        """Overwrite ``path`` only while it still has ``etag``; the new etag, or None."""
        import obstore
        from obstore.exceptions import NotFoundError, PreconditionError

        try:
            result = self._call("write", lambda: obstore.put(
                self._objects, path, data, mode={"e_tag": etag}))
        except (PreconditionError, NotFoundError, FileNotFoundError):
            return None
        return result.get("e_tag")

    def _delete(self, path: str) -> None:
        import obstore
        from obstore.exceptions import NotFoundError

        with contextlib.suppress(NotFoundError, FileNotFoundError):
            self._call("write", lambda: obstore.delete(self._objects, path))

    def _put(self, path: str, data: bytes) -> None:
        import obstore

        self._call("write", lambda: obstore.put(self._objects, path, data))

    def _exists(self, path: str) -> bool:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            self._call("read", lambda: obstore.head(self._objects, path))
        except (NotFoundError, FileNotFoundError):
            return False
        return True

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        import obstore

        for chunk in self._call("list", lambda: list(obstore.list(self._objects, prefix))):
            yield from chunk  # type: ignore[misc]

    def _count_repair(self, removed: int = 1) -> None:
        with self._lock:
            self._repaired += removed

    # ------------------------------------------------------------------ records and blobs

    def get_record(self, key: str) -> EditRecord | None:
        """The record for ``key``, or None: from the local cache, else from the bucket
        with its image (checked against its hash; a damaged entry is removed: a miss)."""
        record = self.local.get_record(key)
        if record is not None:
            return record
        found = self._get(f"records/{key}.json")
        if found is None:
            return None
        text = found[0]
        record = _parse_record(text)
        if record is not None and record.key != key:
            # A record for another key (copied or restored to the wrong name) would serve
            # that key's image as this one's: damage, like bytes that miss their hash.
            self._delete(f"records/{key}.json")
            self._count_repair()
            return None
        if record is None:
            if _is_damaged(text):
                self._delete(f"records/{key}.json")
                self._count_repair()
            return None
        try:
            self.get_blob(record.output_hash)
        except StoreError:
            self._delete(f"records/{key}.json")
            self._count_repair()
            return None
        self.local.put_record(record)
        return record

    def get_verified_record(self, key: str) -> EditRecord | None:
        """The record for ``key`` whose image reads back with its hash, or None."""
        record = self.get_record(key)
        if record is None:
            return None
        try:
            self.get_blob(record.output_hash)
        except StoreError:
            return self.get_record(key)
        return record

    def lookup(self, keys: Sequence[str]) -> dict[str, RecordFacts]:
        """The verified hits among ``keys``: ``get_verified_record`` for each (its
        local cache answers first, so a re-run on this machine reads no bucket)."""
        found: dict[str, RecordFacts] = {}
        for key in dict.fromkeys(keys):
            record = self.get_verified_record(key)
            if record is not None:
                found[key] = RecordFacts.of(record)
        return found

    def put_record(self, record: EditRecord) -> None:
        """Keep ``record`` here and in the bucket; a readable record already there wins
        (an unreadable one is replaced, or the key would be paid for on every run)."""
        path = f"records/{record.key}.json"
        text = record.model_dump_json().encode()
        if self._create(path, text) is None:
            found = self._get(path)
            if found is not None and _parse_record(found[0]) is None and found[1]:
                self._replace(path, text, found[1])
        self.local.put_record(record)

    def get_blob(self, content_hash: str) -> bytes:
        """The bytes with this hash, checked against it; StoreError when missing or
        damaged everywhere (a damaged copy is removed)."""
        if self.local.has_blob(content_hash):
            with contextlib.suppress(StoreError):
                data = self.local.get_blob(content_hash)
                if hashlib.sha256(data).hexdigest() == content_hash:
                    return data
        found = self._get(_blob_path(content_hash))
        if found is None:
            raise StoreError(f"image {content_hash[:12]} is missing from {self.location}")
        data = found[0]
        if hashlib.sha256(data).hexdigest() != content_hash:
            self._delete(_blob_path(content_hash))
            self._count_repair()
            raise StoreError(
                f"image {content_hash[:12]} in {self.location} is damaged (its bytes no "
                "longer match their hash); removed it: run again to make it anew"
            )
        self.local.put_blob(content_hash, data)
        return data

    def put_blob(self, content_hash: str, data: bytes) -> None:
        """Keep ``data`` under its hash, here and in the bucket (created once)."""
        with self._lock:
            uploaded = content_hash in self._uploaded
            self._uploaded.discard(content_hash)
        if not uploaded:
            self._create(_blob_path(content_hash), data)
        self.local.put_blob(content_hash, data)

    def stage_blob(self, content_hash: str, data: bytes) -> None:
        """Upload a blob about to be kept, and write its local file, before (outside) the
        local transaction whose ``put_blob`` then only adds the local row. Nothing to do
        for a blob the local cache holds (kept here means kept in the bucket too)."""
        if self.local.has_blob(content_hash):
            return
        self._create(_blob_path(content_hash), data)
        with self._lock:
            self._uploaded.add(content_hash)
        self.local.stage_blob(content_hash, data)

    def has_blob(self, content_hash: str) -> bool:
        """Whether bytes with this hash are kept (locally, else in the bucket)."""
        return self.local.has_blob(content_hash) or self._exists(_blob_path(content_hash))

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Group the local cache's writes into one commit (each S3 write is its own)."""
        return self.local.batch()

    # ------------------------------------------------------------------ leases

    def _lease_value(self) -> bytes:
        return json.dumps({**self._identity, "expires_at": self._clock() + LEASE_SECONDS}).encode()

    def _holder_gone(self, holder: dict[str, Any]) -> bool:
        """Whether a lease may be taken over: expired, or its holder's process is known
        to be dead (same host, boot and pid namespace as ours, and its pid gone)."""
        expires_at = holder.get("expires_at")
        if not isinstance(expires_at, (int, float)) or expires_at < self._clock():
            return True
        if any(holder.get(field) != self._identity[field] for field in ("host", "boot_id", "pid_ns")):
            return False
        pid = holder.get("pid")
        return isinstance(pid, int) and pid != os.getpid() and not _process_alive(pid)

    def acquire_lease(self, key: str) -> bool:
        """Take the in-flight lease for ``key``; False while a live holder has it (also
        another run in this process)."""
        with self._lock:
            if key in self._leases or key in self._acquiring:
                return False
            self._acquiring.add(key)
        try:
            etag = self._take(key)
            if etag is None:
                return False
            with self._lock:
                self._leases[key] = etag
            return True
        finally:
            with self._lock:
                self._acquiring.discard(key)

    def _take(self, key: str) -> str | None:
        """Create the lease, or take over one whose holder is gone; its etag, or None."""
        path = f"leases/{key}.json"
        etag = self._create(path, self._lease_value())
        if etag is not None:
            return etag
        found = self._get(path)
        if found is None:  # released in between: try once more
            return self._create(path, self._lease_value())
        text, current = found
        try:
            holder = json.loads(text)
        except ValueError:
            holder = {}
        if not isinstance(holder, dict):
            holder = {}
        if holder.get("owner") == self._identity["owner"] or self._holder_gone(holder):
            # If-Match on the etag we read: of two machines taking over, one wins.
            return self._replace(path, self._lease_value(), current or "")
        return None

    def renew_lease(self, key: str) -> None:
        """Keep a held lease from expiring (never someone else's: If-Match on its etag)."""
        with self._lock:
            etag = self._leases.get(key)
        if etag is None:
            return
        renewed = self._replace(f"leases/{key}.json", self._lease_value(), etag)
        if renewed is None:  # expired and gone, or taken over: take it back only if free
            renewed = self._create(f"leases/{key}.json", self._lease_value())
        if renewed is not None:
            with self._lock:
                self._leases[key] = renewed

    def release_lease(self, key: str) -> None:
        """Give up a held lease (by delete; the engine releases after the record exists)."""
        with self._lock:
            held = self._leases.pop(key, None)
        if held is not None:
            self._delete(f"leases/{key}.json")

    # ------------------------------------------------------------------ history and stats

    def get_history(self, name: str, graph: str = DEFAULT_GRAPH) -> EditRecord | None:
        """The record node ``name`` of ``graph`` last ran as: this machine's copy, else
        the bucket's (``history/<graph>/<node>.json``)."""
        local_name = f"{graph}\x00{name}"
        history = self.local.get_history(local_name)
        if history is not None:
            return history
        found = self._get(_history_path(graph, name))
        if found is None:
            return None
        history = _parse_record(found[0])
        if history is None:
            return None
        self.local.put_history(local_name, history)
        return history

    def history_keys(self, names: Sequence[str], graph: str = DEFAULT_GRAPH) -> dict[str, str]:
        """For each of ``names`` with a history in ``graph``, the key it names."""
        found: dict[str, str] = {}
        for name in names:
            record = self.get_history(name, graph)
            if record is not None:
                found[name] = record.key
        return found

    def put_history(self, name: str, record: EditRecord, graph: str = DEFAULT_GRAPH) -> None:
        """Remember the record node ``name`` of ``graph`` last ran as (last writer wins)."""
        self._put(_history_path(graph, name), record.model_dump_json().encode())
        self.local.put_history(f"{graph}\x00{name}", record)

    def add_saved(self, usd: float) -> None:
        """Add to this machine's total of spend that cache hits saved."""
        self.local.add_saved(usd)

    # ------------------------------------------------------------------ submission journal

    # Journal entries are read from and written to the bucket only, never this machine's
    # copy: a task one machine submitted must be seen by the next that needs the key.

    def get_journal(self, key: str) -> JournalEntry | None:
        """The task journaled for ``key`` (``journal/<key>.json``); unreadable counts as none."""
        found = self._get(_journal_path(key))
        if found is None:
            return None
        try:
            return JournalEntry.model_validate_json(found[0])
        except ValueError:
            return None

    def put_journal(self, entry: JournalEntry) -> None:
        """Journal a submitted task in the bucket before it is polled."""
        self._put(_journal_path(entry.key), entry.model_dump_json().encode())

    def delete_journal(self, key: str) -> None:
        """Forget the task journaled for ``key``."""
        self._delete(_journal_path(key))

    def journal_entries(self) -> Iterator[JournalEntry]:
        """Every readable journaled task in the bucket."""
        for meta in list(self._list("journal/")):
            entry = self.get_journal(meta["path"].rpartition("/")[2].removesuffix(".json"))
            if entry is not None:
                yield entry

    # ------------------------------------------------------------------ maintenance

    def records(self) -> Iterator[EditRecord]:
        """Every readable record in the bucket."""
        for meta in self._list("records/"):
            key = meta["path"].rpartition("/")[2].removesuffix(".json")
            record = self.get_record(key)
            if record is not None:
                yield record

    def stats(self) -> CacheStats:
        """Entries and bytes in the bucket; saved spend on this machine."""
        records = sum(1 for _ in self._list("records/"))
        blobs = total = 0
        for meta in self._list("blobs/"):
            blobs += 1
            total += int(meta["size"])
        return CacheStats(
            directory=str(self.location), records=records, blobs=blobs, bytes=total,
            saved_usd=self.local.stats().saved_usd,
        )

    def verify(self, *, repair: bool = False) -> list[Damage]:
        """Check every record and image in the bucket: each damaged one, and with
        ``repair`` remove it too (and this machine's copy of the cache)."""
        damage: list[Damage] = []
        good: set[str] = set()
        for meta in self._list("blobs/"):
            content_hash = meta["path"].rpartition("/")[2]
            found = self._get(_blob_path(content_hash))
            if found is not None and hashlib.sha256(found[0]).hexdigest() == content_hash:
                good.add(content_hash)
                continue
            damage.append(Damage(f"image {content_hash[:12]}", "its bytes do not match their hash"))
            if repair:
                self._delete(_blob_path(content_hash))
        for meta in self._list("records/"):
            path = meta["path"]
            key = path.rpartition("/")[2].removesuffix(".json")
            found = self._get(f"records/{key}.json")
            record = _parse_record(found[0]) if found is not None else None
            if found is not None and record is None and not _is_damaged(found[0]):
                continue  # another schema version's record: not damage
            if record is not None and record.key == key and record.output_hash in good:
                continue
            problem = ("unreadable (not a record)" if record is None
                       else f"it is the record of another key ({record.key[:12]})"
                       if record.key != key else "its image is missing or damaged")
            damage.append(Damage(f"record {key[:12]}", problem))
            if repair:
                self._delete(f"records/{key}.json")
        if repair:
            self.local.clear()
        return damage

    def prune(self, *, older_than: float | None = None, max_bytes: int | None = None) -> int:
        """Drop records older than ``older_than`` seconds, then oldest first down to
        ``max_bytes`` of images, and images no kept record uses. Returns records dropped."""
        now = self._clock()
        records = sorted(self.records(), key=lambda record: record.created_at)
        drop = {r.key for r in records if older_than is not None and now - r.created_at > older_than}
        kept = [r for r in records if r.key not in drop]
        if max_bytes is not None:
            sizes = {r.output_hash: r.size_bytes or 0 for r in kept}
            total = sum(sizes.values())
            users: dict[str, int] = {}
            for record in kept:
                users[record.output_hash] = users.get(record.output_hash, 0) + 1
            for record in kept:
                if total <= max_bytes:
                    break
                drop.add(record.key)
                users[record.output_hash] -= 1
                if not users[record.output_hash]:
                    total -= sizes[record.output_hash]
        used: set[str] = set()
        for record in records:
            if record.key not in drop:
                used.add(record.output_hash)
                used.update(reference.hash for reference in record.references)
        for key in drop:
            self._delete(f"records/{key}.json")
        for meta in self._list("blobs/"):
            content_hash = meta["path"].rpartition("/")[2]
            if content_hash not in used:
                self._delete(_blob_path(content_hash))
        self.local.clear()
        return len(drop)

    def clear(self) -> None:
        """Remove everything under the prefix, and this machine's copy."""
        for meta in list(self._list("")):
            self._delete(meta["path"])
        self.local.clear()


def _is_damaged(text: bytes | str) -> bool:
    """Whether a record's text is unreadable (not merely another schema version's)."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return True
    if not isinstance(value, dict) or not isinstance(value.get("schema_version"), int):
        return True
    return value["schema_version"] == RECORD_VERSION and _parse_record(text) is None

"""A local cache folder that does not exist yet, seen by something that only reads.

``plan``, ``editgraph cache info|verify|prune|clear`` read a cache; on a folder that is
not there they must not make it (a typo'd ``--cache`` would otherwise leave an empty
cache behind). They get an :class:`AbsentStore` instead: every read finds nothing, and a
write is a :class:`~editgraph.errors.StoreError` (nothing that only reads writes). The
first run makes the folder.

A folder that could never be made (under a file, in a folder that is not writable) is
still refused when opened, with the same one-line message as :class:`DiskStore`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import StoreError
from ..records import EditRecord, RecordFacts
from ..store import DEFAULT_GRAPH, CacheDamage, CacheStats, JournalEntry

__all__ = ["AbsentStore", "UnkeptLocalCache", "check_creatable"]


def _refusal(directory: Path, reason: str) -> StoreError:
    """DiskStore's message for a folder it cannot open."""
    return StoreError(
        f"cache directory {str(directory)!r} cannot be opened for writing ({reason}); "
        "set EDITGRAPH_CACHE_DIR or pass cache_dir="
    )


def check_creatable(directory: Path) -> None:
    """Raise StoreError unless ``directory`` could be made: its nearest existing
    ancestor must be a folder this process may write to. Makes nothing."""
    ancestor = directory
    try:
        while not os.path.lexists(ancestor):
            if ancestor.parent == ancestor:
                break
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise _refusal(directory, f"{str(ancestor)!r} is not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise _refusal(directory, f"{str(ancestor)!r} is not writable")
    except OSError as exc:  # an ancestor that cannot be looked at (no permission)
        raise _refusal(directory, str(exc)) from exc


class AbsentStore:
    """The store of a folder that does not exist: empty to read, never written."""

    def __init__(self, directory: Path) -> None:
        check_creatable(directory)
        self.directory = directory

    def __repr__(self) -> str:
        return f"AbsentStore({str(self.directory)!r})"

    def _refuse(self) -> StoreError:
        return StoreError(
            f"cache directory {str(self.directory)!r} does not exist and was opened only "
            "to read; run a recipe to make it"
        )

    # reads: nothing is there

    def get_record(self, key: str) -> EditRecord | None:
        return None

    def get_verified_record(self, key: str) -> EditRecord | None:
        return None

    def lookup(self, keys: Sequence[str]) -> dict[str, RecordFacts]:
        return {}

    @property
    def repaired(self) -> int:
        return 0

    def get_blob(self, content_hash: str) -> bytes:
        raise StoreError(f"image {content_hash} is not in the cache "
                         f"({str(self.directory)!r} does not exist)")

    def has_blob(self, content_hash: str) -> bool:
        return False

    def get_history(self, name: str, graph: str = DEFAULT_GRAPH) -> EditRecord | None:
        return None

    def history_keys(self, names: Sequence[str], graph: str = DEFAULT_GRAPH) -> dict[str, str]:
        return {}

    def get_journal(self, key: str) -> JournalEntry | None:
        return None

    def journal_entries(self) -> Iterator[JournalEntry]:
        return iter(())

    def note(self, name: str) -> str | None:
        return None

    def records(self) -> Iterator[EditRecord]:
        return iter(())

    def stats(self) -> CacheStats:
        return CacheStats(directory=str(self.directory), records=0, blobs=0, bytes=0,
                          saved_usd=0.0)

    def verify(self, *, repair: bool = False) -> list[CacheDamage]:
        return []

    def prune(self, *, older_than: float | None = None, max_bytes: int | None = None) -> int:
        return 0

    def clear(self) -> None:
        """Nothing to remove."""

    def close(self) -> None:
        """Nothing is open."""

    # writes: whoever only reads never makes them

    def put_record(self, record: EditRecord) -> None:
        raise self._refuse()

    def put_blob(self, content_hash: str, data: bytes) -> None:
        raise self._refuse()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        yield

    def acquire_lease(self, key: str) -> bool:
        raise self._refuse()

    def renew_lease(self, key: str) -> None:
        raise self._refuse()

    def release_lease(self, key: str) -> None:
        raise self._refuse()

    def put_history(self, name: str, record: EditRecord, graph: str = DEFAULT_GRAPH) -> None:
        raise self._refuse()

    def add_saved(self, usd: float) -> None:
        raise self._refuse()

    def put_journal(self, entry: JournalEntry) -> None:
        raise self._refuse()

    def delete_journal(self, key: str) -> None:
        raise self._refuse()


class UnkeptLocalCache(AbsentStore):
    """The local cache of an S3 store opened only to read, whose folder does not exist:
    it holds nothing, and the copies the store would keep of what the bucket served
    (records, images, history) are dropped instead of making the folder."""

    def __repr__(self) -> str:
        return f"UnkeptLocalCache({str(self.directory)!r})"

    def put_record(self, record: EditRecord) -> None:
        """Not kept."""

    def put_blob(self, content_hash: str, data: bytes) -> None:
        """Not kept."""

    def stage_blob(self, content_hash: str, data: bytes) -> None:
        """Not kept."""

    def put_history(self, name: str, record: EditRecord, graph: str = DEFAULT_GRAPH) -> None:
        """Not kept."""

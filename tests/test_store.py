"""The diskcache store: write-once blobs and records, no pickle, leases, history, pruning."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache
import platformdirs
import pytest
from PIL import Image

import editgraph as eg
from editgraph.errors import StoreError
from editgraph.records import _RECORD_FIELDS, RECORD_VERSION, EditRecord, RecordFacts
from editgraph.store import LEASE_SECONDS, DiskStore, default_cache_dir


def png(colour: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> bytes:
    """A small solid-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    """sha256 hex of ``data``."""
    return hashlib.sha256(data).hexdigest()


def make_record(key: str, data: bytes, *, created_at: float | None = None,
                **changes: Any) -> EditRecord:
    """A record for ``key`` whose output is ``data``."""
    fields: dict[str, Any] = {
        "key": key, "node": "blue", "provider": "counting",
        "model": "black-forest-labs/FLUX.2-pro",
        "prompt": "Make image 1 blue", "seed": 7, "parameters": {"width": 16, "height": 16},
        "output_hash": sha(data), "media_type": "image/png", "width": 16, "height": 16,
        "size_bytes": len(data), "elapsed": 0.5, "cost": 0.03,
        "created_at": time.time() if created_at is None else created_at,
    }
    fields.update(changes)
    return EditRecord(**fields)


def keep(store: DiskStore, key: str, data: bytes, **changes: Any) -> EditRecord:
    """Store ``data`` and a record for it under ``key``, as a finished edit does."""
    record = make_record(key, data, **changes)
    store.put_blob(record.output_hash, data)
    store.put_record(record)
    return record


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A fresh cache directory."""
    return tmp_path / "cache"


@pytest.fixture
def open_store(cache_dir: Path) -> Iterator[Callable[..., DiskStore]]:
    """Opens DiskStores (on the fresh directory by default) and closes them afterwards."""
    opened: list[DiskStore] = []

    def open_one(directory: Path | None = None) -> DiskStore:
        opened.append(DiskStore(cache_dir if directory is None else directory))
        return opened[-1]

    yield open_one
    for each in opened:
        each.close()


@pytest.fixture
def store(open_store: Callable[..., DiskStore]) -> DiskStore:
    """A DiskStore on a fresh directory."""
    return open_store()


@pytest.fixture
def plain(cache_dir: Path, store: DiskStore) -> Iterator[diskcache.Cache]:
    """The same directory opened with plain diskcache (which pickles), to plant values."""
    cache = diskcache.Cache(str(cache_dir))
    yield cache
    cache.close()


class CountingProvider:
    """A provider that counts calls and answers a PNG that depends on the request."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        """A solid PNG coloured by the prompt and seed."""
        self.calls += 1
        digest = hashlib.sha256(f"{request.prompt}|{request.seed}".encode()).digest()
        return eg.GeneratedImage(data=png((digest[0], digest[1], digest[2]), (64, 48)),
                                 media_type="image/png", url="https://results.example/1")


class Planted:
    """Unpickling this touches ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.marker,))


# --------------------------------------------------------------------------- blobs, records


def test_blob_round_trip(store: DiskStore) -> None:
    """A blob put under its hash comes back byte for byte."""
    data = png((255, 0, 0))
    store.put_blob(sha(data), data)
    assert store.get_blob(sha(data)) == data


def test_blobs_are_write_once(store: DiskStore, plain: diskcache.Cache) -> None:
    """A second put under the same hash keeps the first bytes."""
    store.put_blob("h", b"first")
    store.put_blob("h", b"second")
    assert plain.get("blob:h") == b"first"


def test_large_blob_round_trip(store: DiskStore) -> None:
    """A blob too large to live in the database (a file) comes back intact."""
    data = os.urandom(200_000)
    store.put_blob(sha(data), data)
    assert store.get_blob(sha(data)) == data


def test_a_large_blob_file_is_written_in_one_write_whole(
    store: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A megabyte full of newlines (diskcache wrote it line by line) goes to its file in
    one write, staged or not, and comes back intact."""
    writes: list[int] = []
    real_open = open

    class Counting(io.BufferedWriter):
        def write(self, data: Any) -> int:
            writes.append(len(data))
            return super().write(data)

    def counting_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "xb":
            return Counting(real_open(path, "xb", buffering=0))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    data = b"\n".join(os.urandom(255) for _ in range(4096))
    other = data + b"\n"
    store.put_blob(sha(data), data)
    store.stage_blob(sha(other), other)
    store.put_blob(sha(other), other)
    monkeypatch.undo()
    assert writes == [len(data), len(other)]
    assert store.get_blob(sha(data)) == data and store.get_blob(sha(other)) == other


def test_missing_blob_is_a_store_error(store: DiskStore) -> None:
    """Asking for a hash the store never saw raises StoreError naming it."""
    with pytest.raises(StoreError, match="abcdef012345 is missing"):
        store.get_blob("abcdef0123456789")


def test_record_round_trip(store: DiskStore) -> None:
    """A record comes back equal, with the current schema version."""
    record = keep(store, "k1", png((0, 0, 255)))
    assert store.get_record("k1") == record
    assert record.schema_version == RECORD_VERSION


def test_records_are_write_once(store: DiskStore) -> None:
    """The first record for a key wins."""
    data = png((0, 0, 255))
    first = keep(store, "k1", data, seed=1)
    keep(store, "k1", data, seed=2)
    assert store.get_record("k1") == first


def test_unknown_key_is_a_miss(store: DiskStore) -> None:
    """A key never stored gives None."""
    assert store.get_record("nope") is None


def test_record_whose_blob_is_missing_is_a_miss(store: DiskStore) -> None:
    """A record pointing at an image the store lacks is not served."""
    store.put_record(make_record("k1", png((1, 2, 3))))
    assert store.get_record("k1") is None


@pytest.mark.parametrize(
    "planted",
    [
        json.dumps({"schema_version": 0, "key": "k1"}),
        "not json at all",
        "[1, 2, 3]",
        b"\x00\xff bytes",
    ],
    ids=["old-shape", "not-json", "list", "bytes"],
)
def test_record_from_another_schema_is_a_miss(
    store: DiskStore, plain: diskcache.Cache, planted: str | bytes
) -> None:
    """A record this version cannot read is a miss, not a crash."""
    plain.set("record:k1", planted)
    assert store.get_record("k1") is None


def test_record_with_another_schema_version_is_a_miss(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """A record of the same shape but another schema version is not served."""
    data = png((9, 9, 9))
    store.put_blob(sha(data), data)
    future = make_record("k1", data).model_copy(update={"schema_version": RECORD_VERSION + 1})
    plain.set("record:k1", future.model_dump_json())
    assert store.get_record("k1") is None


# --------------------------------------------------------------------------- verified reads


def test_a_blob_whose_bytes_changed_is_removed_not_served(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """get_blob checks the hash: damaged bytes raise StoreError, are removed and counted."""
    data = png((1, 2, 3))
    plain.set(f"blob:{sha(data)}", data[:-4])
    with pytest.raises(StoreError, match="damaged"):
        store.get_blob(sha(data))
    assert f"blob:{sha(data)}" not in plain
    assert store.repaired == 1


def test_a_verified_record_with_a_damaged_image_is_a_miss_and_both_go(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """get_verified_record: a record whose image fails its hash is removed with the image."""
    record = keep(store, "k1", png((4, 5, 6)))
    plain.set(f"blob:{record.output_hash}", b"not the image")
    assert store.get_record("k1") == record  # the cheap read does not hash
    assert store.get_verified_record("k1") is None
    assert "record:k1" not in plain and f"blob:{record.output_hash}" not in plain
    assert store.repaired == 2


def test_an_unreadable_record_is_removed_and_can_be_replaced(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """Write-once holds for readable records only: a damaged one is replaced."""
    data = png((7, 7, 7))
    plain.set("record:k1", '{"schema_version": 1, "key": "tru')
    replacement = keep(store, "k1", data)
    assert store.get_record("k1") == replacement
    plain.set("record:k1", "garbage")
    assert store.get_record("k1") is None
    assert "record:k1" not in plain and store.repaired == 1


def test_verify_finds_each_kind_of_damage_and_repairs_it(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """verify() lists damaged images, their records and unreadable records; repair removes them."""
    good = keep(store, "good", png((1, 1, 1)))
    bad = keep(store, "bad", png((2, 2, 2)))
    plain.set(f"blob:{bad.output_hash}", b"flipped")
    plain.set("record:junk", "{")
    found = store.verify()
    assert sorted(d.entry.split()[0] for d in found) == ["image", "record", "record"]
    assert store.get_record("good") == good and "record:junk" in plain
    assert len(store.verify(repair=True)) == 3
    assert store.verify() == [] and store.get_verified_record("good") == good


# --------------------------------------------------------------------------- no pickle


@pytest.mark.parametrize("value", [{"a": 1}, 5, 1.5, ["x"], None], ids=repr)
def test_storing_anything_but_bytes_or_text_is_refused(
    store: DiskStore, plain: diskcache.Cache, value: Any
) -> None:
    """Values diskcache would pickle (or keep as numbers) are refused with StoreError."""
    with pytest.raises(StoreError, match="bytes or JSON text"):
        store.put_blob("h", value)
    assert "blob:h" not in plain


#: Where the store keeps node "blue"'s history in the default graph.
HISTORY_BLUE = "history:" + json.dumps(["__main__", "blue"])

READERS: dict[str, Any] = {
    "record:abc": lambda store: store.get_record("abc"),
    "blob:abc": lambda store: store.get_blob("abc"),
    HISTORY_BLUE: lambda store: store.get_history("blue"),
    "stats:saved_microdollars": lambda store: store.stats(),
    "lease:abc": lambda store: store.acquire_lease("abc"),
}


@pytest.mark.parametrize("name", list(READERS))
def test_planted_pickled_value_is_refused(
    store: DiskStore, plain: diskcache.Cache, name: str
) -> None:
    """A pickled value planted in the directory is a StoreError, never unpickled."""
    plain.set(name, {"evil": 1})
    with pytest.raises(StoreError, match="pickled value"):
        READERS[name](store)


@pytest.mark.parametrize("padding", [0, 100_000], ids=["in-database", "in-file"])
def test_planted_pickle_is_never_executed(
    store: DiskStore, plain: diskcache.Cache, tmp_path: Path, padding: int
) -> None:
    """Reading a planted malicious pickle raises and runs none of its code."""
    marker = tmp_path / "pwned"
    plain.set("record:abc", {"payload": Planted(marker), "padding": "x" * padding})
    plain.set("blob:abc", [Planted(marker)])
    plain.set(HISTORY_BLUE, Planted(marker))
    with pytest.raises(StoreError):
        store.get_record("abc")
    with pytest.raises(StoreError):
        store.get_blob("abc")
    with pytest.raises(StoreError):
        store.get_history("blue")
    with pytest.raises(StoreError):
        store.prune()
    assert not marker.exists()


def test_planted_pickled_key_is_never_executed(
    store: DiskStore, plain: diskcache.Cache, tmp_path: Path
) -> None:
    """A key diskcache stored pickled is refused when the store lists keys."""
    marker = tmp_path / "pwned"
    plain.set(("record:", Planted(marker)), "x")
    with pytest.raises(StoreError, match="pickled key"):
        store.stats()
    with pytest.raises(StoreError, match="pickled key"):
        list(store.records())
    assert not marker.exists()


def test_a_run_leaves_no_pickle_on_disk(
    cache_dir: Path, open_store: Callable[..., DiskStore]
) -> None:
    """After runs, plans and history, every row holds raw bytes or JSON text."""
    g = eg.Graph(cache_dir=cache_dir)
    car = g.image(png((200, 40, 40)), name="car")
    blue = g.edit(f"Make {car} blue", name="blue")
    g.edit(f"Make {blue} a night scene next to {car}", name="night")
    provider = CountingProvider()
    g.run(provider=provider, progress=False)
    g.run(provider=provider, progress=False)  # cached: adds to the saved-spend total
    g.plan(provider=provider)
    assert provider.calls == 2
    # A record too large for the database row goes to a text file: check that too.
    extra = open_store()
    keep(extra, "big", png((1, 1, 1)), prompt="x" * 50_000)
    extra.acquire_lease("some-key")
    extra.close()

    connection = sqlite3.connect(cache_dir / "cache.db")
    rows = connection.execute("SELECT key, raw, mode, filename, value FROM Cache").fetchall()
    connection.close()
    kinds = {key.split(":")[0] for key, *_ in rows}
    assert {"record", "blob", "history", "stats", "lease"} <= kinds
    for key, raw, mode, filename, value in rows:
        assert raw == 1 and isinstance(key, str), key
        assert mode != diskcache.core.MODE_PICKLE, key
        assert mode in (diskcache.core.MODE_RAW, diskcache.core.MODE_BINARY,
                        diskcache.core.MODE_TEXT), key
        if mode == diskcache.core.MODE_TEXT:
            value = (cache_dir / filename).read_text(encoding="utf-8")
        if isinstance(value, str):
            json.loads(value)
        elif key.startswith("blob:"):
            data = value if value is not None else (cache_dir / filename).read_bytes()
            assert sha(data) == key[len("blob:"):]
            Image.open(io.BytesIO(data)).load()
        else:
            pytest.fail(f"{key}: unexpected value {value!r}")


# --------------------------------------------------------------------------- leases


def test_lease_acquire_and_release(open_store: Callable[..., DiskStore]) -> None:
    """One owner at a time; after release another may take it."""
    first, second = open_store(), open_store()
    assert first.acquire_lease("k")
    assert not first.acquire_lease("k")  # already held here: a second run of this process waits
    assert not second.acquire_lease("k")  # holder alive (this very process)
    first.release_lease("k")
    assert second.acquire_lease("k")
    assert not first.acquire_lease("k")


def test_release_by_non_holder_changes_nothing(open_store: Callable[..., DiskStore]) -> None:
    """Only the holder can release a lease."""
    first, second, third = open_store(), open_store(), open_store()
    assert first.acquire_lease("k")
    second.release_lease("k")
    assert not third.acquire_lease("k")


def test_leases_are_per_key(store: DiskStore, open_store: Callable[..., DiskStore]) -> None:
    """Holding one key's lease does not block another key."""
    other = open_store()
    assert store.acquire_lease("k1")
    assert other.acquire_lease("k2")


def test_lease_value_is_json_text_naming_its_holder(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """A lease is JSON text naming its holder (owner id, host, boot id, pid namespace,
    pid) and its expiry, never a diskcache Lock."""
    assert store.acquire_lease("k")
    holder = json.loads(plain.get("lease:k"))
    assert holder["pid"] == os.getpid()
    assert {"owner", "host", "boot_id", "pid_ns", "pid", "expires_at"} <= set(holder)
    assert holder["pid_ns"] == os.readlink("/proc/self/ns/pid")
    assert time.time() < holder["expires_at"] <= time.time() + LEASE_SECONDS


CHILD_HOLDS_LEASE = """
import sys
from editgraph.store import DiskStore
store = DiskStore(sys.argv[1])
assert store.acquire_lease("k")
print("held", flush=True)
sys.stdin.read()  # hold it until the test closes stdin
"""


def test_lease_of_a_live_process_is_refused_until_it_exits(
    cache_dir: Path, open_store: Callable[..., DiskStore]
) -> None:
    """Another live process's lease is respected; once it is gone, it is taken over."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_HOLDS_LEASE, str(cache_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        store = open_store()
        assert not store.acquire_lease("k")
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == 0
    assert store.acquire_lease("k")  # the holder died without releasing it


def test_lease_of_a_dead_process_is_taken_over(
    cache_dir: Path, open_store: Callable[..., DiskStore]
) -> None:
    """A process that took a lease and exited without releasing it does not block."""
    script = (
        "import sys; from editgraph.store import DiskStore; "
        "assert DiskStore(sys.argv[1]).acquire_lease('k')"
    )
    subprocess.run([sys.executable, "-c", script, str(cache_dir)], check=True, timeout=30)
    store = open_store()
    assert store.acquire_lease("k")
    assert not open_store().acquire_lease("k")  # and now it is ours


@pytest.mark.parametrize("field", ["host", "boot_id", "pid_ns"])
def test_a_dead_pid_elsewhere_is_not_proof_the_holder_died(
    store: DiskStore, plain: diskcache.Cache, field: str
) -> None:
    """A lease whose pid is gone here but whose host, boot or pid namespace differs waits
    for its expiry: that pid names another machine's, boot's or container's process."""
    mine = json.loads(_leased(store, plain))
    plain.delete("lease:k")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    holder = json.dumps({**mine, "owner": "someone-else", "pid": int(dead), field: "other"})
    plain.set("lease:k", holder, expire=LEASE_SECONDS)
    assert not store.acquire_lease("k")
    plain.set("lease:k", json.dumps({**json.loads(holder), field: mine[field]}),
              expire=LEASE_SECONDS)
    assert store.acquire_lease("k")  # everything matches and the pid is gone: dead


def _leased(store: DiskStore, plain: diskcache.Cache) -> str:
    """Take lease "k" and release it; the lease JSON it had."""
    assert store.acquire_lease("k")
    value = str(plain.get("lease:k"))
    store.release_lease("k")
    return value


def test_lease_from_another_host_waits_for_expiry(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """A holder on another machine cannot be checked, so its lease is respected."""
    holder = json.dumps({"pid": 1, "host": "elsewhere.invalid", "token": "t"})
    plain.set("lease:k", holder, expire=LEASE_SECONDS)
    assert not store.acquire_lease("k")
    plain.set("lease:k", holder, expire=-1)  # as if 30 s had passed without renewal
    assert store.acquire_lease("k")


class SettableClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("field", ["host", "boot_id", "pid_ns"])
def test_a_lease_held_elsewhere_is_taken_once_it_expires_on_the_stores_clock(
    cache_dir: Path, plain: diskcache.Cache, field: str
) -> None:
    """A lease from another host, boot or pid namespace is respected for LEASE_SECONDS
    after its holder last renewed it, then taken over: the injected clock moves, nothing
    waits."""
    clock = SettableClock()
    store = DiskStore(cache_dir, clock=clock)
    try:
        mine = json.loads(_leased(store, plain))
        elsewhere = {**mine, "owner": "someone-else", field: "other"}

        def hold(renewed_at: float) -> None:
            holder = json.dumps({**elsewhere, "expires_at": renewed_at + LEASE_SECONDS})
            plain.set("lease:k", holder, expire=LEASE_SECONDS)

        hold(clock.now)
        clock.now += LEASE_SECONDS - 1
        assert not store.acquire_lease("k")
        hold(clock.now)  # the holder renews: 30 s more from now
        clock.now += LEASE_SECONDS - 1
        assert not store.acquire_lease("k")
        clock.now += 2  # 31 s without renewal
        assert store.acquire_lease("k")
        taken = json.loads(str(plain.get("lease:k")))
        assert taken["owner"] == mine["owner"]
        assert taken["expires_at"] == clock.now + LEASE_SECONDS
    finally:
        store.close()


def test_unreadable_lease_is_taken_over(store: DiskStore, plain: diskcache.Cache) -> None:
    """A lease that is not our JSON is treated as abandoned."""
    plain.set("lease:k", "garbage", expire=LEASE_SECONDS)
    assert store.acquire_lease("k")


def _expires_in(plain: diskcache.Cache, name: str) -> float:
    value, expire_time = plain.get(name, expire_time=True)
    assert value is not None
    return float(expire_time) - time.time()


def test_renew_extends_the_holders_lease(store: DiskStore, plain: diskcache.Cache) -> None:
    """renew_lease pushes the expiry back to LEASE_SECONDS from now."""
    assert store.acquire_lease("k")
    plain.touch("lease:k", expire=2)
    assert _expires_in(plain, "lease:k") <= 2
    store.renew_lease("k")
    assert LEASE_SECONDS - 5 < _expires_in(plain, "lease:k") <= LEASE_SECONDS


def test_renew_never_extends_someone_elses_lease(
    store: DiskStore, plain: diskcache.Cache, open_store: Callable[..., DiskStore]
) -> None:
    """A store that does not hold the lease cannot keep it alive."""
    other = open_store()
    assert other.acquire_lease("k")
    plain.touch("lease:k", expire=2)
    store.renew_lease("k")
    assert _expires_in(plain, "lease:k") <= 2


def test_renew_retakes_an_expired_lease_nobody_took(
    store: DiskStore, plain: diskcache.Cache, open_store: Callable[..., DiskStore]
) -> None:
    """A holder that renews after its lease lapsed (and nobody took it) holds it again."""
    assert store.acquire_lease("k")
    plain.touch("lease:k", expire=-1)
    store.renew_lease("k")
    assert not open_store().acquire_lease("k")


# --------------------------------------------------------------------------- history, stats


def make_history(key: str = "k1", prompt: str = "Make image 1 blue") -> EditRecord:
    """The record a finished edit leaves as its node's history."""
    return make_record(key, png((0, 1, 2)), prompt=prompt,
                       references=[{"source": "car.png", "hash": "ab" * 32,
                                    "media_type": "image/png"}])


def test_history_round_trip_and_overwrite(store: DiskStore) -> None:
    """History is absent, then what was put, then what was put last."""
    assert store.get_history("blue") is None
    first = make_history()
    store.put_history("blue", first)
    assert store.get_history("blue") == first
    second = make_history("k2", "Make image 1 green")
    store.put_history("blue", second)
    assert store.get_history("blue") == second
    assert store.get_history("night") is None


def test_unreadable_history_is_absent(store: DiskStore, plain: diskcache.Cache) -> None:
    """History written by another version reads as None."""
    plain.set(HISTORY_BLUE, '{"old": true}')
    assert store.get_history("blue") is None


@pytest.mark.parametrize(("there", "expire", "after"), [
    (None, None, "250000"),
    ("1500", None, "251500"),  # as the store writes it: grown in place
    (b"1500", None, "251500"),  # not text: read and written through diskcache
    ("1500", 1000.0, "251500"),  # an expiry: through diskcache, which then keeps none
    ("1500", -1.0, "250000"),  # expired: counted as none, as diskcache reads it
    ("1" + "0" * 30, None, None),  # past SQLite's integers: through diskcache
], ids=["none", "text", "bytes", "expiring", "expired", "huge"])
def test_the_saved_total_grows_in_one_statement_or_through_diskcache(
    store: DiskStore, plain: diskcache.Cache, there: str | bytes | None, expire: float | None,
    after: str | None,
) -> None:
    """add_saved (and a batch's commit_held) adds to the total in place when the row is
    the digits the store writes, else reads and rewrites it as diskcache does: either
    way diskcache reads back the sum as text, with no expiry."""
    if there is not None:
        plain.set("stats:saved_microdollars", there, expire=expire)
    store.add_saved(0.25)
    expected = after if after is not None else str(10**30 + 250_000)
    assert plain.get("stats:saved_microdollars") == expected
    assert store.stats().saved_usd == pytest.approx(int(expected) / 1_000_000)
    store.hold_saved()
    store.add_saved(0.5)
    store.commit_held()
    assert plain.get("stats:saved_microdollars") == str(int(expected) + 500_000)
    assert plain.get("stats:saved_microdollars", expire_time=True)[1] is None


def test_stats_count_records_blobs_bytes_and_savings(store: DiskStore) -> None:
    """stats() reports entries, volume and the saved-spend total."""
    empty = store.stats()
    assert (empty.records, empty.blobs, empty.saved_usd) == (0, 0, 0.0)
    keep(store, "k1", png((1, 0, 0)))
    keep(store, "k2", png((2, 0, 0)))
    store.add_saved(0.03)
    store.add_saved(0.045)
    store.add_saved(0.0)
    stats = store.stats()
    assert (stats.records, stats.blobs) == (2, 2)
    assert stats.bytes > 0
    assert stats.saved_usd == pytest.approx(0.075)
    assert stats.directory == str(store.directory)


def test_records_lists_only_servable_records(store: DiskStore) -> None:
    """records() yields every record whose image is present."""
    keep(store, "k1", png((1, 0, 0)))
    store.put_record(make_record("k2", png((2, 0, 0))))  # its image never arrived
    assert [record.key for record in store.records()] == ["k1"]


def test_clear_removes_everything(store: DiskStore) -> None:
    """clear() empties the store."""
    keep(store, "k1", png((1, 0, 0)))
    store.clear()
    assert store.get_record("k1") is None
    assert store.stats().blobs == 0


# --------------------------------------------------------------------------- rows diskcache reads


def _files(directory: Path) -> list[Path]:
    """The value files of a cache directory (not its database)."""
    return sorted(path for path in directory.rglob("*.val"))


def test_plain_diskcache_reads_every_row_the_store_writes_and_finds_it_consistent(
    store: DiskStore, plain: diskcache.Cache, cache_dir: Path,
) -> None:
    """The store writes its rows with its own statements: diskcache itself (another tool,
    or an older editgraph) reads each one, and its own check finds the count, the sizes
    and the files as it would have kept them."""
    small, large = png((1, 2, 3)), os.urandom(200_000)
    record = keep(store, "k1", small)
    store.stage_blob(sha(large), large)  # the file written ahead, then the row
    store.put_blob(sha(large), large)
    store.stage_blob(sha(large), large)  # kept already: nothing staged
    store.put_blob(sha(large), large)  # write-once: no second file
    store.put_history("blue", make_history())
    store.put_history("blue", record)  # replaced in place
    assert store.acquire_lease("k2")
    assert plain.get("record:k1") == record.model_dump_json()
    assert plain.get("blob:" + sha(small)) == small
    assert plain.get("blob:" + sha(large)) == large
    assert EditRecord.model_validate_json(plain.get(HISTORY_BLUE)) == record
    lease, expire_time = plain.get("lease:k2", expire_time=True)
    assert json.loads(lease)["owner"] and 0 < expire_time - time.time() <= LEASE_SECONDS
    assert len(plain) == 5 and len(_files(cache_dir)) == 1
    store.release_lease("k2")
    assert plain.get("lease:k2") is None and len(plain) == 4
    assert plain.check() == []


def test_a_history_entry_kept_in_a_file_is_replaced_and_its_file_removed(
    store: DiskStore, plain: diskcache.Cache, cache_dir: Path,
) -> None:
    """A record too long to sit in the database row (a very long prompt) is kept in a
    file; replacing that history entry leaves no file behind."""
    long = make_history(prompt="Make image 1 " + "very " * 8_000 + "blue")
    store.put_history("blue", long)
    assert len(_files(cache_dir)) == 1
    assert store.get_history("blue") == long
    short = make_history()
    store.put_history("blue", short)
    assert store.get_history("blue") == short
    assert _files(cache_dir) == [] and plain.check() == []


def test_an_expired_row_is_taken_over_and_a_live_one_kept(
    store: DiskStore, plain: diskcache.Cache, open_store: Callable[..., DiskStore],
) -> None:
    """A lease whose time ran out is taken over by the next one to ask, as diskcache's
    ``add`` does; a live one stays with its holder."""
    other = open_store()
    assert other.acquire_lease("k")
    assert not store.acquire_lease("k")
    plain.touch("lease:k", expire=-1)
    assert store.acquire_lease("k")
    assert store._is_ours(plain.get("lease:k"))
    other.release_lease("k")  # no longer its own: it stays
    assert store._is_ours(plain.get("lease:k"))
    assert plain.check() == []


def test_a_blob_row_planted_expired_in_a_file_goes_through_diskcache(
    store: DiskStore, plain: diskcache.Cache, cache_dir: Path,
) -> None:
    """A row that expired and is kept in a file is replaced by diskcache itself, which
    removes the old file."""
    data = os.urandom(100_000)
    plain.set("blob:" + sha(data), b"x" * 100_000, expire=-1)
    store.put_blob(sha(data), data)
    assert store.get_blob(sha(data)) == data
    assert len(_files(cache_dir)) == 1 and plain.check() == []


# --------------------------------------------------------------------------- prune


def test_prune_older_than_drops_old_records_and_their_images(store: DiskStore) -> None:
    """Records older than the cut go with their images; newer ones stay."""
    now = time.time()
    old = keep(store, "old", png((1, 0, 0)), created_at=now - 1000)
    new = keep(store, "new", png((2, 0, 0)), created_at=now)
    assert store.prune(older_than=500) == 1
    assert store.get_record("old") is None
    assert store.get_record("new") == new
    with pytest.raises(StoreError):
        store.get_blob(old.output_hash)


def test_prune_max_bytes_drops_oldest_first(store: DiskStore) -> None:
    """Oldest records go first until the images fit in max_bytes."""
    now = time.time()
    size = 1000
    for i in range(3):
        keep(store, f"k{i}", bytes([i]) * size, created_at=now - 100 + i)
    assert store.prune(max_bytes=size + size // 2) == 2
    assert [record.key for record in store.records()] == ["k2"]
    assert store.stats().blobs == 1


def test_prune_counts_a_shared_image_once(store: DiskStore) -> None:
    """Two keys with the same output share one image, counted and kept once."""
    now = time.time()
    shared = png((5, 5, 5))
    keep(store, "k1", shared, created_at=now - 20)
    keep(store, "k2", shared, created_at=now - 10)
    other = keep(store, "k3", png((6, 6, 6)), created_at=now)
    total = len(shared) + other.size_bytes
    assert store.prune(max_bytes=total) == 0
    assert store.prune(max_bytes=total - 1) == 2  # both users of the shared image go
    assert [record.key for record in store.records()] == ["k3"]


def test_prune_removes_orphan_blobs(store: DiskStore) -> None:
    """Images no record uses are removed; used ones stay."""
    kept = keep(store, "k1", png((1, 0, 0)))
    orphan = png((9, 0, 0))
    store.put_blob(sha(orphan), orphan)
    assert store.prune() == 0
    with pytest.raises(StoreError):
        store.get_blob(sha(orphan))
    assert store.get_blob(kept.output_hash)


def test_prune_drops_records_that_cannot_be_served(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """Records whose image is gone or that another schema wrote are pruned."""
    store.put_record(make_record("no-image", png((1, 0, 0))))
    plain.set("record:other-schema", '{"schema_version": 0}')
    keep(store, "fine", png((2, 0, 0)))
    assert store.prune() == 2
    assert store.stats().records == 1


# --------------------------------------------------------------------------- location


def test_directory_under_a_file_is_a_clear_store_error(tmp_path: Path) -> None:
    """A cache path that cannot be a directory raises StoreError saying what to do."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=r"cannot be opened for writing.*EDITGRAPH_CACHE_DIR"):
        DiskStore(blocker / "cache")


def test_unopenable_database_is_a_clear_store_error(tmp_path: Path) -> None:
    """A directory whose database cannot be opened (here: it is a directory) raises
    StoreError, not sqlite3's error."""
    (tmp_path / "cache" / "cache.db").mkdir(parents=True)
    with pytest.raises(StoreError, match=r"cache.*cannot be opened for writing") as caught:
        DiskStore(tmp_path / "cache")
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_graph_run_with_unusable_cache_dir_is_a_store_error(tmp_path: Path) -> None:
    """g.run() with a cache_dir that cannot be created fails with StoreError."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    g = eg.Graph(cache_dir=blocker / "cache")
    g.edit(f"Make {g.image(png((1, 2, 3)), name='car')} blue", name="blue")
    provider = CountingProvider()
    with pytest.raises(StoreError, match="a-file"):
        g.run(provider=provider, progress=False)
    assert provider.calls == 0


def test_read_only_directory_is_a_clear_store_error(tmp_path: Path) -> None:
    """A directory without write permission raises StoreError naming it."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = locked / "probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("running with privileges that ignore directory permissions (root)")
        with pytest.raises(StoreError, match="locked.*cannot be opened for writing"):
            DiskStore(locked)
    finally:
        locked.chmod(0o700)


def test_default_cache_dir_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """EDITGRAPH_CACHE_DIR wins, with ~ expanded; DiskStore() uses it."""
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", str(tmp_path / "from-env"))
    assert default_cache_dir() == tmp_path / "from-env"
    store = DiskStore()
    assert store.directory == tmp_path / "from-env"
    assert (tmp_path / "from-env" / "cache.db").exists()
    store.close()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", "~/cache-here")
    assert default_cache_dir() == tmp_path / "cache-here"


def test_default_cache_dir_falls_back_to_the_platform_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without EDITGRAPH_CACHE_DIR (or with it empty) it is the user cache directory."""
    monkeypatch.delenv("EDITGRAPH_CACHE_DIR", raising=False)
    expected = Path(platformdirs.user_cache_dir("editgraph", appauthor=False))
    assert default_cache_dir() == expected
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", "")
    assert default_cache_dir() == expected


def test_submission_journal_round_trip(store: DiskStore) -> None:
    """A journaled task reads back, lists, is replaced per key, and is forgotten on delete."""
    from editgraph.requests import Submission
    from editgraph.store import JournalEntry

    def entry(key: str, task: str) -> JournalEntry:
        submission = Submission(node="night", model="m", task_id=task, polling_url="https://x/1",
                                seed=1, estimated_cost=0.03, cost=0.03, submitted_at=1.0)
        return JournalEntry(key=key, provider="bfl", submission=submission,
                            request={"node": "night"})

    assert store.get_journal("k1") is None
    store.put_journal(entry("k1", "t1"))
    store.put_journal(entry("k1", "t2"))
    store.put_journal(entry("k2", "t3"))
    found = store.get_journal("k1")
    assert found is not None and found.submission.task_id == "t2"
    assert sorted(e.submission.task_id for e in store.journal_entries()) == ["t2", "t3"]
    store.delete_journal("k1")
    assert store.get_journal("k1") is None
    assert [e.key for e in store.journal_entries()] == ["k2"]


# --------------------------------------------------------------------------- batched lookups


def test_lookup_serves_verified_hits_and_repairs_a_damaged_one(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """lookup: good entries hit; a flipped image is a miss, removed with its record."""
    good = [keep(store, f"k{n}", png((n, 0, 0))) for n in range(3)]
    bad = keep(store, "bad", png((9, 9, 9)))
    plain.set(f"blob:{bad.output_hash}", b"flipped")
    found = store.lookup(["k0", "k1", "bad", "k2", "absent", "k1"])
    assert sorted(found) == ["k0", "k1", "k2"]
    assert [found[r.key].output_hash for r in good] == [r.output_hash for r in good]
    assert "record:bad" not in plain and f"blob:{bad.output_hash}" not in plain
    assert store.repaired == 2 and store.lookup(["bad"]) == {}


def test_lookup_reads_records_migrated_or_kept_in_files(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """A 0.1.0 record and a record too large for a row (kept in a file) are hits too."""
    old = keep(store, "old", png((1, 1, 1)))
    legacy = {k: v for k, v in old.model_dump(mode="json").items()
              if k not in ("schema_version", "model", "prompt", "parameters", "references")}
    legacy["request"] = {"model": old.model, "prompt": old.prompt, **old.parameters}
    plain.set("record:old", json.dumps(legacy))
    big = keep(store, "big", png((2, 2, 2)), prompt="Make image 1 blue " + "x" * 40_000)
    found = store.lookup(["old", "big"])
    assert found["old"].output_hash == old.output_hash
    assert found["big"].output_hash == big.output_hash and store.repaired == 0


def test_lookup_with_answers_as_lookup_has_blob_and_history_keys_do(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """lookup_with in one statement: the same hits (a damaged image a repaired miss), the
    same sources' presence and the same history keys as the three reads it replaces."""
    good = [keep(store, f"k{n}", png((n, 0, 0))) for n in range(3)]
    bad = keep(store, "bad", png((9, 9, 9)))
    plain.set(f"blob:{bad.output_hash}", b"flipped")
    source = png((5, 5, 5))
    store.put_blob(sha(source), source)
    for n, record in enumerate(good):
        store.put_history(f"edit{n}", record, "recipe.py#item")
    store.put_history("edit0", bad, "recipe.py#other")
    big = make_record("big", png((2, 2, 2)), prompt="Make image 1 blue " + "x" * 40_000)
    store.put_history("inafile", big, "recipe.py#item")
    names = ["edit0", "edit1", "edit2", "inafile", "never"]
    found, kept, history = store.lookup_with(
        ["k0", "bad", "k1", "k2", "absent"], blobs=[sha(source)], history=names,
        graph="recipe.py#item")
    assert sorted(found) == ["k0", "k1", "k2"] and store.repaired == 2
    assert kept is True
    assert history == store.history_keys(names, "recipe.py#item")
    assert history == {"edit0": "k0", "edit1": "k1", "edit2": "k2", "inafile": "big"}
    assert store.lookup_with(["k0"], blobs=[sha(source), sha(b"lost")], history=[],
                             graph="recipe.py#item")[1] is False
    plain.delete(f"blob:{sha(source)}")
    assert store.lookup_with([], blobs=[sha(source)], history=[], graph="g")[1] is False


def test_lookup_with_an_expired_record_or_history_finds_neither(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """Rows past their expiry are absent to lookup_with, as to diskcache's own get."""
    record = keep(store, "k", png((4, 4, 4)))
    store.put_history("edit", record, "g")
    text = record.model_dump_json()
    plain.set("record:k", text, expire=-1)
    plain.set('history:["g", "edit"]', text, expire=-1)
    found, _, history = store.lookup_with(["k"], blobs=[], history=["edit"], graph="g")
    assert found == {} and history == {}


@pytest.mark.parametrize("change", [
    {"width": "wide"}, {"width": 1.5}, {"parameters": []}, {"created_at": 1e300},
    {"references": [{"hash": "h", "media_type": "image/png"}]}, {"schema_version": 3},
    {"kind": "other"}, {"elapsed": "fast"},
])
def test_record_facts_accept_only_what_editrecord_accepts(change: dict[str, Any]) -> None:
    """RecordFacts.from_json refuses every record EditRecord refuses (the slow path decides)."""
    data = png((3, 3, 3))
    text = json.dumps({**make_record("k", data).model_dump(mode="json"), **change})
    with pytest.raises(ValueError):
        EditRecord.model_validate_json(text)
    assert RecordFacts.from_json(text) is None


def test_record_facts_match_the_record() -> None:
    """The facts of a record's JSON are the facts of the validated record."""
    record = make_record("k", png((4, 4, 4)), url="https://x.example/1", url_expires_at=5.0)
    text = record.model_dump_json()
    assert RecordFacts.from_json(text) == RecordFacts.of(record)
    schema: Any = _RECORD_FIELDS.core_schema
    while schema["type"] != "typed-dict":
        schema = schema.get("schema") or schema["definitions"][0]
    required = {name for name, field in schema["fields"].items() if field.get("required", True)}
    record_required = {n for n, field in EditRecord.model_fields.items() if field.is_required()}
    assert set(schema["fields"]) == set(EditRecord.model_fields)
    assert required == record_required | {"schema_version"}  # only ever stricter


def test_history_keys_read_every_kind_of_entry(
    store: DiskStore, plain: diskcache.Cache
) -> None:
    """history_keys agrees with get_history: named graphs, unnamed (older) entries, none."""
    store.put_history("blue", make_history("k1"), graph="/recipes/a.py")
    store.put_history("blue", make_history("k2"))
    plain.set("history:night", make_history("k3").model_dump_json())  # before graph names
    plain.set(f"history:{json.dumps(['__main__', 'cut'])}", '{"key": "trunc')
    assert store.history_keys(["blue", "night", "cut", "none"]) == {"blue": "k2", "night": "k3"}
    assert store.history_keys(["blue", "night"], graph="/recipes/a.py") == {"blue": "k1"}


def test_history_keys_read_again_see_every_change(
    store: DiskStore, plain: diskcache.Cache, open_store: Callable[..., DiskStore]
) -> None:
    """history_keys read again see a change by another connection, by another store on
    the folder (the same connection), by this store and by a clear."""
    store.put_history("blue", make_history("k1"))
    assert store.history_keys(["blue", "night"]) == {"blue": "k1"}
    store.add_saved(0.25)
    assert store.history_keys(["blue", "night"]) == {"blue": "k1"}
    plain.set(HISTORY_BLUE, make_history("k2").model_dump_json())  # another connection
    assert store.history_keys(["blue", "night"]) == {"blue": "k2"}
    open_store().put_history("night", make_history("k3"))  # the same connection
    assert store.history_keys(["blue", "night"]) == {"blue": "k2", "night": "k3"}
    store.put_history("blue", make_history("k4"))
    assert store.history_keys(["blue", "night"]) == {"blue": "k4", "night": "k3"}
    store.clear()
    assert store.history_keys(["blue", "night"]) == {}


def test_history_keys_are_not_read_again_while_nothing_changed(store: DiskStore) -> None:
    """A second read of unchanged history (the spend saved added between) runs no
    SELECT of history entries; a name not read before is read."""
    store.put_history("blue", make_history("k1"))
    assert store.history_keys(["blue"]) == {"blue": "k1"}
    store.add_saved(0.25)
    statements: list[str] = []
    connection = store._cache._con
    connection.set_trace_callback(statements.append)
    try:
        assert store.history_keys(["blue"]) == {"blue": "k1"}
        assert not [s for s in statements if "SELECT" in s and "history:" in s]
        assert store.history_keys(["blue", "night"]) == {"blue": "k1"}
        assert [s for s in statements if "SELECT" in s and "history:" in s]
    finally:
        connection.set_trace_callback(None)


def test_a_folder_opened_again_reuses_its_connection_until_it_is_replaced(
    tmp_path: Path,
) -> None:
    """A second store on a folder shares the first's diskcache; a deleted folder opens anew."""
    import shutil

    first = DiskStore(tmp_path / "cache")
    keep(first, "k1", png((5, 5, 5)))
    second = DiskStore(tmp_path / "cache")
    assert second._cache is first._cache and second.get_record("k1") is not None
    del first, second
    shutil.rmtree(tmp_path / "cache")
    third = DiskStore(tmp_path / "cache")
    assert third.get_record("k1") is None and third.stats().records == 0
    third.close()


def test_history_holds_the_record_it_was_given_not_the_last_one_kept(store: DiskStore) -> None:
    """A history row is the JSON of the record passed to ``put_history``: the same text
    as its record row when that was just kept, and its own record's otherwise."""
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    kept = keep(store, "a" * 64, red)
    store.put_history("blue", kept)
    assert store.get_history("blue") == kept
    other = make_record("b" * 64, blue, node="other")
    store.put_history("other", other)  # the last record kept is ``kept``, not this one
    assert store.get_history("other") == other
    assert store.get_history("blue") == kept


def test_a_lease_holds_the_stores_identity_and_its_expiry(store: DiskStore) -> None:
    """A lease row is the store's identity, owner first, and when it expires (JSON)."""
    before = time.time()
    assert store.acquire_lease("c" * 64)
    text = store._cache.get("lease:" + "c" * 64)
    assert isinstance(text, str) and text.startswith('{"owner": "')
    lease = json.loads(text)
    assert {name: lease[name] for name in store._identity} == store._identity
    assert before + LEASE_SECONDS <= lease["expires_at"] <= time.time() + LEASE_SECONDS

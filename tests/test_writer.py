"""Tests for stores/writer.py: store writes off the event loop, one commit per layer and
per link, partial commits, and runs that return only once everything is durable."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from edit_providers import CountingProvider, png_bytes, render

import editgraph as eg
from editgraph.errors import StoreError
from editgraph.keys import content_hash
from editgraph.records import EditRecord
from editgraph.store import DiskStore
from editgraph.stores import writer as writer_module
from editgraph.stores.writer import HASH_OFF_LOOP_BYTES, StoreWriter, Writes

#: A safety net for waits on events: a broken writer fails the test instead of hanging.
TIMEOUT = 10.0

RED = png_bytes((255, 0, 0))


class CountingStore(DiskStore):
    """A real DiskStore that counts its commits and the records each one kept."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.records_per_commit: list[int] = []
        self._records_now = 0

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self._records_now = 0
        with super().batch():
            yield
        self.records_per_commit.append(self._records_now)

    def put_record(self, record: EditRecord) -> None:
        super().put_record(record)
        self._records_now += 1


class TogetherProvider(CountingProvider):
    """Answers every call at the same moment, once ``calls`` calls have arrived."""

    def __init__(self, calls: int) -> None:
        super().__init__("together")
        self.expected = calls
        self.all_in: asyncio.Event | None = None

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        if self.all_in is None:
            self.all_in = asyncio.Event()
        self.calls.append(request)
        if len(self.calls) == self.expected:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), TIMEOUT)
        return eg.GeneratedImage(render(request), "image/png")


def wide_graph(cache: Path | DiskStore, width: int, tag: str = "") -> eg.Graph:
    """``width`` independent edits of one source."""
    graph = eg.Graph(cache_dir=cache, concurrency=width)
    car = graph.image(RED, name="car")
    for index in range(width):
        graph.edit(f"Paint {car} shade {index}{tag}", name=f"shade{index}")
    return graph


def writer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name.startswith("editgraph writer")]


def assert_writers_idle() -> None:
    """Every writer thread left is idle (no run holds its writer): stopping the idle ones
    leaves none."""
    StoreWriter.stop_idle()
    assert not writer_threads()


def test_a_layer_that_finishes_together_is_one_commit(tmp_path: Path) -> None:
    """Eight results that arrive together are kept in one commit, off the event loop."""
    store = CountingStore(tmp_path / "cache")
    run = wide_graph(store, 8).run(provider=TogetherProvider(8))
    assert len(run) == 8
    assert [count for count in store.records_per_commit if count] == [8]
    # Sources and the eight leases, then the eight results with plan's history: the
    # run ends with no commit of its own.
    assert len(store.records_per_commit) == 2, store.records_per_commit
    assert_writers_idle()


def test_an_edit_of_two_results_made_together_is_leased_in_their_commit(
    tmp_path: Path,
) -> None:
    """The lease of an edit that takes two results finishing together joins their commit:
    it does not wait for a commit of its own before its call."""
    store = CountingStore(tmp_path / "cache")
    graph = eg.Graph(cache_dir=store, concurrency=4)
    car = graph.image(RED, name="car")
    left = graph.edit(f"Paint {car} red", name="left")
    right = graph.edit(f"Paint {car} blue", name="right")
    graph.edit(f"Put {left} beside {right}", name="both")
    run = graph.run(provider=TogetherProvider(2))
    assert len(run) == 3
    # Sources and two leases; both results and the third edit's lease; the third result.
    assert store.records_per_commit == [0, 2, 1]


def test_a_deep_chain_pays_one_commit_per_link(tmp_path: Path) -> None:
    """Each link's lease is taken in the commit that keeps the link before it."""
    store = CountingStore(tmp_path / "cache")
    graph = eg.Graph(cache_dir=store)
    previous = graph.image(RED, name="car")
    links = 12
    for index in range(links):
        previous = graph.edit(f"Step {index} of {previous}", name=f"link{index}")
    provider = CountingProvider()
    run = graph.run(provider=provider)
    assert provider.nodes == [f"link{index}" for index in range(links)]
    assert len(run) == links
    # The first lease (with the sources), then one commit per link (with its history).
    assert len(store.records_per_commit) == links + 1, store.records_per_commit
    assert all(count == 1 for count in store.records_per_commit[1:])
    again = DiskStore(tmp_path / "cache")
    assert all(again.get_verified_record(result.key) is not None for result in run.values())
    # No lease is left behind: another run may take each key at once.
    assert all(again.acquire_lease(result.key) for result in run.values())
    again.close()


def _chain(cache: Path, first_prompt: str) -> eg.Graph:
    """Two edits in a chain on ``cache``; the first's prompt starts with ``first_prompt``."""
    graph = eg.Graph(cache_dir=cache)
    first = graph.edit(f"{first_prompt} {graph.image(RED, name='car')}", name="first")
    graph.edit(f"Frame {first}", name="second")
    return graph


def test_a_lease_taken_ahead_for_a_cached_edit_is_given_back(tmp_path: Path) -> None:
    """A lease taken ahead for an edit then served from the cache is freed by the run."""
    cache = tmp_path / "cache"
    same = png_bytes((9, 9, 9))

    provider = CountingProvider(image_for=lambda request: same)
    _chain(cache, "Paint").run(provider=provider)
    # A new prompt for "first" that gives the same bytes: "second" keeps its key.
    run = _chain(cache, "Repaint").run(provider=provider)
    assert provider.nodes == ["first", "second", "first"]
    assert run["second"].cached and not run["first"].cached
    store = DiskStore(cache)  # another owner: it takes a lease only if it was freed
    assert store.acquire_lease(run["second"].key)
    store.close()


class AheadFailsStore(DiskStore):
    """A DiskStore that cannot take the lease of one key (its database says no)."""

    def __init__(self, directory: Path, refused: str) -> None:
        super().__init__(directory)
        self.refused = refused
        self.refusals = 0

    def acquire_lease(self, key: str) -> bool:
        if key == self.refused:
            self.refusals += 1
            raise StoreError("the lease could not be written")
        return super().acquire_lease(key)


def test_a_failed_lease_taken_ahead_and_never_used_is_heard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A lease taken ahead that failed, for an edit then served from the cache (so no
    edit takes it), leaves no 'exception was never retrieved' behind the run."""
    cache = tmp_path / "cache"
    same = png_bytes((7, 7, 7))

    provider = CountingProvider(image_for=lambda request: same)
    second_key = _chain(cache, "Paint").run(provider=provider)["second"].key
    store = AheadFailsStore(cache, refused=second_key)
    graph = _chain(cache, "Repaint")
    graph._store = store  # the run's store: a real DiskStore on the same folder
    with caplog.at_level(logging.ERROR):
        run = graph.run(provider=provider)
        del graph
        gc.collect()
    assert store.refusals == 1  # taken ahead with "first"'s result, and failed
    assert run["second"].cached and not run["first"].cached
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    store.close()


class SlowBlobStore(DiskStore):
    """A DiskStore whose blob file for one image is written only once ``go`` is set
    (a slow disk under one result), bounded by TIMEOUT."""

    def __init__(self, directory: Path, held: bytes) -> None:
        super().__init__(directory)
        self.held = content_hash(held)
        self.go = threading.Event()
        self.waited_out = False
        self.in_thread: str | None = None

    def stage_blob(self, content_hash: str, data: bytes) -> None:
        if content_hash == self.held:
            self.in_thread = threading.current_thread().name
            self.waited_out = not self.go.wait(TIMEOUT)
        super().stage_blob(content_hash, data)


class OneFirstProvider(CountingProvider):
    """``first`` answers at once; ``second`` answers only once ``first`` has (while the
    store is still writing ``first``), and then tells the store to go on."""

    def __init__(self, store: SlowBlobStore) -> None:
        super().__init__("one-first")
        self.store = store
        self.first_back: asyncio.Event | None = None

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        if self.first_back is None:
            self.first_back = asyncio.Event()
        self.calls.append(request)
        if request.node == "first":
            self.first_back.set()
        else:
            await asyncio.wait_for(self.first_back.wait(), TIMEOUT)
            # Let the first result's write finish only after this one came back.
            asyncio.get_running_loop().call_soon(self.store.go.set)
        return eg.GeneratedImage(render(request), "image/png")


def test_a_slow_blob_write_does_not_hold_up_another_edit(tmp_path: Path) -> None:
    """While one result's blob is being written, the loop goes on: another edit in flight
    is answered and handled; the run returns with both kept."""
    graph = eg.Graph(cache_dir=tmp_path / "unused", concurrency=2)
    car = graph.image(RED, name="car")
    graph.edit(f"Paint {car}", name="first")
    graph.edit(f"Frame {car}", name="second")
    # The first result's bytes, known up front: the provider renders deterministically.
    probe = CountingProvider("one-first")
    graph.run(provider=probe, cache_dir=tmp_path / "probe")
    first_bytes = render(next(request for request in probe.calls if request.node == "first"))
    store = SlowBlobStore(tmp_path / "cache", first_bytes)
    provider = OneFirstProvider(store)
    run = graph.run(provider=provider, cache_dir=store)
    assert not store.waited_out, "the loop was blocked while the blob was written"
    assert store.in_thread is not None and store.in_thread.startswith("editgraph writer")
    assert set(run) == {"first", "second"} and not run.uncached
    fresh = DiskStore(tmp_path / "cache")
    assert all(fresh.get_verified_record(result.key) for result in run.values())
    fresh.close()


class FailingGroupStore(DiskStore):
    """A DiskStore whose commit fails (rolled back) whenever it holds ``bad``'s record,
    as a full disk would for one oversized write."""

    def __init__(self, directory: Path, bad: str) -> None:
        super().__init__(directory)
        self.bad = bad
        self.failed_commits = 0
        self._holds_bad = False

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self._holds_bad = False
        with super().batch():
            yield
            if self._holds_bad:
                self.failed_commits += 1
                raise StoreError("cannot write: No space left on device (test)")

    def put_record(self, record: EditRecord) -> None:
        super().put_record(record)
        if record.node == self.bad:
            self._holds_bad = True


def test_one_failing_write_in_a_group_leaves_the_others_committed(tmp_path: Path) -> None:
    """A group commit that fails is retried write by write: the others are kept; the
    failed one is still returned, named in ``uncached``."""
    store = FailingGroupStore(tmp_path / "cache", bad="shade2")
    run = wide_graph(store, 5).run(provider=TogetherProvider(5))
    assert set(run) == {f"shade{index}" for index in range(5)}
    assert set(run.uncached) == {"shade2"} and "No space left" in run.uncached["shade2"]
    request = run["shade2"].request
    assert isinstance(request, eg.EditRequest)
    assert run["shade2"].data == render(request)  # served from memory
    assert store.failed_commits == 2  # the group, then shade2 alone
    fresh = DiskStore(tmp_path / "cache")
    kept = {name for name, result in run.items() if fresh.get_verified_record(result.key)}
    assert kept == {"shade0", "shade1", "shade3", "shade4"}
    fresh.close()


class SlowCommitStore(DiskStore):
    """A DiskStore whose every commit takes a while (a slow disk)."""

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        with super().batch():
            yield
            time.sleep(0.1)  # the slow disk itself, not a wait for anything


def test_run_returns_only_when_everything_is_durable(tmp_path: Path) -> None:
    """With a slow writer, run() still returns only after every result, lease release
    and history entry is committed: a fresh store sees them all at once."""
    store = SlowCommitStore(tmp_path / "cache")
    graph = wide_graph(store, 4)
    with pytest.raises(eg.RunError) as raised:
        graph.run(provider=CountingProvider(fail={"shade3"}))
    run = raised.value.run
    assert run is not None and set(run) == {"shade0", "shade1", "shade2"}
    assert_writers_idle()
    # Read first (a read never waits for a writer; opening a store may), then reopen.
    for name, result in run.items():
        assert store.get_verified_record(result.key) is not None, name
        assert store.get_history(name, graph.name) is not None, name
    fresh = DiskStore(tmp_path / "cache")
    for name, result in run.items():
        assert fresh.get_verified_record(result.key) is not None, name
        assert fresh.get_history(name, graph.name) is not None, name
        assert fresh.acquire_lease(result.key), name
    fresh.close()


def test_one_graph_run_from_several_threads_shares_one_writer(tmp_path: Path) -> None:
    """Runs of one graph from several threads at once all finish and keep everything;
    the store's one writer thread is idle once the last run returns."""
    store = DiskStore(tmp_path / "cache")
    graphs = [wide_graph(store, 6, tag=f" thread {index}") for index in range(3)]
    runs: dict[int, eg.Run] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            runs[index] = graphs[index].run(provider=CountingProvider())
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 3)
    assert not errors and len(runs) == 3
    fresh = DiskStore(tmp_path / "cache")
    assert all(fresh.get_verified_record(result.key)
               for run in runs.values() for result in run.values())
    fresh.close()
    assert_writers_idle()


def test_large_results_are_hashed_off_the_loop_and_still_grouped(tmp_path: Path) -> None:
    """Writes of results hashed in worker threads still share their group's commit."""
    store = CountingStore(tmp_path / "cache")
    writes = Writes(store)
    big = [bytes([index]) * (HASH_OFF_LOOP_BYTES + 1) for index in range(4)]

    async def main() -> list[str]:
        async def keep(data: bytes) -> str:
            digest = await writes.digest(data)
            await writes.submit(lambda: store.put_blob(digest, data))
            return digest

        try:
            return await asyncio.gather(*(keep(data) for data in big))
        finally:
            await writes.close()

    digests = asyncio.run(main())
    assert digests == [content_hash(data) for data in big]
    assert len(store.records_per_commit) == 1
    assert all(store.get_blob(digest) == data for digest, data in zip(digests, big, strict=True))
    store.close()


def test_a_write_after_close_still_lands(tmp_path: Path) -> None:
    """A straggling write after close (a cancelled edit's cleanup) is committed inline."""
    store = DiskStore(tmp_path / "cache")
    writes = Writes(store)

    async def main() -> bool:
        await writes.close()
        return await writes.submit(lambda: store.acquire_lease("k" * 64))

    assert asyncio.run(main()) is True
    assert StoreWriter.of(store).commits == 0  # never went through the thread
    store.close()


def test_s3_writes_run_on_the_writer_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 store's uploads and record writes happen in the writer thread, off the loop."""
    pytest.importorskip("obstore")
    pytest.importorskip("moto")
    from editgraph.stores.s3 import S3Store
    from editgraph.testing.s3 import MotoS3

    threads: list[str] = []

    class NotingS3Store(S3Store):
        """A real S3Store (against moto) noting which thread makes each bucket write."""

        def put_record(self, record: EditRecord) -> None:
            threads.append(threading.current_thread().name)
            super().put_record(record)

        def stage_blob(self, content_hash: str, data: bytes) -> None:
            threads.append(threading.current_thread().name)
            super().stage_blob(content_hash, data)

    with MotoS3() as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        store = NotingS3Store(server.url("t"), local_dir=tmp_path / "local")
        graph = eg.Graph(cache_dir=store, concurrency=3)
        car = graph.image(RED, name="car")
        for index in range(3):
            graph.edit(f"Paint {car} shade {index}", name=f"shade{index}")
        run = graph.run(provider=CountingProvider())
        assert len(run) == 3 and len(threads) == 7  # the source, three images, three records
        assert all(name.startswith("editgraph writer") for name in threads), threads
        fresh = DiskStore(tmp_path / "local")
        assert all(fresh.get_verified_record(result.key) for result in run.values())
        fresh.close()


def test_a_store_is_not_kept_alive_by_its_writer(tmp_path: Path) -> None:
    """Once its runs are over, a store (and its database connection) can be collected."""
    import gc
    import weakref

    store = DiskStore(tmp_path / "cache")
    wide_graph(store, 2).run(provider=CountingProvider())
    gone = weakref.ref(store)
    del store
    gc.collect()
    assert gone() is None


def test_a_cached_rerun_starts_no_writer_thread(tmp_path: Path) -> None:
    """A re-run served from the cache commits its bookkeeping in one transaction of its
    own thread: no writer thread is started for it, and the history still lands."""
    store = CountingStore(tmp_path / "cache")
    wide_graph(store, 4).run(provider=CountingProvider())
    writer = StoreWriter.of(store)
    commits_before = writer.commits
    store.records_per_commit.clear()
    started: list[str] = []
    real_start = threading.Thread.start

    def watched(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(threading.Thread, "start", watched)
        run = wide_graph(store, 4).run(provider=CountingProvider())
    assert all(result.cached for result in run.values())
    assert not [name for name in started if name.startswith("editgraph writer")]
    assert writer.commits == commits_before  # nothing went through the thread
    assert len(store.records_per_commit) == 1  # plan's history, in one commit
    writer.release()


class ReadCountingStore(DiskStore):
    """A real DiskStore that counts the blobs read back from it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.blob_reads: list[str] = []

    def get_blob(self, content_hash: str) -> bytes:
        self.blob_reads.append(content_hash)
        return super().get_blob(content_hash)


def test_results_made_in_a_run_reach_their_dependents_from_memory(tmp_path: Path) -> None:
    """An edit's references made earlier in the same run are handed over as they were
    hashed, not read back from the store (each 1 MB read is a read and a sha256)."""
    store = ReadCountingStore(tmp_path / "cache")
    graph = eg.Graph(cache_dir=store)
    car = graph.image(RED, name="car")
    first = graph.edit(f"Paint {car} blue", name="first")
    left = graph.edit(f"Shade {first} left", name="left")
    graph.edit(f"Shade {first} right", name="right")
    graph.edit(f"Join {left} and {first}", name="joined")
    provider = CountingProvider()
    run = graph.run(provider=provider)
    assert sorted(provider.nodes) == ["first", "joined", "left", "right"]
    assert store.blob_reads == []
    sent = {request.node: request for request in provider.calls}
    assert sent["joined"].references[1].data == run["first"].data


class _CountingConnection(sqlite3.Connection):
    """A real SQLite connection that counts the statements run on it in writer threads."""

    counted: ClassVar[list[str]] = []

    def execute(self, sql: str, *parameters: Any) -> sqlite3.Cursor:
        if threading.current_thread().name.startswith("editgraph writer"):
            self.counted.append(sql)
        return super().execute(sql, *parameters)

    def executemany(self, sql: str, *parameters: Any) -> sqlite3.Cursor:
        if threading.current_thread().name.startswith("editgraph writer"):
            self.counted.append(sql)
        return super().executemany(sql, *parameters)


def test_a_kept_edit_costs_a_few_statements_in_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keeping a generated edit (its lease, image, record, history, the lease's release)
    takes a handful of SQLite statements, not diskcache's two or three per row."""
    connect = sqlite3.connect

    def counting(*arguments: Any, **options: Any) -> sqlite3.Connection:
        return connect(*arguments, factory=_CountingConnection, **options)

    _CountingConnection.counted.clear()
    monkeypatch.setattr(sqlite3, "connect", counting)
    width = 16
    run = wide_graph(tmp_path / "cache", width).run(provider=TogetherProvider(width))
    assert len(run) == width
    statements = _CountingConnection.counted
    per_edit = len(statements) / width
    print(f"{per_edit:.2f} statements per kept edit")
    assert per_edit <= 8, statements  # 13 before (diskcache's add, set and delete)


def test_the_writer_stays_warm_for_the_next_run_on_the_same_folder(tmp_path: Path) -> None:
    """A new Graph on the same folder (a new store) finds the writer thread of the last
    run idle and uses it: no thread and no connection to start again."""
    StoreWriter.stop_idle()
    wide_graph(tmp_path / "cache", 3).run(provider=CountingProvider())
    first = writer_threads()
    assert len(first) == 1
    run = wide_graph(tmp_path / "cache", 3, tag=" again").run(provider=CountingProvider())
    assert len(run) == 3 and not any(result.cached for result in run.values())
    assert writer_threads() == first
    assert_writers_idle()


def test_an_idle_writer_stops_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer no run takes again within IDLE_SECONDS stops its thread."""
    StoreWriter.stop_idle()
    monkeypatch.setattr(writer_module, "IDLE_SECONDS", 0.01)
    wide_graph(tmp_path / "cache", 2).run(provider=CountingProvider())
    for thread in writer_threads():
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_idle_writers_are_few(tmp_path: Path) -> None:
    """Runs on many folders leave at most MAX_IDLE writer threads idle."""
    StoreWriter.stop_idle()
    for index in range(writer_module.MAX_IDLE + 2):
        wide_graph(tmp_path / f"cache{index}", 1).run(provider=CountingProvider())
    assert len(writer_threads()) == writer_module.MAX_IDLE
    assert_writers_idle()


def _run_in_child(cache: str, done: Any) -> None:
    run = wide_graph(Path(cache), 2, tag=" child").run(provider=CountingProvider())
    done.put(sorted(result.key for result in run.values()))


def test_a_forked_child_runs_with_its_own_writer(tmp_path: Path) -> None:
    """A child forked while the parent's writer is idle (its thread not in the child)
    runs a graph on the same folder and keeps its results."""
    import multiprocessing
    import warnings

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    wide_graph(tmp_path / "cache", 2).run(provider=CountingProvider())
    assert writer_threads()
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    with warnings.catch_warnings():  # 3.12+: fork of a multi-threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        child = context.Process(target=_run_in_child, args=(str(tmp_path / "cache"), done))
        child.start()
    keys = done.get(timeout=TIMEOUT * 3)
    child.join(TIMEOUT)
    assert child.exitcode == 0 and len(keys) == 2
    store = DiskStore(tmp_path / "cache")
    assert all(store.get_verified_record(key) for key in keys)
    store.close()
    done.close()
    done.join_thread()
    assert_writers_idle()


def test_a_process_exits_at_once_with_its_writer_idle(tmp_path: Path) -> None:
    """A script that ran a graph exits promptly and quietly (every warning an error):
    the idle writer is stopped at exit, nothing hangs, nothing is left unclosed."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from pathlib import Path\n"
        "from edit_providers import CountingProvider\n"
        "from test_writer import wide_graph\n"
        "run = wide_graph(Path(sys.argv[1]), 3).run(provider=CountingProvider())\n"
        "assert len(run) == 3\n"
    )
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, str(tmp_path / "cache"),
         str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=TIMEOUT * 6, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""


class LeaseCountingStore(DiskStore):
    """A real DiskStore that counts the leases taken in each commit."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.leases_per_commit: list[int] = []
        self._leases_now = 0

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self._leases_now = 0
        with super().batch():
            yield
        self.leases_per_commit.append(self._leases_now)

    def acquire_lease(self, key: str) -> bool:
        self._leases_now += 1
        return super().acquire_lease(key)


def test_the_first_commit_takes_the_leases_of_as_many_edits_as_run_at_once(
    tmp_path: Path,
) -> None:
    """The run's first commit holds the leases of its first edits (as many as
    ``concurrency``), not of every edit it will generate; each edit is leased once."""
    store = LeaseCountingStore(tmp_path / "cache")
    graph = wide_graph(store, 6)
    run = graph.run(provider=CountingProvider(), concurrency=2)
    assert len(run) == 6
    assert store.leases_per_commit[0] == 2
    assert sum(store.leases_per_commit) == 6


class RacedStore(DiskStore):
    """A real DiskStore on whose folder another store keeps a finished result (as
    another process would) just after this run's lookup missed it."""

    def __init__(self, directory: Path, planted: tuple[EditRecord, bytes]) -> None:
        super().__init__(directory)
        self.planted: tuple[EditRecord, bytes] | None = planted

    def lookup(self, keys: Any) -> Any:
        found = super().lookup(keys)
        if self.planted is not None and self.planted[0].key in keys:
            record, data = self.planted
            self.planted = None
            other = DiskStore(self.directory)
            other.put_blob(record.output_hash, data)
            other.put_record(record)
        return found


def test_a_result_kept_elsewhere_after_the_lookup_is_served_not_paid(tmp_path: Path) -> None:
    """When another process keeps an edit's result between this run's lookup and its
    lease, the edit is served from the cache: the lease is no licence to pay again."""
    made = wide_graph(tmp_path / "elsewhere", 2).run(provider=CountingProvider())
    elsewhere = DiskStore(tmp_path / "elsewhere")
    record = elsewhere.get_verified_record(made["shade0"].key)
    assert record is not None
    planted = (record, elsewhere.get_blob(record.output_hash))
    elsewhere.close()
    store = RacedStore(tmp_path / "cache", planted)
    provider = CountingProvider()
    run = wide_graph(store, 2).run(provider=provider)
    assert provider.nodes == ["shade1"]
    assert run["shade0"].cached and run["shade0"].key == record.key
    assert store.acquire_lease(record.key)  # nothing left held


class SourcelessStore(DiskStore):
    """A real DiskStore that cannot write the graph's source (a full disk)."""

    def stage_blob(self, content_hash: str, data: bytes) -> None:
        if data == RED:
            raise StoreError("cannot write: No space left on device (test)")
        super().stage_blob(content_hash, data)


def test_a_source_the_store_cannot_keep_is_warned_of_and_the_results_stand(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """When the store cannot keep the graph's source, the run says so in one warning
    (heard on its loop, not left to whichever thread collects the write) and its results
    are kept."""
    store = SourcelessStore(tmp_path / "cache")
    with caplog.at_level("WARNING", logger="editgraph"):
        run = wide_graph(store, 2).run(provider=CountingProvider())
    assert len(run) == 2 and not run.uncached
    warned = [record.getMessage() for record in caplog.records
              if "sources were not kept" in record.getMessage()]
    assert len(warned) == 1 and "No space left" in warned[0]
    fresh = DiskStore(tmp_path / "cache")
    assert all(fresh.get_verified_record(result.key) for result in run.values())
    assert not fresh.has_blob(content_hash(RED))
    fresh.close()


# -- another process holding the database ----------------------------------------------

HOLD_DATABASE = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")  # the write lock, as a long commit of another process holds it
print("holding", flush=True)
sys.stdin.read()  # until the test closes stdin
con.execute("COMMIT")
"""


@contextlib.contextmanager
def database_held(cache: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the write lock of ``cache``'s database until its stdin
    closes (or the block ends)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_DATABASE, str(cache / "cache.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        yield holder
    finally:
        assert holder.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()


class _StoreNotices(logging.Handler):
    """The ``editgraph.store`` notices; ``on_notice`` runs when one arrives."""

    def __init__(self, on_notice: Any = None) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.on_notice = on_notice

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if self.on_notice is not None:
            self.on_notice()


@contextlib.contextmanager
def store_notices(on_notice: Any = None) -> Iterator[_StoreNotices]:
    handler = _StoreNotices(on_notice)
    log = logging.getLogger("editgraph.store")
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


def one_edit(cache: Path, seed: int) -> eg.Graph:
    graph = eg.Graph(cache_dir=cache, width=256, height=256)
    red = graph.image(png_bytes((255, 0, 0)), name="red")
    graph.edit(f"Make {red} blue", name="blue", seed=seed)
    return graph


def test_a_run_waiting_for_a_database_another_process_holds_says_so(tmp_path: Path) -> None:
    """A second process holds the cache's write lock: after WAIT_NOTICE_SECONDS the run
    says, in one line, what it waits for; once the lock is free the result is cached."""
    cache = tmp_path / "cache"
    one_edit(cache, seed=1).run(provider=eg.providers.Preview())  # the database exists
    with database_held(cache) as holder:
        assert holder.stdin is not None
        with store_notices(on_notice=holder.stdin.close) as notices:
            run = one_edit(cache, seed=2).run(provider=eg.providers.Preview())
    assert not run.uncached and not run["blue"].cached
    assert len(notices.lines) == 1, notices.lines
    assert notices.lines[0].startswith("waiting for the cache (DiskStore(")
    assert "another process may hold its database" in notices.lines[0]
    assert one_edit(cache, seed=2).run(provider=eg.providers.Preview())["blue"].cached


@pytest.mark.slow
def test_a_database_held_for_good_costs_one_lock_timeout_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """A second process takes the write lock while an edit generates and never lets
    go: the run says so, gives up after one lock timeout (not one per write), and
    returns its result, uncached."""
    cache = tmp_path / "cache"
    one_edit(cache, seed=1).run(provider=eg.providers.Preview())
    with contextlib.ExitStack() as stack, store_notices() as notices:

        def lock_then_render(request: eg.EditRequest) -> bytes:
            stack.enter_context(database_held(cache))  # the lease is ours already
            return render(request)

        started = time.monotonic()
        run = one_edit(cache, seed=2).run(provider=CountingProvider(image_for=lock_then_render))
        waited = time.monotonic() - started
    assert len(notices.lines) == 1
    assert run["blue"].image.size == (16, 16)  # the result stands, from memory
    assert "another process held its database for 60 s" in run.uncached["blue"]
    assert waited < 60 + 30, waited  # one lock timeout, then a second or so per commit

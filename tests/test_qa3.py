"""Third QA pass: hostile tests of the last two sessions' fast paths (the store's own
upserts on diskcache's table, the warm writer, ``finish_from_cache``, the build memos,
the report's incremental scan, download turns). Real processes, files, loopback HTTP and
signals; nothing of editgraph's own is mocked; waits are on events, pipes and files,
each bounded."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import diskcache
import pytest
from cli_checks import invoke
from edit_providers import CountingProvider, png_bytes
from test_batch import COLOURS, image_folder, write_recipe
from test_batch_passes import two_passes

import editgraph as eg
from editgraph.errors import GraphError
from editgraph.nodes import EditNode
from editgraph.providers import Together
from editgraph.report import write_batch_report
from editgraph.store import DiskStore
from editgraph.stores import writer as writer_module
from editgraph.stores.writer import StoreWriter
from editgraph.testing import FakeTogether
from editgraph.testing._server import Request, Response

TIMEOUT = 30.0
TESTS = str(Path(__file__).parent)
KEY = "qa3-test-key"


def writer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name.startswith("editgraph writer")]


def assert_cache_consistent(folder: Path) -> None:
    """Plain diskcache opens the folder, reads every row, and its check() finds nothing
    (no warning either: every file has its row and every row its file, counts agree)."""
    cache = diskcache.Cache(str(folder))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = cache.check()
        assert found == [] and caught == [], [str(w.message) for w in caught]
        for name in list(cache.iterkeys()):
            cache.get(name)
        assert len(cache) == sum(1 for _ in cache.iterkeys())
    finally:
        cache.close()


# -- 1. the store's own rows on diskcache's table ------------------------------------

_WRITER_CHILD = """
import sys
sys.path.insert(0, sys.argv[3])
import editgraph as eg
from editgraph.providers import Together
from edit_providers import png_bytes

graph = eg.Graph(cache_dir=sys.argv[1], concurrency=8, width=512, height=512)
car = graph.image(png_bytes((200, 10, 10)), name="car")
for index in range(12):
    graph.edit(f"Paint {car} shade {index}", name=f"shade{index}", seed=index)
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
run = graph.run(provider=Together(api_key=sys.argv[4], base_url=sys.argv[2]))
assert not run.failures, run.failures
print(" ".join(sorted(result.key for result in run.values())), flush=True)
"""


@pytest.mark.slow
def test_two_processes_writing_and_leasing_the_same_keys_pay_once_and_stay_consistent(
    tmp_path: Path,
) -> None:
    """Two processes run the same 12 edits on one folder at the same moment: each edit
    is paid once, both get every result, plain diskcache's check() finds the folder
    consistent, and `cache verify` and `cache prune` agree."""
    cache = tmp_path / "cache"
    with FakeTogether(latency=0.05) as fake:
        children = [
            subprocess.Popen(
                [sys.executable, "-W", "error", "-c", _WRITER_CHILD, str(cache), fake.base_url,
                 TESTS, KEY],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for _ in range(2)
        ]
        try:
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            outputs = [child.communicate(timeout=TIMEOUT * 2) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
        keys = [out.split() for out, _ in outputs]
        assert keys[0] == keys[1] and len(keys[0]) == 12
        assert len(fake.billed) == 12  # never paid twice
    assert_cache_consistent(cache)
    result = invoke("cache", "verify", "--cache", str(cache))
    assert result.exit_code == 0 and "no damage" in result.output, result.output
    result = invoke("cache", "prune", "--older-than", "1w", "--cache", str(cache))
    assert result.exit_code == 0 and "nothing to remove" in result.output, result.output
    store = DiskStore(cache)
    try:
        assert all(store.get_verified_record(key) for key in keys[0])
    finally:
        store.close()
    assert_cache_consistent(cache)


_LEASE_RACE_CHILD = """
import sys
from editgraph.store import DiskStore
store = DiskStore(sys.argv[1])
keys = [f"key{index}" for index in range(300)]
if sys.argv[2] == "reversed":
    keys.reverse()
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
got = [key for key in keys if store.acquire_lease(key)]
print(" ".join(got), flush=True)
sys.stdin.readline()  # hold them until told
"""


@pytest.mark.slow
def test_two_processes_racing_for_the_same_leases_never_both_get_one(tmp_path: Path) -> None:
    """Two processes take 300 leases at the same moment (one in reverse order): every
    key is held by exactly one of them, and the folder is consistent for diskcache."""
    cache = tmp_path / "cache"
    DiskStore(cache).close()
    children = [
        subprocess.Popen([sys.executable, "-c", _LEASE_RACE_CHILD, str(cache), order],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for order in ("forward", "reversed")
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        held = []
        for child in children:
            assert child.stdout is not None
            held.append(set(child.stdout.readline().split()))
        assert not held[0] & held[1]
        assert held[0] | held[1] == {f"key{index}" for index in range(300)}
        for child in children:
            assert child.stdin is not None
            child.stdin.write("done\n")
            child.stdin.flush()
            child.wait(TIMEOUT)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.communicate()
    assert_cache_consistent(cache)


_LEASE_CHILD = """
import sys
from editgraph.store import DiskStore
store = DiskStore(sys.argv[1])
assert store.acquire_lease("the-key")
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_lease_whose_holder_was_sigkilled_is_taken_over_at_once(tmp_path: Path) -> None:
    """A lease held by a live process is refused; once that process is SIGKILLed (it
    never gives the lease back) the lease is taken at once, well within LEASE_SECONDS,
    and the folder stays consistent for plain diskcache."""
    cache = tmp_path / "cache"
    with subprocess.Popen([sys.executable, "-c", _LEASE_CHILD, str(cache)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        _hold_and_kill(cache, child)
    assert_cache_consistent(cache)


def _hold_and_kill(cache: Path, child: subprocess.Popen[str]) -> None:
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        store = DiskStore(cache)
        try:
            assert not store.acquire_lease("the-key")  # alive: refused
            child.send_signal(signal.SIGKILL)
            child.wait(TIMEOUT)
            started = time.monotonic()
            assert store.acquire_lease("the-key")
            assert time.monotonic() - started < 5
            other = DiskStore(cache)  # another holder in this process: refused
            assert not other.acquire_lease("the-key")
            store.release_lease("the-key")
            assert other.acquire_lease("the-key")
            other.release_lease("the-key")
        finally:
            store.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


_KILLED_RUN_CHILD = """
import sys
sys.path.insert(0, sys.argv[3])
import editgraph as eg
from editgraph.providers import Together
from edit_providers import png_bytes

graph = eg.Graph(cache_dir=sys.argv[1], concurrency=4, width=512, height=512)
car = graph.image(png_bytes((10, 200, 10)), name="car")
for index in range(4):
    graph.edit(f"Paint {car} tone {index}", name=f"tone{index}", seed=index)
graph.run(provider=Together(api_key=sys.argv[4], base_url=sys.argv[2]))
"""


def test_a_run_sigkilled_mid_generation_is_finished_by_the_next_process(tmp_path: Path) -> None:
    """A process SIGKILLed while its four edits are being generated (its leases held):
    the next run takes the dead holder's leases at once, finishes every edit, and the
    folder is consistent for diskcache and for `cache verify`."""
    cache = tmp_path / "cache"
    arrived = threading.Event()

    arrivals: list[str] = []

    class Slow(FakeTogether):
        async def _answer_generation(self, request: Request) -> Response:
            arrivals.append(request.path)  # on the fake's one loop thread
            if len(arrivals) >= 4:
                arrived.set()
            if not stalled_done.is_set():
                await asyncio.get_running_loop().run_in_executor(None, stalled_done.wait, TIMEOUT)
            return await super()._answer_generation(request)

    stalled_done = threading.Event()
    with Slow() as fake:
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_RUN_CHILD, str(cache), fake.base_url, TESTS, KEY],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert arrived.wait(TIMEOUT)
            child.send_signal(signal.SIGKILL)
            child.wait(TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            stalled_done.set()
        graph = eg.Graph(cache_dir=cache, concurrency=4, width=512, height=512)
        car = graph.image(png_bytes((10, 200, 10)), name="car")
        for index in range(4):
            graph.edit(f"Paint {car} tone {index}", name=f"tone{index}", seed=index)
        started = time.monotonic()
        run = graph.run(provider=Together(api_key=KEY, base_url=fake.base_url))
        assert time.monotonic() - started < 20
        assert not run.failures and len(run) == 4
        assert not any(result.cached for result in run.values())
    assert_cache_consistent(cache)
    result = invoke("cache", "verify", "--cache", str(cache))
    assert result.exit_code == 0 and "no damage" in result.output, result.output


def test_a_record_copied_under_another_keys_name_is_not_served(tmp_path: Path) -> None:
    """The record of edit A copied over edit B's (a restore gone wrong): B is a miss and
    is made again (never served A's image), `cache verify` names the damage, and
    `cache prune` removes B's wrong record, not A's."""
    cache = tmp_path / "cache"

    def build() -> eg.Graph:
        graph = eg.Graph(cache_dir=cache)
        car = graph.image(png_bytes((1, 2, 3)), name="car")
        graph.edit(f"Paint {car} green", name="green")
        graph.edit(f"Paint {car} blue", name="blue")
        return graph

    first = build().run(provider=CountingProvider())
    green, blue = first["green"], first["blue"]
    store = DiskStore(cache)
    try:
        store._cache.set(f"record:{blue.key}", store._cache.get(f"record:{green.key}"))
    finally:
        store.close()
    result = invoke("cache", "verify", "--cache", str(cache))
    assert result.exit_code == 1 and blue.key[:12] in result.output, result.output
    provider = CountingProvider()
    again = build().run(provider=provider)
    assert provider.nodes == ["blue"]
    assert again["blue"].output_hash == blue.output_hash
    assert again["green"].cached and again["green"].key == green.key
    store = DiskStore(cache)
    try:
        store._cache.set(f"record:{blue.key}", store._cache.get(f"record:{green.key}"))
    finally:
        store.close()
    invoke("cache", "prune", "--older-than", "1w", "--cache", str(cache))
    store = DiskStore(cache)
    try:
        assert store.get_verified_record(green.key) is not None  # A's own record stays
        assert store.get_verified_record(blue.key) is None
    finally:
        store.close()


# -- 2. the warm writer ----------------------------------------------------------------


def wide_graph(cache: Path, width: int, tag: str = "") -> eg.Graph:
    graph = eg.Graph(cache_dir=cache, concurrency=width)
    car = graph.image(png_bytes((250, 0, 0)), name="car")
    for index in range(width):
        graph.edit(f"Paint {car} shade {index}{tag}", name=f"shade{index}")
    return graph


def _child_run(cache: str, done: Any) -> None:
    run = wide_graph(Path(cache), 3, tag=" forked").run(provider=CountingProvider())
    done.put(sorted(result.key for result in run.values()))


class ForkingProvider(CountingProvider):
    """Forks a child (which runs its own graph on the same folder) in the middle of the
    parent's run, while the parent's writer is busy with this run."""

    def __init__(self, cache: Path) -> None:
        super().__init__()
        self.cache = cache
        self.child_keys: list[str] = []
        self.exitcode: int | None = None

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        if request.node == "shade3":
            context = multiprocessing.get_context("fork")
            done = context.Queue()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                child = context.Process(target=_child_run, args=(str(self.cache), done))
                child.start()
            loop = asyncio.get_running_loop()
            self.child_keys = await loop.run_in_executor(None, done.get, True, TIMEOUT)
            await loop.run_in_executor(None, child.join, TIMEOUT)
            self.exitcode = child.exitcode
            done.close()
            done.join_thread()
        return await super().generate(request)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_fork_in_the_middle_of_a_run_gives_the_child_its_own_writer(tmp_path: Path) -> None:
    """A child forked while the parent's run is writing (its writer thread busy, leases
    held) runs its own graph on the same folder; both keep every result."""
    cache = tmp_path / "cache"
    graph = eg.Graph(cache_dir=cache, concurrency=1)
    car = graph.image(png_bytes((250, 0, 0)), name="car")
    for index in range(6):
        graph.edit(f"Paint {car} shade {index}", name=f"shade{index}")
    provider = ForkingProvider(cache)
    run = graph.run(provider=provider)
    assert provider.exitcode == 0 and len(provider.child_keys) == 3
    assert not run.failures and len(run) == 6
    store = DiskStore(cache)
    try:
        for key in [*provider.child_keys, *(result.key for result in run.values())]:
            assert store.get_verified_record(key) is not None
    finally:
        store.close()
    assert_cache_consistent(cache)


def test_two_graphs_on_one_folder_running_at_once_in_one_process(tmp_path: Path) -> None:
    """Two graphs on one folder run at the same time from two threads (one writer for
    both): every result of both is kept, overlapping edits are paid once."""
    cache = tmp_path / "cache"
    StoreWriter.stop_idle()
    provider = CountingProvider()
    runs: list[eg.Run] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2, timeout=TIMEOUT)

    def work(tag: str) -> None:
        try:
            graph = wide_graph(cache, 8, tag)
            barrier.wait()
            runs.append(graph.run(provider=provider))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(tag,)) for tag in ("", " b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors and len(runs) == 2
    assert len(writer_threads()) == 1
    assert len(provider.calls) == 16
    store = DiskStore(cache)
    try:
        for run in runs:
            for result in run.values():
                assert store.get_verified_record(result.key) is not None
    finally:
        store.close()
    # A third graph sharing half its edits with the first: those are hits.
    calls = len(provider.calls)
    again = wide_graph(cache, 8).run(provider=provider)
    assert all(result.cached for result in again.values()) and len(provider.calls) == calls
    StoreWriter.stop_idle()
    assert not writer_threads()


def test_a_run_after_the_writer_went_idle_and_stopped_keeps_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer stops after IDLE_SECONDS; the next run on the same folder (same open
    database) starts a new one and keeps every result."""
    StoreWriter.stop_idle()
    monkeypatch.setattr(writer_module, "IDLE_SECONDS", 0.01)
    cache = tmp_path / "cache"
    wide_graph(cache, 3).run(provider=CountingProvider())
    for thread in writer_threads():
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert not writer_threads()
    provider = CountingProvider()
    run = wide_graph(cache, 3, " again").run(provider=provider)
    assert len(provider.calls) == 3 and not run.failures
    store = DiskStore(cache)
    try:
        assert all(store.get_verified_record(result.key) for result in run.values())
    finally:
        store.close()
    rerun = wide_graph(cache, 3, " again").run(provider=provider)
    assert all(result.cached for result in rerun.values())


_EXIT_CHILD = """
import sys, threading
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from edit_providers import CountingProvider
from test_qa3 import wide_graph

keys = []
def work():
    run = wide_graph(Path(sys.argv[1]), 5).run(provider=CountingProvider())
    keys.extend(result.key for result in run.values())
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(" ".join(sorted(keys)), flush=True)
sys.exit(0)
"""


def test_a_process_exiting_with_a_warm_writer_loses_nothing_and_does_not_hang(
    tmp_path: Path,
) -> None:
    """A script whose run (in a thread of its own) left the writer warm exits at once,
    quietly, and every record it reported is in the cache for another process."""
    cache = tmp_path / "cache"
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", _EXIT_CHILD, str(cache), TESTS],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert completed.returncode == 0 and completed.stderr == "", completed.stderr
    keys = completed.stdout.split()
    assert len(keys) == 5
    store = DiskStore(cache)
    try:
        assert all(store.get_verified_record(key) for key in keys)
    finally:
        store.close()
    assert_cache_consistent(cache)


# -- 3. finish_from_cache ---------------------------------------------------------------



def again(tmp_path: Path, recipe: Path, inputs: Path, provider: CountingProvider) -> Any:
    return eg.batch(recipe, inputs, out=tmp_path / "out", provider=provider,
                    cache=tmp_path / "cache")


def manifest(out: Path, item: str) -> dict[str, Any]:
    return json.loads((out / item / "manifest.json").read_text())  # type: ignore[no-any-return]


def test_a_record_made_unreadable_between_passes_is_regenerated(tmp_path: Path) -> None:
    """One item's record replaced by text that is not a record: the cached pass makes
    that edit again (not served), the others stay hits."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    cutout = manifest(out, "green")["edits"][0]
    store = DiskStore(tmp_path / "cache")
    try:
        store._cache.set(f"record:{cutout['key']}", '{"schema_version": 2, "node": 7}')
    finally:
        store.close()
    calls = len(provider.calls)
    result = again(tmp_path, recipe, inputs, provider)
    assert result.summary.done == 3 and result.summary.cached == 2
    assert [request.node for request in provider.calls[calls:]] == ["cutout"]
    assert manifest(out, "green")["edits"][0]["status"] == "done"


def test_a_record_of_another_item_copied_over_is_regenerated(tmp_path: Path) -> None:
    """Item green's cut-out record replaced by item red's (valid, its image present):
    the cached pass makes green's cut-out again instead of serving red's image."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    red = manifest(out, "red")["edits"][0]
    green = manifest(out, "green")["edits"][0]
    store = DiskStore(tmp_path / "cache")
    try:
        store._cache.set(f"record:{green['key']}", store._cache.get(f"record:{red['key']}"))
    finally:
        store.close()
    calls = len(provider.calls)
    result = again(tmp_path, recipe, inputs, provider)
    assert [request.node for request in provider.calls[calls:]] == ["cutout"]
    assert result.summary.done == 3
    kept = manifest(out, "green")["edits"][0]
    assert kept["key"] == green["key"] and kept["output_hash"] == green["output_hash"]


def test_an_output_image_removed_between_passes_is_regenerated(tmp_path: Path) -> None:
    """One item's output image gone from the cache (its record still there)."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    lifestyle = manifest(out, "blue")["edits"][1]
    store = DiskStore(tmp_path / "cache")
    try:
        assert store._cache.delete(f"blob:{lifestyle['output_hash']}")
    finally:
        store.close()
    calls = len(provider.calls)
    result = again(tmp_path, recipe, inputs, provider)
    assert [request.node for request in provider.calls[calls:]] == [lifestyle["node"]]
    assert result.summary.done == 3 and result.summary.cached == 2


def test_a_source_changed_in_place_with_the_same_mtime_and_size_is_seen(tmp_path: Path) -> None:
    """An input rewritten in place with other pixels, the same size and the same mtime:
    the item's edits run again for the new picture (no stale hit, no stale folder)."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    path = inputs / "red.png"
    before = path.stat()
    old = path.read_bytes()
    new = png_bytes((201, 30, 30), (64, 48))
    assert len(new) == len(old) and new != old
    with open(path, "r+b") as handle:
        handle.write(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    calls = len(provider.calls)
    old_keys = [entry["key"] for entry in manifest(out, "red")["edits"]]
    result = again(tmp_path, recipe, inputs, provider)
    assert sorted(request.node for request in provider.calls[calls:]) == ["cutout", "lifestyle"]
    assert result.summary.cached == 2
    new_keys = [entry["key"] for entry in manifest(out, "red")["edits"]]
    assert set(new_keys).isdisjoint(old_keys)


def test_a_history_row_deleted_between_passes_is_written_again(tmp_path: Path) -> None:
    """plan's history of one item's edit deleted by another process: the cached pass
    pays nothing and writes the history again (plan then knows the edit)."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    graph = f"{recipe.resolve()}#blue"
    name = "cutout"
    script = (
        "import sys\nfrom editgraph.store import DiskStore, _history_name\n"
        "store = DiskStore(sys.argv[1])\n"
        "assert store._cache.delete(_history_name(sys.argv[2], sys.argv[3]))\n"
        "store.close()\n"
    )
    # The first cached pass fills the history memo of this process's open store.
    calls = len(provider.calls)
    again(tmp_path, recipe, inputs, provider)
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache"), graph, name],
                   check=True, timeout=TIMEOUT)
    result = again(tmp_path, recipe, inputs, provider)
    assert result.summary.cached == 3 and len(provider.calls) == calls
    store = DiskStore(tmp_path / "cache")
    try:
        kept = store.get_history(name, graph)
        assert kept is not None and kept.key == manifest(out, "blue")["edits"][0]["key"]
    finally:
        store.close()


# -- 4. the memos of graph and prompts -----------------------------------------------


def test_parameter_memo_tells_1_from_1_0_from_true() -> None:
    """seed=1 then seed=True (refused: strict), width 512 then 512.0 (refused), guidance
    2 (int, taken as 2.0) then True (refused): a success never vouches for a value that
    only compares equal."""
    graph = eg.Graph(model="flux.2-flex")
    car = graph.image(png_bytes((1, 1, 1)), name="car")
    graph.edit(f"Paint {car}", name="a", seed=1, width=512, guidance=2)
    with pytest.raises(GraphError, match="seed"):
        graph.edit(f"Paint {car}", name="b", seed=True)
    with pytest.raises(GraphError, match="width"):
        graph.edit(f"Paint {car}", name="c", width=512.0)
    with pytest.raises(GraphError, match="guidance"):
        graph.edit(f"Paint {car}", name="d", guidance=True)
    graph.edit(f"Paint {car}", name="e", guidance=2.0)
    # and the other way round: a refusal is not remembered
    with pytest.raises(GraphError, match="seed"):
        graph.edit(f"Paint {car}", name="f", seed=-1)
    with pytest.raises(GraphError, match="seed"):
        graph.edit(f"Paint {car}", name="g", seed=-1)


def test_defaults_memo_tells_types_apart() -> None:
    """Graph defaults width=1024 accepted, then width=1024.0 and True refused."""
    eg.Graph(width=1024, seed=0)
    with pytest.raises(GraphError, match="width"):
        eg.Graph(width=1024.0, seed=0)
    with pytest.raises(GraphError, match="seed"):
        eg.Graph(width=1024, seed=False)


def test_a_prompt_rewritten_once_is_refused_when_its_names_resolve_otherwise() -> None:
    """The same text and node name in two graphs: in the first '@car' names a source;
    in the second there is no 'car' (refused), then 'car' is the edit itself (refused)."""
    first = eg.Graph()
    first.image(png_bytes((9, 9, 9)), name="car")
    first.edit("Paint @car red", name="red")
    second = eg.Graph()
    second.image(png_bytes((9, 9, 9)), name="truck")
    with pytest.raises(GraphError, match="car"):
        second.edit("Paint @car red", name="red")
    third = eg.Graph()
    third.image(png_bytes((9, 9, 9)), name="boat")
    with pytest.raises(GraphError):
        third.edit("Paint @car red", name="car")
    # refs that disagree with the remembered mentions
    fourth = eg.Graph()
    fourth.image(png_bytes((9, 9, 9)), name="car")
    fourth.image(png_bytes((8, 8, 8)), name="bike")
    with pytest.raises(GraphError, match="refs"):
        fourth.edit("Paint @car red", name="red", refs=["bike"])


def test_a_prompt_memo_follows_deduplicated_names() -> None:
    """'@a and @b' where a and b are the same bytes in one graph (one image) and
    different in the next: the second graph's prompt numbers two images, not one."""
    one = eg.Graph()
    one.image(png_bytes((5, 5, 5)), name="a")
    one.image(png_bytes((5, 5, 5)), name="b")
    one.edit("Put @a beside @b", name="pair")
    two = eg.Graph()
    two.image(png_bytes((5, 5, 5)), name="a")
    two.image(png_bytes((6, 6, 6)), name="b")
    two.edit("Put @a beside @b", name="pair")
    assert len(one._edits["pair"].references) == 1
    assert len(two._edits["pair"].references) == 2
    pair = two._edits["pair"]
    assert isinstance(pair, EditNode) and "image 2" in pair.prompt, pair


# -- 5. the report's incremental scan -----------------------------------------------


class NoteMemo:
    """A ScanMemo in a dict (the protocol's other implementation is the cache's note)."""

    def __init__(self) -> None:
        self.text: str | None = None

    def get(self) -> str | None:
        return self.text

    def put(self, text: str) -> None:
        self.text = text


def report_rows(folder: Path, memo: NoteMemo | None) -> str:
    return write_batch_report(folder, memo=memo).read_text()


def fake_journal(folder: Path, lines: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "batch.jsonl", "w") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")


def line(item: str, status: str, cost: float = 0.01) -> dict[str, Any]:
    return {"id": item, "status": status, "cost": cost, "inputs": {}, "outputs": {}}


def without_time(page: str) -> str:
    import re

    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "", page)


@pytest.mark.parametrize("change", ["truncated", "same_length", "appended"])
def test_the_report_scan_after_the_journal_changed_matches_a_full_scan(
    tmp_path: Path, change: str
) -> None:
    """After a scan kept its place: the journal truncated, rewritten to the same length
    with other statuses, or appended: the page equals a full scan's."""
    folder = tmp_path / "out"
    fake_journal(folder, [line("a", "done"), line("b", "failed"), line("c", "done")])
    memo = NoteMemo()
    report_rows(folder, memo)
    assert memo.text is not None
    journal_path = folder / "batch.jsonl"
    if change == "truncated":
        fake_journal(folder, [line("a", "done")])
    elif change == "same_length":
        size = journal_path.stat().st_size
        lines = [json.dumps(entry) for entry in
                 (line("a", "done"), line("b", "done"), line("c", "done"))]
        lines[1] = lines[1].replace('"done"', '"done"  ')  # 'failed' is two longer
        journal_path.write_text("\n".join(lines) + "\n")
        assert journal_path.stat().st_size == size
    else:
        with open(journal_path, "a") as handle:
            handle.write(json.dumps(line("b", "done")) + "\n")
    incremental = report_rows(folder, memo)
    full = report_rows(folder, None)
    assert without_time(incremental) == without_time(full)


def test_the_report_scan_with_another_process_appending_mid_scan(tmp_path: Path) -> None:
    """Another process appends lines (a partial last line included) while reports are
    written with a memo: every report equals a full scan of the journal as it ended up
    once the writer is done, and the memo never keeps a place inside a line."""
    folder = tmp_path / "out"
    fake_journal(folder, [line(f"i{n}", "done") for n in range(200)])
    script = (
        "import json, sys, os\n"
        "path = sys.argv[1]\n"
        "with open(path, 'ab', buffering=0) as handle:\n"
        "    for n in range(3000):\n"
        "        text = json.dumps({'id': f'i{n % 400}', 'status': ['done', 'failed'][n % 2],"
        " 'cost': 0.5, 'inputs': {}, 'outputs': {}}) + '\\n'\n"
        "        data = text.encode()\n"
        "        handle.write(data[:17])\n"
        "        handle.write(data[17:])\n"
    )
    memo = NoteMemo()
    child = subprocess.Popen([sys.executable, "-c", script, str(folder / "batch.jsonl")])
    try:
        while child.poll() is None:
            report_rows(folder, memo)
            if memo.text is not None:
                offset = json.loads(memo.text)["offset"]
                with open(folder / "batch.jsonl", "rb") as handle:
                    handle.seek(offset - 1)
                    assert handle.read(1) == b"\n"
    finally:
        child.wait(TIMEOUT)
    assert child.returncode == 0
    assert without_time(report_rows(folder, memo)) == without_time(report_rows(folder, None))


# -- 6. download turns -----------------------------------------------------------------


class StallingFake(FakeTogether):
    """Result downloads of the first ``stalled`` files hang until ``release`` is set."""

    def __init__(self, stalled: int) -> None:
        super().__init__(api_key=KEY)
        self.stalled = stalled
        self.release = threading.Event()
        self.gets = 0
        self.served_while_stalled = 0
        self.lock = threading.Lock()

    async def _handle_file(self, request: Request) -> Response:
        with self.lock:
            self.gets += 1
            mine = self.gets
        if mine <= self.stalled:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.release.wait, TIMEOUT)
        elif not self.release.is_set():
            with self.lock:
                self.served_while_stalled += 1
        return await super()._handle_file(request)


def test_stalled_downloads_holding_every_turn_do_not_stall_the_others(tmp_path: Path) -> None:
    """Four result downloads hang (holding all DOWNLOAD_TURNS); the other edits'
    downloads go after TURN_PATIENCE and their results are kept while the four hang."""
    from editgraph.providers import _http

    assert _http.DOWNLOAD_TURNS == 4
    fake = StallingFake(stalled=_http.DOWNLOAD_TURNS)
    cache = tmp_path / "cache"
    with fake:
        graph = eg.Graph(cache_dir=cache, concurrency=8)
        car = graph.image(png_bytes((3, 3, 3)), name="car")
        for index in range(8):
            graph.edit(f"Paint {car} colour {index}", name=f"c{index}", seed=index)

        def watch() -> None:
            # Release the hanging four once the other four are kept (checked from here,
            # through another connection), or after TIMEOUT (then the test fails).
            store = DiskStore(cache)
            deadline = time.monotonic() + TIMEOUT
            try:
                while time.monotonic() < deadline:
                    kept = sum(1 for name in store._iterkeys() if name.startswith("record:"))
                    if kept >= 4:
                        break
                    time.sleep(0.01)  # polling a file another process writes, bounded
            finally:
                store.close()
                fake.release.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        run = graph.run(provider=Together(api_key=KEY, base_url=fake.base_url))
        elapsed = time.monotonic() - started
        watcher.join(TIMEOUT)
    assert not run.failures and len(run) == 8
    assert fake.served_while_stalled == 4
    assert elapsed < TIMEOUT / 2


_SIGINT_CHILD = """
import sys
sys.path.insert(0, sys.argv[3])
import editgraph as eg
from editgraph.providers import Together
from edit_providers import png_bytes

graph = eg.Graph(cache_dir=sys.argv[1], concurrency=8)
car = graph.image(png_bytes((4, 4, 4)), name="car")
for index in range(8):
    graph.edit(f"Paint {car} hue {index}", name=f"h{index}", seed=index)
try:
    graph.run(provider=Together(api_key=sys.argv[4], base_url=sys.argv[2]))
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise SystemExit(130)
print("finished", flush=True)
"""


def test_sigint_during_downloads_loses_nothing_finished(tmp_path: Path) -> None:
    """A real SIGINT to a child while four downloads hang and four have finished: the
    child stops, and each of the four finished results is in the cache."""
    fake = StallingFake(stalled=4)
    cache = tmp_path / "cache"
    with fake, subprocess.Popen(
            [sys.executable, "-c", _SIGINT_CHILD, str(cache), fake.base_url, TESTS, KEY],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        try:
            deadline = time.monotonic() + TIMEOUT
            kept = 0
            while time.monotonic() < deadline and kept < 4 and child.poll() is None:
                if (cache / "cache.db").exists():
                    store = DiskStore(cache)
                    try:
                        kept = sum(1 for name in store._iterkeys() if name.startswith("record:"))
                    finally:
                        store.close()
                time.sleep(0.01)  # polling a file another process writes, bounded
            assert kept == 4, child.poll()
            said: list[str] = []
            draining = threading.Event()

            def read_stderr() -> None:
                assert child.stderr is not None
                for text in child.stderr:
                    said.append(text)
                    if "Ctrl-C again" in text:
                        draining.set()

            reader = threading.Thread(target=read_stderr)
            reader.start()
            child.send_signal(signal.SIGINT)  # first Ctrl-C: drain (the four hang on)
            assert draining.wait(TIMEOUT), said
            child.send_signal(signal.SIGINT)  # second Ctrl-C: abandon the hanging four
            child.wait(TIMEOUT)
            reader.join(TIMEOUT)
            out, err = child.stdout.read() if child.stdout else "", "".join(said)
        finally:
            fake.release.set()
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode != 0, (out, err)
    store = DiskStore(cache)
    try:
        records = [name for name in store._iterkeys() if name.startswith("record:")]
        assert len(records) == 4
        assert all(store.get_verified_record(name[len("record:"):]) for name in records)
    finally:
        store.close()
    assert_cache_consistent(cache)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fdinfo").is_dir(), reason="needs /proc (Linux)")
def test_a_line_completed_while_the_report_reads_it_is_not_skipped_for_good(
    tmp_path: Path,
) -> None:
    """The journal ends in a long line still being written; its rest is appended the
    moment the report's scan has read to the end of the file (seen from the scan's own
    file position): the next report carrying on from its memo counts that line, as a
    full scan does (the scan must stop at a line without its end, not read the rest as
    a line of its own and keep its place after it)."""
    folder = tmp_path / "out"
    fake_journal(folder, [line("a", "done"), line("b", "failed")])
    path = folder / "batch.jsonl"
    head = '{"id": "late", "status": "done", "cost": 0.25, "inputs": {"pad": "'
    with open(path, "a") as handle:
        handle.write(head + "x" * (32 << 20))
    size = path.stat().st_size
    memo = NoteMemo()
    appended = threading.Event()

    def complete_the_line() -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not appended.is_set():
            for fd in os.listdir("/proc/self/fd"):
                try:
                    if os.readlink(f"/proc/self/fd/{fd}") != str(path):
                        continue
                    info = Path(f"/proc/self/fdinfo/{fd}").read_text()
                except OSError:
                    continue
                flags = int(info.split("flags:")[1].split()[0], 8)
                position = int(info.split("pos:")[1].split()[0])
                if flags & os.O_APPEND == 0 and position >= size:
                    with open(path, "a") as handle:
                        handle.write('"}, "outputs": {}}\n')
                    appended.set()
                    return

    watcher = threading.Thread(target=complete_the_line)
    watcher.start()
    report_rows(folder, memo)
    watcher.join(TIMEOUT)
    assert appended.is_set()
    with open(path, "a") as handle:
        handle.write(json.dumps(line("c", "done")) + "\n")
    assert without_time(report_rows(folder, memo)) == without_time(report_rows(folder, None))


def test_an_output_replaced_by_an_older_file_is_written_again(tmp_path: Path) -> None:
    """An item's output replaced by another picture carrying an older mtime (what
    `cp -p` of a backup or another item's file does): the cached pass pays nothing and
    puts the right picture back, rather than keeping the folder as 'current'."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    red = out / "red" / manifest(out, "red")["edits"][0]["file"]
    green = out / "green" / manifest(out, "green")["edits"][0]["file"]
    right = red.read_bytes()
    assert green.read_bytes() != right
    red.write_bytes(green.read_bytes())
    old = (out / "red" / "manifest.json").stat().st_mtime_ns - 10**9
    os.utime(red, ns=(old, old))
    calls = len(provider.calls)
    result = again(tmp_path, recipe, inputs, provider)
    assert result.summary.cached == 3 and len(provider.calls) == calls
    assert red.read_bytes() == right


def noisy_png(request: eg.EditRequest) -> bytes:
    """A PNG of about 100 KB (noise does not compress): kept in a file by the cache."""
    import io
    import random

    from PIL import Image

    generator = random.Random(f"{request.prompt}|{request.seed}")
    image = Image.frombytes("RGB", (200, 170), generator.randbytes(200 * 170 * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_output_file_deleted_from_the_cache_folder_is_regenerated(tmp_path: Path) -> None:
    """A large result's file removed from the cache folder behind its row: the cached
    pass makes that edit again, and plain diskcache finds the folder consistent."""
    inputs = image_folder(tmp_path / "in", COLOURS)
    recipe = write_recipe(tmp_path)
    provider = CountingProvider(image_for=noisy_png)
    options = {"out": tmp_path / "out", "provider": provider, "cache": tmp_path / "cache"}
    eg.batch(recipe, inputs, **options)
    cutout = manifest(tmp_path / "out", "blue")["edits"][0]
    cache = diskcache.Cache(str(tmp_path / "cache"))
    try:
        (filename,) = cache._sql("SELECT filename FROM Cache WHERE key = ?",
                                 (f"blob:{cutout['output_hash']}",)).fetchone()
    finally:
        cache.close()
    assert filename is not None
    os.remove(tmp_path / "cache" / filename)
    calls = len(provider.calls)
    result = eg.batch(recipe, inputs, **options)
    assert [request.node for request in provider.calls[calls:]] == ["cutout"]
    assert result.summary.done == 3 and result.summary.cached == 2
    assert_cache_consistent(tmp_path / "cache")
    assert eg.batch(recipe, inputs, **options).summary.cached == 3


def test_two_graphs_on_one_folder_in_one_event_loop_pay_each_edit_once(tmp_path: Path) -> None:
    """Two graphs on one folder (two stores, one open database, one writer) run in one
    event loop at once, with the same six edits: each edit is generated once, and both
    runs hold every result (the second served what the first made, or the other way)."""
    cache = tmp_path / "cache"
    gates = {f"shade{index}": asyncio.Event() for index in range(6)}

    class Gated(CountingProvider):
        async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
            if len(self.calls) >= 5:
                for gate in gates.values():
                    gate.set()
            result = await super().generate(request)
            await asyncio.wait_for(gates[request.node].wait(), TIMEOUT)
            return result

    provider = Gated()

    async def both() -> list[eg.Run]:
        first, second = wide_graph(cache, 6), wide_graph(cache, 6)
        return list(await asyncio.gather(first.arun(provider=provider),
                                         second.arun(provider=provider)))

    runs = asyncio.run(both())
    assert sorted(provider.nodes) == sorted(gates)
    assert [len(run) for run in runs] == [6, 6]
    assert {result.key for result in runs[0].values()} == {
        result.key for result in runs[1].values()}

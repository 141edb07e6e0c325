"""Reliability promises: faults survived, crashes survived, one payment across processes,
bad input refused before spend, and no secret leaked (docs/reliability.md lists them).

Everything talks to FakeTogether over real loopback HTTP through eg.providers.Together.
Child processes are ``tests/reliability_child.py``; the tests wait on what the child
prints and on the fake's ledgers (``requests``, ``billed``), each wait with a deadline.
"""

from __future__ import annotations

import collections
import http.server
import importlib.util
import io
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import diskcache
import pytest
import stamina
from click.testing import CliRunner
from PIL import Image
from reliability_child import CRASH_SIZE, mixed_graph, noise_graph, small_graph, source_png

import editgraph as eg
from editgraph.cli import main
from editgraph.keys import content_hash
from editgraph.models import MAX_PROMPT_CHARS
from editgraph.provenance import remove_provenance
from editgraph.store import DiskStore
from editgraph.testing import FakeTogether

CHILD = Path(__file__).with_name("reliability_child.py")
PLANTED_KEY = "tgp_v1_PLANTEDSECRET_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
TEST_KEY = "tgp_v1_reliability_test_key_0123456789abcdef"
#: The fault seed of the 100-edit run (chosen to include edits that fail for good).
FAULT_SEED = 3
FAULT_KINDS = ("500", "503", "429", "drop_before", "drop_after")
#: Deadline for every wait on a condition; a broken engine fails instead of hanging.
DEADLINE = 60.0


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """stamina waits nothing between tries (also for Retry-After); attempt caps hold."""
    with stamina.set_testing(True, attempts=50, cap=True):
        yield


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests go straight to the test servers."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.lower(), raising=False)


def together(fake: FakeTogether, key: str = TEST_KEY, **options: Any) -> eg.providers.Together:
    """eg.providers.Together pointed at ``fake``."""
    return eg.providers.Together(api_key=key, base_url=fake.base_url, **options)


def run_collecting(graph: eg.Graph, **options: Any) -> tuple[eg.Run, dict[str, BaseException]]:
    """Run ``graph``; the run and its failures whether or not it raised RunError."""
    try:
        return graph.run(progress=False, **options), {}
    except eg.RunError as error:
        assert isinstance(error.run, eg.Run)
        return error.run, error.failures


def wait_until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``deadline`` s."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:g} s waiting for {what}")
        time.sleep(0.002)


def prompt_owners(graph: eg.Graph) -> dict[str, str]:
    """Rewritten prompt -> edit name (every prompt of the test graphs is unique)."""
    owners = {node.prompt: name for name, node in graph.edits.items()}
    assert len(owners) == len(graph.edits)
    return owners


def billed_nodes(graph: eg.Graph, billed: list[dict[str, Any]]) -> collections.Counter[str]:
    """How many generations the fake billed for each edit of ``graph``."""
    owners = prompt_owners(graph)
    counts: collections.Counter[str] = collections.Counter()
    for entry in billed:
        assert entry["prompt"] in owners, f"billed for a prompt no edit sends: {entry['prompt']!r}"
        counts[owners[entry["prompt"]]] += 1
    return counts


def cache_rows(cache: Path) -> list[tuple[str, int, int, str | None, Any]]:
    """Every row of the diskcache Cache table: (key, raw, mode, filename, value)."""
    connection = sqlite3.connect(cache / "cache.db")
    try:
        return connection.execute("SELECT key, raw, mode, filename, value FROM Cache").fetchall()
    finally:
        connection.close()


def assert_cache_holds_only_bytes_and_json(
    cache: Path, *, after_kill: bool = False
) -> collections.Counter[str]:
    """Every row and file of ``cache`` is raw bytes (an image, by its hash) or JSON text.

    diskcache writes a large value's file before the row that owns it, so a process
    killed in between may leave a value file no row points to (never read, only space):
    allowed ``after_kill``, as long as it is such a file. Returns rows per kind.
    """
    kinds: collections.Counter[str] = collections.Counter()
    files = set()
    for key, raw, mode, filename, value in cache_rows(cache):
        assert raw == 1 and isinstance(key, str), f"pickled key {key!r}"
        assert mode != diskcache.core.MODE_PICKLE, f"{key}: pickled value"
        kinds[key.split(":")[0]] += 1
        if filename is not None:
            files.add(filename)
        if mode == diskcache.core.MODE_TEXT:
            assert filename is not None, key
            json.loads((cache / filename).read_text(encoding="utf-8"))
        elif isinstance(value, str):
            json.loads(value)
        elif key.startswith("blob:"):
            data = value if value is not None else (cache / str(filename)).read_bytes()
            assert content_hash(bytes(data)) == key[len("blob:"):], key
            Image.open(io.BytesIO(data)).load()
        else:
            pytest.fail(f"{key}: neither JSON text nor an image blob (mode {mode})")
    database = {"cache.db", "cache.db-wal", "cache.db-shm"}
    on_disk = {
        str(path.relative_to(cache)) for path in cache.rglob("*")
        if path.is_file() and path.name not in database
    }
    orphans = on_disk - files
    if after_kill:
        assert all(name.endswith(".val") for name in orphans), sorted(orphans)
    else:
        assert not orphans, f"files no row owns: {sorted(orphans)}"
    return kinds


def assert_cache_opens_cleanly(cache: Path) -> int:
    """The cache opens, counts itself, and every record's image is present; returns records."""
    store = DiskStore(cache)
    try:
        stats = store.stats()
        readable = list(store.records())
        assert len(readable) == stats.records, "a record whose image is missing"
        for record in readable:
            assert content_hash(store.get_blob(record.output_hash)) == record.output_hash
        return stats.records
    finally:
        store.close()


# ============================================================ 1. faults survived


def fault_counts(seed: int, rate: float, generations: int) -> collections.Counter[str]:
    """The faults FakeTogether injected into its first ``generations`` valid requests.

    It draws twice per generation from ``random.Random(seed)``; which request got which
    draw depends on arrival order, but the multiset of the first N draws does not.
    """
    rng = random.Random(seed)
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(generations):
        roll = rng.random()
        kind = FAULT_KINDS[rng.randrange(len(FAULT_KINDS))]
        if roll < rate:
            counts[kind] += 1
    return counts


def test_hundred_edits_survive_twenty_percent_faults_and_pay_twice_only_when_reported(
    tmp_path: Path,
) -> None:
    """100 edits at fault_rate 0.2 give a fault-free run's bytes; only reported edits pay twice."""
    graph = mixed_graph(100, cache_dir=tmp_path / "faulty")
    assert len(graph.edits) == 100
    with FakeTogether(fault_rate=0.2, fault_seed=FAULT_SEED) as fake:
        provider = together(fake)
        run, failures = run_collecting(graph, provider=provider)
        requests, billed = fake.requests, fake.billed
    with FakeTogether() as clean:
        reference, reference_failures = run_collecting(
            mixed_graph(100, cache_dir=tmp_path / "clean"), provider=together(clean)
        )
        assert len(clean.billed) == 100
    assert not reference_failures

    faults = fault_counts(FAULT_SEED, 0.2, len(requests))
    # The ledger agrees with the faults: every request was billed except refused ones.
    refused = sum(faults[kind] for kind in ("500", "503", "429", "drop_before"))
    assert len(billed) == len(requests) - refused

    # Every finished edit has the fault-free bytes.
    for name, result in run.items():
        assert result.output_hash == reference[name].output_hash, name
    assert set(run) | set(failures) == set(graph.edits)

    # Failures: only an edit whose unknown outcomes ran out, and what depends on it.
    limit = provider.unknown_outcome_retries + 1
    for name, error in failures.items():
        if isinstance(error, eg.InputFailedError):
            root = error.failed_input
            while isinstance(failures[root], eg.InputFailedError):
                root = failures[root].failed_input  # type: ignore[attr-defined]
            assert isinstance(failures[root], eg.ProviderError)
            continue
        assert isinstance(error, eg.ProviderError), (name, error)
        assert error.possibly_billed, (name, error)
        assert "may have been billed" in str(error) and f"{limit} unknown outcome(s)" in str(error)

    # Nothing paid twice unless the manifest says it may have been.
    counts = billed_nodes(graph, billed)
    reported = set(run.manifest.possibly_billed_twice)
    for name in run:
        assert counts[name] >= 1, name
        if counts[name] > 1:
            assert name in reported, f"{name} billed {counts[name]} times, not reported"
    for name, error in failures.items():
        if isinstance(error, eg.InputFailedError):
            assert counts[name] == 0, f"{name} was sent although its input failed"
        elif counts[name]:
            assert name in reported
    extra = len(billed) - len(run)
    assert extra == sum(n - 1 for name, n in counts.items() if name in run) + sum(
        n for name, n in counts.items() if name in failures
    )
    print(
        f"\nfaults: {sum(faults.values())} injected in {len(requests)} requests "
        f"({dict(sorted(faults.items()))}); {len(run)} edits finished, "
        f"{sum(isinstance(e, eg.ProviderError) for e in failures.values())} failed possibly "
        f"billed, {sum(isinstance(e, eg.InputFailedError) for e in failures.values())} skipped "
        "(input failed); "
        f"billed {len(billed)} for {len(run)} results: {extra} extra, "
        f"{len(reported)} edits reported possibly billed twice"
    )


def test_a_rerun_after_faults_finishes_from_the_cache_without_paying_again(tmp_path: Path) -> None:
    """After a faulty run, a clean rerun generates only the edits that did not finish."""
    graph = mixed_graph(40, seed=11, cache_dir=tmp_path / "cache")
    with FakeTogether(fault_rate=0.3, fault_seed=5) as fake:
        first, failures = run_collecting(graph, provider=together(fake))
    with FakeTogether() as clean:
        second = graph.run(provider=together(clean), progress=False)
        regenerated = set(billed_nodes(graph, clean.billed))
    assert regenerated == set(failures)
    assert all(second[name].cached for name in first)


# ============================================================ child processes


class Child:
    """A reliability_child.py process whose stdout lines are collected as they arrive."""

    def __init__(self, *args: str, env: dict[str, str], prefix: tuple[str, ...] = ()) -> None:
        self.lines: list[str] = []
        self.stderr = ""
        self._changed = threading.Condition()
        # A file, not a pipe: it can never fill up and block the child. Closed in finish().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [*prefix, sys.executable, str(CHILD), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<eof>")
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[list[str]], bool], what: str) -> None:
        """Block until ``condition(lines)`` holds (or the child ended); fail at the deadline."""
        end = time.monotonic() + DEADLINE
        with self._changed:
            while not condition(self.lines):
                if "<eof>" in self.lines:
                    pytest.fail(f"child ended before {what}: {self.lines[-5:]}")
                if not self._changed.wait(timeout=max(0.0, end - time.monotonic())):
                    pytest.fail(f"timed out waiting for {what}")

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the child and collect everything it printed."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.finish()

    def finish(self) -> int:
        """Wait for the child to end; its exit code."""
        code = self.process.wait(timeout=DEADLINE)
        self._reader.join(timeout=DEADLINE)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._stderr.seek(0)
        self.stderr = self._stderr.read().decode(errors="replace")
        self._stderr.close()
        return code

    def words(self, first: str) -> list[list[str]]:
        """The lines that start with ``first``, split into words."""
        return [line.split() for line in list(self.lines) if line.split()[:1] == [first]]


def child_env(fake: FakeTogether, key: str = TEST_KEY) -> dict[str, str]:
    """The environment of a child that runs with Together against ``fake``."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(TOGETHER_API_KEY=key, TOGETHER_BASE_URL=fake.base_url, PYTHONUNBUFFERED="1")
    env.pop("EDITGRAPH_CACHE_DIR", None)
    return env


def billed_at_least(fake: FakeTogether, count: int, child: Child) -> bool:
    """The fake has billed ``count`` generations (or the child has ended)."""
    return len(fake.billed) >= count or child.process.poll() is not None


def finished_at_least(count: int, lines: list[str]) -> bool:
    """The child has reported ``count`` finished edits."""
    return sum(line.startswith("progress") for line in lines) >= count


def has_entries(folder: Path) -> bool:
    """``folder`` holds at least one entry."""
    return any(folder.iterdir())


def plan_of(graph: eg.Graph, cache: Path) -> eg.Plan:
    """The plan of ``graph`` against ``cache`` for the Together provider (no call made)."""
    return graph.plan(provider=eg.providers.Together(api_key=TEST_KEY), cache_dir=cache)


# ============================================================ 2. crashes survived


@pytest.mark.slow
def test_sigkill_at_twenty_moments_loses_no_finished_edit(tmp_path: Path) -> None:
    """SIGKILL x20: the cache opens, finished edits stay cached, reruns pay only for the rest."""
    rng = random.Random(20240607)
    cache = tmp_path / "cache"
    graph = mixed_graph(60, size=CRASH_SIZE)
    in_flight_lost = 0
    with FakeTogether(latency=0.05) as fake:
        env = child_env(fake)
        for _ in range(20):
            to_run = set(plan_of(graph, cache).to_run)
            cached_before = set(graph.edits) - to_run
            start = len(fake.billed)
            child = Child("run", "mixed", str(cache), env=env)
            if rng.random() < 0.5:
                target = start + rng.randint(1, 4)
                wait_until(partial(billed_at_least, fake, target, child),
                           f"{target} billed generations")
            else:
                count = rng.randint(1, 4)
                child.wait_for(partial(finished_at_least, count), f"{count} finished edits")
            time.sleep(rng.uniform(0.0, 0.04))  # a seeded random moment after the trigger
            assert child.process.poll() is None, "the graph finished before the kill"
            child.kill()
            # The fake finishes (and bills) what the dead child had sent: wait for quiet.
            wait_until(lambda: len(fake.billed) == len(fake.requests), "the fake to go idle")

            assert_cache_opens_cleanly(cache)
            assert_cache_holds_only_bytes_and_json(cache, after_kill=True)
            finished = {words[1] for words in child.words("progress")}
            after = plan_of(graph, cache)
            assert finished <= set(after.cached), "an edit reported finished is not cached"
            assert all(words[2] == "1" for words in child.words("progress")
                       if words[1] in cached_before), "a cached edit was not served from the cache"
            paid = billed_nodes(graph, fake.billed[start:])
            assert set(paid) <= to_run, f"finished edits paid again: {set(paid) - to_run}"
            in_flight_lost += sum(1 for name in paid if name not in after.cached)

        to_run = set(plan_of(graph, cache).to_run)
        start = len(fake.billed)
        final = Child("run", "mixed", str(cache), env=env)
        assert final.finish() == 0, final.stderr
        paid = billed_nodes(graph, fake.billed[start:])
    assert set(paid) == to_run and set(paid.values()) <= {1}
    results = {words[1]: words for words in final.words("done")}
    assert set(results) == set(graph.edits)
    assert all(words[2] == "1" for name, words in results.items() if name not in to_run)

    with FakeTogether() as clean:
        uninterrupted = mixed_graph(60, size=CRASH_SIZE, cache_dir=tmp_path / "clean").run(
            provider=together(clean), progress=False
        )
    assert {name: words[3] for name, words in results.items()} == {
        name: result.output_hash for name, result in uninterrupted.items()
    }
    print(f"\ncrashes: 20 SIGKILLs survived; {in_flight_lost} calls in flight at a kill were "
          "billed and redone; no finished edit paid again")


def test_sigkill_during_save_never_leaves_a_truncated_image(tmp_path: Path) -> None:
    """Killing run.save mid-write leaves only whole images under final names."""
    rng = random.Random(99)
    cache = tmp_path / "cache"
    expected = noise_graph(cache).run(progress=False)  # the child then serves it from the cache
    env = {k: v for k, v in os.environ.items() if k != "EDITGRAPH_CACHE_DIR"}
    interrupted = 0
    for attempt in range(6):  # typically 5 or 6 of them land before the save ends
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        child = Child("save", str(cache), env=env)
        child.wait_for(lambda lines: "ready" in lines, "the child's run")
        child.send(str(out))
        wait_until(partial(has_entries, out), "the save to start")
        time.sleep(rng.uniform(0.0, 0.03))
        child.kill()
        interrupted += "saved" not in child.lines
        for path in out.iterdir():
            if path.name.startswith("."):
                continue  # a temporary file, never a final name
            if path.name == "manifest.json":
                eg.Manifest.model_validate_json(path.read_text())
                continue
            name = path.name.rsplit(".", 1)[0]
            with Image.open(path) as image:
                image.load()
            assert remove_provenance(path.read_bytes()) == expected[name].data, path.name
    assert interrupted >= 3, "too few kills landed during the save to prove anything"
    print(f"\nsave: {interrupted} of 6 saves killed mid-way; no truncated image under a final name")


def test_failed_save_keeps_the_previous_image_whole(tmp_path: Path) -> None:
    """A save that fails half-way leaves each earlier file whole, never a partial one."""
    cache = tmp_path / "cache"
    graph = eg.Graph(cache_dir=cache, width=256, height=256)
    car = graph.image(source_png((200, 30, 30)), name="car")
    graph.edit(f"Paint {car} blue", name="blue")
    graph.edit(f"Paint {car} red", name="red")
    with FakeTogether() as fake:
        run = graph.run(provider=together(fake), progress=False)
    out = tmp_path / "out"
    run.save(out)
    before = (out / "blue.jpg").read_bytes()
    (out / "red.jpg").unlink()
    (out / "red.jpg").mkdir()  # the second file cannot be renamed into place
    with pytest.raises(OSError):
        run.save(out)
    assert (out / "blue.jpg").read_bytes() == before
    assert [path.name for path in out.iterdir() if path.name.startswith(".")] == []


# ============================================================ 3. two processes, one payment


def test_two_processes_on_one_cache_generate_each_edit_once(tmp_path: Path) -> None:
    """Two runs of one graph on one cache at once: each edit billed once, both get everything."""
    cache = tmp_path / "cache"
    graph = small_graph()
    with FakeTogether(latency=0.4) as fake:
        env = child_env(fake)
        children = [
            Child("run", "small", str(cache), "--wait-go", "--concurrency", "8", env=env)
            for _ in range(2)
        ]
        for child in children:
            child.wait_for(lambda lines: "ready" in lines, "the child to be ready")
        for child in children:
            child.send("go")
        codes = [child.finish() for child in children]
        billed, requests = fake.billed, fake.requests
    assert codes == [0, 0], [child.stderr for child in children]
    counts = billed_nodes(graph, billed)
    assert counts == {name: 1 for name in graph.edits}, "an edit was paid for twice"
    assert len(requests) == len(graph.edits)
    results = [{words[1]: words for words in child.words("done")} for child in children]
    for name in graph.edits:
        first, second = results[0][name], results[1][name]
        assert first[3] == second[3], name  # the same bytes
        assert sorted([first[2], second[2]]) == ["0", "1"], f"{name}: exactly one generated it"
    assert_cache_holds_only_bytes_and_json(cache)


def lease_holders(cache: Path) -> list[dict[str, Any]]:
    """The JSON of every lease row in ``cache``."""
    rows = cache_rows(cache)
    return [json.loads(value) for key, _, _, _, value in rows if key.startswith("lease:")]


def test_lease_of_a_sigkilled_process_is_taken_over_at_once(tmp_path: Path) -> None:
    """A run SIGKILLed while it holds leases does not block the next run (same host: pid check)."""
    cache = tmp_path / "cache"
    with FakeTogether(latency=120.0) as stuck, FakeTogether() as fresh:
        child = Child("run", "small", str(cache), env=child_env(stuck))
        wait_until(lambda: len(stuck.requests) >= 4, "the child to send its first generations")
        holders = lease_holders(cache)
        assert holders and {holder["pid"] for holder in holders} == {child.process.pid}
        child.kill()
        started = time.monotonic()
        run = small_graph(cache).run(provider=together(fresh), progress=False)
        took = time.monotonic() - started
        assert not stuck.billed
        assert billed_nodes(small_graph(), fresh.billed) == {name: 1 for name in run}
    assert not any(result.cached for result in run.values())
    assert took < 10.0, f"takeover took {took:.1f} s (promise: within 30 s; same host: at once)"
    assert lease_holders(cache) == []


# ============================================================ 4. bad input


class Refused(Exception):
    """The command line exited 2 (bad input); the message is what it printed."""


@dataclass
class Bench:
    """What a bad-input case builds with: a graph on the fake, files and servers."""

    graph: eg.Graph
    folder: Path
    fake: FakeTogether
    junk_url: str

    def file(self, name: str, data: bytes) -> str:
        """Write ``data`` to ``name`` in the bench folder; its path."""
        path = self.folder / name
        path.write_bytes(data)
        return str(path)

    def car(self) -> eg.Handle:
        """A source image named car."""
        return self.graph.image(source_png((200, 30, 30)), name="car")

    def cli(self, body: str, *args: str) -> None:
        """Run a recipe through ``editgraph run``; Refused when it exits 2."""
        recipe = self.folder / "recipe.py"
        recipe.write_text(textwrap.dedent(body))
        result = CliRunner().invoke(
            main,
            ["run", str(recipe), "--provider", "together", "--cache-dir", str(self.folder / "c"),
             "--out", str(self.folder / "out"), *args],
            env={"TOGETHER_API_KEY": TEST_KEY, "TOGETHER_BASE_URL": self.fake.base_url},
        )
        if result.exit_code == 2:
            assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
            raise Refused(result.stderr)
        raise AssertionError(f"exit {result.exit_code}: {result.output}")


def truncated_png() -> bytes:
    """A PNG cut off half-way."""
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


def a_directory(path: Path) -> str:
    """Make the directory ``path``; its path as text."""
    path.mkdir()
    return str(path)


def nine_sources(bench: Bench) -> list[eg.Handle]:
    """Nine distinct source images."""
    return [bench.graph.image(source_png((i * 20, 10, 10)), name=f"s{i}") for i in range(9)]


RAISING_RECIPE = """\
    def recipe(colour: str = "blue"):
        raise ValueError("the swatch file is missing")
"""

TYPED_RECIPE = """\
    import editgraph as eg

    def recipe(steps: int = 1, colour: str = "#2E4057"):
        return eg.Graph(width=256, height=256)
"""

ONE_EDIT_RECIPE = """\
    import editgraph as eg

    def recipe():
        g = eg.Graph(width=256, height=256)
        g.edit("A red car on a quiet street", name="car")
        return g
"""

GRAPH_ERROR_RECIPE = """\
    import editgraph as eg

    def recipe():
        g = eg.Graph(width=256, height=256)
        g.edit("Paint @nobody blue", name="blue")
        return g
"""


@dataclass(frozen=True)
class Bad:
    """One bad input: what builds it, the error expected and what its message must name."""

    id: str
    build: Callable[[Bench], object]
    error: type[BaseException]
    names: tuple[str, ...]


def _edit(prompt: Any = "Paint @car blue", **params: Any) -> Callable[[Bench], object]:
    """A case that adds a car source and then one edit named x."""

    def build(bench: Bench) -> object:
        bench.car()
        return bench.graph.edit(prompt, name="x", **params)

    return build


BAD_INPUTS = [
    Bad("unknown-model", _edit(model="flux.3-pro"), eg.GraphError, ("'x'", "model", "flux.3-pro")),
    Bad("misspelt-model", _edit(model="flux.2-por"), eg.GraphError, ("'x'", "model", "flux.2-por")),
    Bad("unknown-default-model", lambda b: eg.Graph(model="sdxl"), eg.GraphError,
        ("graph defaults", "model", "sdxl")),
    Bad("width-below-256", _edit(width=240), eg.GraphError, ("'x'", "width", "240")),
    Bad("width-above-1920", _edit(width=1936), eg.GraphError, ("'x'", "width", "1936")),
    Bad("height-not-multiple-of-16", _edit(height=1000), eg.GraphError, ("'x'", "height", "1000")),
    Bad("width-zero", _edit(width=0), eg.GraphError, ("'x'", "width", "0")),
    Bad("width-as-text", _edit(width="512"), eg.GraphError, ("'x'", "width", "'512'")),
    Bad("default-height-out-of-range", lambda b: eg.Graph(height=4096), eg.GraphError,
        ("graph defaults", "height", "4096")),
    Bad("nine-references-on-pro",
        lambda b: b.graph.edit(" ".join(f"{h}" for h in nine_sources(b)), name="x"),
        eg.GraphError, ("'x'", "refs", "9")),
    Bad("seven-references-on-dev",
        lambda b: b.graph.edit(" ".join(f"{h}" for h in nine_sources(b)[:7]), name="x",
                               model="flux.2-dev"),
        eg.GraphError, ("'x'", "refs", "7")),
    Bad("steps-on-pro", _edit(steps=28), eg.GraphError, ("'x'", "steps", "pro")),
    Bad("guidance-on-max", _edit(model="flux.2-max", guidance=7.5), eg.GraphError,
        ("'x'", "guidance", "max")),
    Bad("steps-zero-on-flex", _edit(model="flux.2-flex", steps=0), eg.GraphError,
        ("'x'", "steps", "0")),
    Bad("guidance-negative-on-dev", _edit(model="flux.2-dev", guidance=-1.0), eg.GraphError,
        ("'x'", "guidance", "-1.0")),
    Bad("negative-prompt", _edit(negative_prompt="blurry"), eg.GraphError,
        ("'x'", "negative_prompt")),
    Bad("image-loras", _edit(image_loras=[{"path": "x"}]), eg.GraphError, ("'x'", "image_loras")),
    Bad("unknown-parameter", _edit(strength=0.5), eg.GraphError, ("'x'", "strength")),
    Bad("seed-as-text", _edit(seed="seven"), eg.GraphError, ("'x'", "seed", "'seven'")),
    Bad("seed-negative", _edit(seed=-1), eg.GraphError, ("'x'", "seed", "-1")),
    Bad("output-format-gif", _edit(output_format="gif"), eg.GraphError,
        ("'x'", "output_format", "gif")),
    Bad("bad-hex-in-text", _edit("Paint @car #12345G"), eg.GraphError, ("'x'", "prompt", "#12345")),
    Bad("four-digit-hex-in-text", _edit("Paint @car #1234"), eg.GraphError,
        ("'x'", "prompt", "#1234")),
    Bad("bad-hex-in-palette", _edit({"scene": "@car at dusk", "color_palette": ["#ZZZ000"]}),
        eg.GraphError, ("'x'", "prompt.color_palette", "#ZZZ000")),
    Bad("bad-hex-in-subject",
        _edit({"scene": "@car", "subjects": [{"description": "a #2E40 car"}]}),
        eg.GraphError, ("'x'", "prompt.subjects[0].description", "#2E40")),
    Bad("structured-unknown-field", _edit({"scene": "@car", "colour_palette": ["red"]}),
        eg.GraphError, ("'x'", "colour_palette")),
    Bad("structured-wrong-type", _edit({"scene": "@car", "subjects": "a red car"}),
        eg.GraphError, ("'x'", "prompt.subjects")),
    Bad("structured-camera-wrong-type", _edit({"scene": "@car", "camera": {"ISO": [100]}}),
        eg.GraphError, ("'x'", "prompt.camera.ISO")),
    Bad("prompt-over-the-limit", _edit("Paint @car " + "very " * (MAX_PROMPT_CHARS // 5)),
        eg.GraphError, ("'x'", "prompt", f"{MAX_PROMPT_CHARS:,}")),
    Bad("empty-prompt", _edit("   "), eg.GraphError, ("'x'", "prompt", "empty")),
    Bad("unknown-at-name", _edit("Paint @cra blue"), eg.GraphError, ("'x'", "prompt", "@cra")),
    Bad("handle-not-in-refs",
        lambda b: b.graph.edit(
            f"Paint {b.car()} like {b.graph.image(source_png((1, 2, 3)), name='sw')}",
            refs=["car"], name="x",
        ),
        eg.GraphError, ("'x'", "sw")),
    Bad("image-0", lambda b: b.graph.edit("Paint image 0 blue", refs=[b.car()], name="x"),
        eg.GraphError, ("'x'", "image 0")),
    Bad("image-9", lambda b: b.graph.edit("Paint image 9 blue", refs=[b.car()], name="x"),
        eg.GraphError, ("'x'", "image 9")),
    Bad("refs-unknown-name", lambda b: b.graph.edit("Paint image 1", refs=["ghost"], name="x"),
        eg.GraphError, ("'x'", "refs", "ghost")),
    Bad("refs-as-a-string", lambda b: b.graph.edit("Paint image 1", refs="car", name="x"),
        eg.GraphError, ("'x'", "refs")),
    Bad("cycle-self-reference", _edit("Make @x bluer"), eg.GraphError, ("'x'", "itself")),
    Bad("duplicate-source-name", lambda b: (b.car(), b.car()), eg.GraphError,
        ("'car'", "name", "already exists")),
    Bad("duplicate-edit-name", lambda b: (_edit()(b), b.graph.edit("Paint @car red", name="x")),
        eg.GraphError, ("'x'", "name", "already exists")),
    Bad("name-escapes-up", lambda b: b.graph.edit(f"Paint {b.car()}", name="../x"),
        eg.GraphError, ("'../x'", "name")),
    Bad("name-absolute", lambda b: b.graph.image(source_png((1, 1, 1)), name="/etc/x"),
        eg.GraphError, ("'/etc/x'", "name")),
    Bad("name-empty", lambda b: b.graph.image(source_png((1, 1, 1)), name=""), eg.GraphError,
        ("name", "non-empty")),
    Bad("name-hidden", lambda b: b.graph.edit(f"Paint {b.car()}", name=".x"), eg.GraphError,
        ("'.x'", "name")),
    Bad("missing-file", lambda b: b.graph.image(str(b.folder / "nope.png")), eg.GraphError,
        ("'nope'", "nope.png", "no such file")),
    Bad("file-not-an-image", lambda b: b.graph.image(b.file("notes.png", b"just some notes")),
        eg.GraphError, ("'notes'", "notes.png", "not a readable image")),
    Bad("truncated-image", lambda b: b.graph.image(b.file("cut.png", truncated_png())),
        eg.GraphError, ("'cut'", "cut.png", "not a readable image")),
    Bad("zero-byte-file", lambda b: b.graph.image(b.file("empty.png", b"")), eg.GraphError,
        ("'empty'", "empty.png", "0 bytes")),
    Bad("directory-as-source",
        lambda b: b.graph.image(a_directory(b.folder / "photos")),
        eg.GraphError, ("'photos'", "cannot read", "Is a directory")),
    Bad("http-404", lambda b: b.graph.image(b.fake.base_url + "/files/gone.png"), eg.GraphError,
        ("'gone'", "gone.png", "404")),
    Bad("http-not-an-image", lambda b: b.graph.image(b.junk_url, name="junk"), eg.GraphError,
        ("'junk'", "notes.png", "not a readable image")),
    Bad("ftp-url", lambda b: b.graph.image("ftp://example.invalid/car.png"), eg.GraphError,
        ("'car'", "ftp://", "http(s)")),
    Bad("unsupported-source-type",
        lambda b: b.graph.image(42, name="answer"),  # type: ignore[arg-type]
        eg.GraphError, ("'answer'", "int")),
    Bad("cli-set-wrong-type", lambda b: b.cli(TYPED_RECIPE, "--set", "steps=many"), Refused,
        ("recipe.py", "--set steps=many")),
    Bad("cli-set-unknown-name", lambda b: b.cli(TYPED_RECIPE, "--set", "color=red"), Refused,
        ("recipe.py", "--set color", "steps, colour")),
    Bad("cli-recipe-raises", lambda b: b.cli(RAISING_RECIPE), Refused,
        ("recipe.py", "ValueError", "the swatch file is missing")),
    Bad("cli-graph-error", lambda b: b.cli(GRAPH_ERROR_RECIPE), Refused,
        ("recipe.py", "'blue'", "@nobody")),
    Bad("cli-budget", lambda b: b.cli(ONE_EDIT_RECIPE, "--budget", "0.01"), Refused,
        ("budget", "0.01")),
    Bad("budget-below-estimate",
        lambda b: (_edit()(b), b.graph.run(budget=0.02, progress=False)), eg.BudgetError,
        ("budget", "$0.03", "$0.02")),
    Bad("cache-dir-not-writable",
        lambda b: (_edit()(b), b.graph.run(cache_dir=b.file("plain-file", b"x") + "/cache",
                                           progress=False)),
        eg.StoreError, ("cache directory", "plain-file")),
]


class _JunkHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and bytes that are not an image."""

    def do_GET(self) -> None:
        body = b"<html>this is not a picture</html>"
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def junk_server() -> Iterator[str]:
    """A loopback HTTP server whose answers are not images; yields a URL on it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JunkHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/notes.png"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_bad_input_table_is_large_and_distinct() -> None:
    """At least 40 bad inputs, each with its own id."""
    assert len(BAD_INPUTS) >= 40
    assert len({case.id for case in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.id for case in BAD_INPUTS])
def test_bad_input_is_refused_before_any_request(
    case: Bad, tmp_path: Path, junk_server: str
) -> None:
    """Each bad input raises its error naming the node and field (or file); nothing is sent."""
    with FakeTogether() as fake:
        graph = eg.Graph(provider=together(fake), cache_dir=tmp_path / "cache",
                         width=256, height=256)
        bench = Bench(graph=graph, folder=tmp_path, fake=fake, junk_url=junk_server)
        with pytest.raises(case.error) as caught:
            case.build(bench)
            graph.run(progress=False)  # reached only if building did not refuse it
        message = str(caught.value)
        for name in case.names:
            assert name in message, f"{name!r} not in {message!r}"
        assert fake.requests == []


# ============================================================ 5. secrets and safety


def failure_texts(error: BaseException) -> list[str]:
    """str and repr of an error and of every error chained under it."""
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return texts


def files_under(*folders: Path) -> Iterator[Path]:
    """Every file below ``folders``."""
    for folder in folders:
        yield from (path for path in folder.rglob("*") if path.is_file())


def assert_key_absent(texts: list[str], files: list[Path]) -> None:
    """Neither the planted key nor a telling piece of it is in ``texts`` or ``files``."""
    pieces = [PLANTED_KEY, PLANTED_KEY[7:27]]
    for text in texts:
        for piece in pieces:
            assert piece not in text, f"the key leaked: {text[:300]!r}"
    for path in files:
        data = path.read_bytes()
        for piece in pieces:
            assert piece.encode() not in data, f"the key leaked into {path}"


SECRET_RECIPE = """\
    import editgraph as eg

    def recipe():
        g = eg.Graph(width=256, height=256)
        car = g.image("red.png")
        blue = g.edit(f"Paint {car} blue", name="blue")
        g.edit(f"Make {blue} a night scene", name="night")
        return g
"""


def test_a_planted_key_appears_in_no_file_log_repr_or_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    """Runs with a 401 and failing edits, saved, reported, logged at DEBUG: the key is nowhere."""
    caplog.set_level(logging.DEBUG)
    cache, out, report = tmp_path / "cache", tmp_path / "out", tmp_path / "report.html"
    texts: list[str] = []
    with FakeTogether(api_key=PLANTED_KEY) as fake:
        provider = together(fake, key=PLANTED_KEY)
        fake.fail_next(401)
        fake.fail_next(400, message=f"refused for key {PLANTED_KEY}")  # a service echoing it
        graph = small_graph(cache)
        graph.edit({"scene": "<script>alert(1)</script> @car", "mood": "calm"}, name="escaped")
        interrupted, failures = run_collecting(graph, provider=provider)
        statuses = sorted(getattr(error, "status", None) or 0 for error in failures.values())
        assert 401 in statuses and 400 in statuses, failures
        assert len(interrupted) >= 5, "the key was accepted for the other edits"
        interrupted.save(out / "interrupted")
        run = graph.run(provider=provider, progress=False)  # the rest, now that it answers
        assert "escaped" in run
        run.save(out / "full")
        if importlib.util.find_spec("editgraph.report") is not None:
            run.report(report)
            html_text = report.read_text(encoding="utf-8")
            assert "<script>alert(1)</script>" not in html_text, "a prompt reached the HTML raw"
            assert "alert(1)" in html_text, "the report should show the prompt, escaped"
            texts.append(html_text)

        # The same through the command line, with the key in the environment.
        (tmp_path / "red.png").write_bytes(source_png((255, 0, 0)))
        (tmp_path / "recipe.py").write_text(textwrap.dedent(SECRET_RECIPE))
        fake.fail_next(401)
        result = CliRunner().invoke(
            main,
            ["run", str(tmp_path / "recipe.py"), "--provider", "together", "--cache-dir",
             str(cache), "--out", str(tmp_path / "cli-out")],
            env={"TOGETHER_API_KEY": PLANTED_KEY, "TOGETHER_BASE_URL": fake.base_url},
        )
        assert result.exit_code == 1, result.output
        texts += [result.output, result.stderr, repr(result.exception)]

    error = eg.RunError(failures, run=interrupted)
    texts += [str(error), repr(error), repr(provider), repr(graph), repr(graph.plan(provider))]
    for each in (interrupted, run):
        texts += [repr(each), each.manifest.model_dump_json()]
        texts += [repr(result) for result in each.values()]
        texts += [repr(result.request) for result in each.values()]
    for failure in failures.values():
        texts += failure_texts(failure)
    texts += [caplog.text]
    texts += [f"{rec.getMessage()} {rec.args!r} {rec.__dict__!r}" for rec in caplog.records]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    # httpcore logs each step at DEBUG on httpx's own transport; over the aiohttp transport
    # httpx's request lines are what the HTTP stack logs.
    assert any(rec.name.startswith(("httpcore", "httpx")) for rec in caplog.records), (
        "no HTTP logs seen")
    files = list(files_under(cache, out, tmp_path / "cli-out")) + [report] * report.exists()
    assert_key_absent(texts, files)
    assert_cache_holds_only_bytes_and_json(cache)


def test_the_key_check_finds_a_leak() -> None:
    """The scan above is not vacuous: a key in a text is found."""
    with pytest.raises(AssertionError, match="the key leaked"):
        assert_key_absent([f"Authorization: Bearer {PLANTED_KEY}"], [])


# Windows device names ("con", "nul") are refused when declared: tests/test_hostile.py.
ODD_NAMES = ["a..b", "x.-.y", "é", "名前", "console", "manifest", "manifest.json", "x.tmp",
             "a.jpg", "_", "1", "z" * 100, "odd[3]", "x-y", "nulls", "猫" * 66]


def test_every_allowed_odd_name_saves_inside_the_output_folder(tmp_path: Path) -> None:
    """run.save writes each result under the output folder, whatever legal name it has."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(source_png((200, 30, 30)), name="car")
    for index, name in enumerate(ODD_NAMES):
        graph.edit(f"Paint {car} shade {index}", name=name)
    with FakeTogether() as fake:
        run = graph.run(provider=together(fake), progress=False)
    out = tmp_path / "deep" / "out"
    before = set(files_under(tmp_path))
    run.save(out)
    written = set(files_under(tmp_path)) - before
    assert {path.parent for path in written} == {out}
    expected = {run[name].filename for name in ODD_NAMES} | {"manifest.json"}
    assert {path.name for path in written} == expected
    manifest = eg.Manifest.model_validate_json((out / "manifest.json").read_text())
    assert {entry.node for entry in manifest.edits} == set(ODD_NAMES)
    for name in ODD_NAMES:
        assert remove_provenance((out / run[name].filename).read_bytes()) == run[name].data


# ============================================================ 6. integrity: verified reads

#: A two-edit recipe (night takes blue), 1024 px so the cache keeps each image as a file.
DAMAGE_RECIPE = '''
import editgraph as eg

def recipe() -> eg.Graph:
    g = eg.Graph(width=1024, height=1024)
    car = g.image("car.png")
    blue = g.edit(f"Paint {car} blue, keep the shadows", name="blue")
    g.edit(f"Make {blue} a night scene, wet asphalt", name="night")
    return g
'''


def write_recipe(folder: Path, text: str, name: str = "damage.py") -> Path:
    """A recipe file ``name`` in ``folder`` next to a small ``car.png`` source."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "car.png").write_bytes(source_png((200, 30, 30)))
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def editgraph_command(
    *args: str, env: dict[str, str], timeout: float = DEADLINE
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m editgraph ARGS`` in a real child process; its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "editgraph", *args], env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def editgraph_here(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the ``editgraph`` command in this process (click's runner, ``env`` set for it):
    the same code as :func:`editgraph_command` without a new interpreter's start-up."""
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def record_of(cache: Path, node: str) -> dict[str, Any]:
    """The cache record (as JSON) of the edit named ``node``."""
    for key, _, _, _, value in cache_rows(cache):
        if key.startswith("record:") and json.loads(value)["node"] == node:
            return dict(json.loads(value))
    raise AssertionError(f"no record for {node!r}")


def blob_file(cache: Path, content_hash: str) -> Path:
    """The file the cache keeps the image ``content_hash`` in (it is too large for a row)."""
    for key, _, _, filename, _ in cache_rows(cache):
        if key == f"blob:{content_hash}":
            assert filename is not None, "the image is in the database, not in a file"
            return cache / filename
    raise AssertionError(f"no image {content_hash[:12]}")


def flip_a_byte(path: Path) -> None:
    """Flip one byte in the middle of ``path``, as a bad disk or a stray edit would."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_cache(cache: Path, node: str, how: str) -> None:
    """Damage ``node``'s cache entry: its image file flipped, truncated or deleted, or its
    record made unreadable."""
    record = record_of(cache, node)
    if how == "record-unreadable":
        connection = sqlite3.connect(cache / "cache.db")
        try:
            with connection:
                connection.execute("UPDATE Cache SET value = ? WHERE key = ?",
                                   ('{"schema_version": 1, "key": "trunc', f"record:{record['key']}"))
        finally:
            connection.close()
        return
    path = blob_file(cache, record["output_hash"])
    if how == "image-flipped":
        flip_a_byte(path)
    elif how == "image-truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()


@pytest.mark.parametrize(
    "how", ["image-flipped", "image-truncated", "image-file-deleted", "record-unreadable"]
)
def test_a_damaged_cache_entry_is_repaired_once_and_paid_once(tmp_path: Path, how: str) -> None:
    """A damaged entry is a miss: the next run repairs it and pays once; later runs pay nothing."""
    recipe = write_recipe(tmp_path / "recipes", DAMAGE_RECIPE)
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ("run", str(recipe), "--out", str(out), "--cache-dir", str(cache))
    with FakeTogether() as fake:
        env = child_env(fake)
        first = editgraph_here(*args, env=env)
        assert first.returncode == 0, first.stderr
        good = {node: record_of(cache, node)["output_hash"] for node in ("blue", "night")}
        damage_cache(cache, "blue", how)
        # The run that meets the damage is a real `editgraph` process; the later ones
        # only need to show they pay nothing.
        reruns = [editgraph_command(*args, env=env)]
        reruns += [editgraph_here(*args, env=env) for _ in range(2)]
        prompts = [entry["prompt"] for entry in fake.billed]
    assert [rerun.returncode for rerun in reruns] == [0, 0, 0], [r.stderr for r in reruns]
    assert "cache repaired: " in reruns[0].stdout, reruns[0].stdout
    assert all("cache repaired" not in rerun.stdout for rerun in reruns[1:])
    paid = collections.Counter(prompt.split(",")[0] for prompt in prompts)
    assert paid == {"Paint image 1 blue": 2, "Make image 1 a night scene": 1}, paid
    for node, content in good.items():  # what was saved is the good image, never damaged
        saved = remove_provenance((out / f"{node}.jpg").read_bytes())
        assert content_hash(saved) == content, node
    print(f"\n{how}: {len(prompts)} payments for 2 edits over 1 run + 3 re-runs "
          f"(blue {paid['Paint image 1 blue']}, night {paid['Make image 1 a night scene']})")


def test_cache_verify_reports_damage_and_repairs_it(tmp_path: Path) -> None:
    """`cache verify` exits 1 naming damage, `--repair` removes it, then verify exits 0."""
    recipe = write_recipe(tmp_path / "recipes", DAMAGE_RECIPE)
    cache = tmp_path / "cache"
    with FakeTogether() as fake:
        env = child_env(fake)
        assert editgraph_here("run", str(recipe), "--out", str(tmp_path / "out"),
                              "--cache-dir", str(cache), env=env).returncode == 0
    clean = editgraph_here("cache", "verify", "--cache-dir", str(cache), env=env)
    assert clean.returncode == 0 and "no damage" in clean.stdout, clean.stdout
    damage_cache(cache, "blue", "image-flipped")
    damage_cache(cache, "night", "record-unreadable")
    found = editgraph_command("cache", "verify", "--cache-dir", str(cache), env=env)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "do not match their hash" in found.stdout and "unreadable" in found.stdout
    assert "3 damaged entries" in found.stdout, found.stdout  # image + its record + a record
    repaired = editgraph_here("cache", "verify", "--repair", "--cache-dir", str(cache), env=env)
    assert repaired.returncode == 0 and "repaired 3 entries" in repaired.stdout, repaired.stdout
    after = editgraph_here("cache", "verify", "--cache-dir", str(cache), env=env)
    assert after.returncode == 0 and "no damage" in after.stdout, after.stdout


# ============================================================ 7. leases across containers


def in_own_pid_namespace(skip_pids: int) -> tuple[str, ...]:
    """A command prefix that runs the child in a new pid namespace (as a container is),
    after ``skip_pids`` short-lived processes, so its pid differs from its sibling's."""
    spin = f"i=0; while [ $i -lt {skip_pids} ]; do /bin/true; i=$((i+1)); done; "
    return ("unshare", "--pid", "--fork", "sh", "-c", spin + '"$@"; exit $?', "sh")


def unshare_works() -> bool:
    """Whether this machine lets us start a process in a new pid namespace."""
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True,
                               timeout=30, check=False)
    except OSError:
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not unshare_works(),
                    reason="needs `unshare --pid --fork` (root or user namespaces)")
def test_two_containers_sharing_a_cache_volume_pay_once_per_edit(tmp_path: Path) -> None:
    """Two processes in separate pid namespaces on one cache: each edit billed once."""
    cache = tmp_path / "cache"
    graph = small_graph()
    with FakeTogether(latency=0.4) as fake:
        env = child_env(fake)
        children = [
            Child("run", "small", str(cache), "--wait-go", "--concurrency", "8", env=env,
                  prefix=in_own_pid_namespace(skip_pids))
            for skip_pids in (10, 30)
        ]
        for child in children:
            child.wait_for(lambda lines: "ready" in lines, "the child to be ready")
        for child in children:
            child.send("go")
        codes = [child.finish() for child in children]
        billed = fake.billed
    assert codes == [0, 0], [child.stderr for child in children]
    holders = [json.loads(line.split(" ", 1)[1]) for child in children
               for line in child.lines if line.startswith("identity ")]
    assert len({holder["pid_ns"] for holder in holders}) == 2, holders
    counts = billed_nodes(graph, billed)
    print(f"\ncontainers: {len(billed)} billed for {len(graph.edits)} edits")
    assert counts == {name: 1 for name in graph.edits}, "an edit was paid for twice"
    results = [{words[1]: words for words in child.words("done")} for child in children]
    for name in graph.edits:
        assert results[0][name][3] == results[1][name][3], name  # the same bytes


# ============================================================ 8. partial commits on a full disk

#: Six independent edits that finish together (one group commit) in a run against the fake.
SIX_RECIPE = '''
import editgraph as eg

def recipe() -> eg.Graph:
    g = eg.Graph(width=1024, height=1024)
    car = g.image("car.png")
    for index in range(6):
        g.edit(f"Paint {car} in shade {index}", name=f"shade{index}")
    return g
'''


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB tmpfs mounted for this test (needs root), unmounted after it."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_disk(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` with one file, leaving ``leave`` bytes free."""
    filler = folder / "filler"
    stats = os.statvfs(folder)
    with filler.open("wb") as file:
        file.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


def test_a_full_disk_keeps_what_fits_and_still_returns_and_saves_the_rest(
    tmp_path: Path, small_disk: Path
) -> None:
    """Disk full at commit: every paid result is returned and saved; those that fit are cached."""
    recipe = write_recipe(tmp_path / "recipes", SIX_RECIPE, name="six.py")
    cache, out = small_disk / "cache", tmp_path / "out"
    DiskStore(cache).close()  # the database exists before the disk fills
    args = ("run", str(recipe), "--out", str(out), "--cache-dir", str(cache),
            "--concurrency", "6")
    with FakeTogether(latency=3.0) as fake:
        env = child_env(fake)
        command = subprocess.Popen([sys.executable, "-m", "editgraph", *args], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: len(fake.requests) == 6 or command.poll() is not None,
                   "all six generations to start")
        filler = fill_disk(small_disk, leave=160_000)
        assert not fake.billed, "a result came back before the disk was full; raise latency"
        stdout, stderr = command.communicate(timeout=DEADLINE)
        outputs = {entry["prompt"]: entry for entry in fake.billed}
        assert command.returncode == 0, stdout + stderr
        not_cached = [line for line in stdout.splitlines() if line.startswith("not cached: ")]
        assert not_cached, stdout
        assert all("free space" in line or "full" in line for line in not_cached), not_cached
        saved = sorted(path.name for path in out.glob("shade*.jpg"))
        assert saved == [f"shade{index}.jpg" for index in range(6)], saved
        manifest = json.loads((out / "manifest.json").read_text())
        assert len(manifest["edits"]) == 6 and len(outputs) == 6
        for entry in manifest["edits"]:
            image = remove_provenance((out / entry["file"]).read_bytes())
            assert content_hash(image) == entry["output_hash"]
        filler.unlink()
        kept = 6 - len(not_cached)
        again = editgraph_here(*args, env=env)
        assert again.returncode == 0, again.stdout
        assert len(fake.billed) == 6 + len(not_cached)  # only what was not kept is paid again
    print(f"\nfull disk: 6 results finished together, {kept} cached, {len(not_cached)} returned "
          f"and saved but not cached; the re-run paid {len(not_cached)}")


# ============================================================ 9. interrupts drain


class Command:
    """``python -m editgraph ARGS`` (or ``python -c SCRIPT``) in a child process whose
    stdout and stderr lines are collected, together, as they arrive."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for_line(self, text: str) -> None:
        """Block until a line containing ``text`` arrived; fail at the deadline."""
        end = time.monotonic() + DEADLINE
        with self._changed:
            while not any(text in line for line in self.lines):
                if self.process.poll() is not None and not self._reader.is_alive():
                    pytest.fail(f"ended before printing {text!r}: {self.lines[-8:]}")
                self._changed.wait(timeout=max(0.0, min(0.5, end - time.monotonic())))
                if time.monotonic() > end:
                    pytest.fail(f"timed out waiting for {text!r}")

    def finish(self) -> int:
        """Wait for the exit; its code."""
        code = self.process.wait(timeout=DEADLINE)
        self._reader.join(timeout=DEADLINE)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code

    @property
    def output(self) -> str:
        """Everything printed so far."""
        return "\n".join(self.lines)


def start_six(tmp_path: Path, fake: FakeTogether) -> tuple[Command, tuple[str, ...]]:
    """`editgraph run` of six independent edits, two at a time, against ``fake``."""
    recipe = write_recipe(tmp_path / "recipes", SIX_RECIPE, name="six.py")
    args = ("run", str(recipe), "--out", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "cache"), "--concurrency", "2")
    command = Command([sys.executable, "-m", "editgraph", *args], env=child_env(fake))
    wait_until(lambda: len(fake.requests) == 2 or command.process.poll() is not None,
               "two edits in flight")
    return command, args


@pytest.mark.parametrize(("signal_number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_drains_saves_and_the_rerun_pays_nothing_twice(
    tmp_path: Path, signal_number: int, code: int
) -> None:
    """First SIGINT/SIGTERM: in-flight edits finish, are cached and saved; none starts; 130/143."""
    with FakeTogether(latency=2.0) as fake:
        command, args = start_six(tmp_path, fake)
        in_flight = {entry["prompt"] for entry in fake.requests}
        command.process.send_signal(signal_number)
        assert command.finish() == code, command.output
        assert len(fake.requests) == 2, "an edit started after the interrupt"
        assert {entry["prompt"] for entry in fake.billed} == in_flight
        out = tmp_path / "out"
        saved = sorted(path.name for path in out.glob("shade*.jpg"))
        assert len(saved) == 2, command.output
        assert "interrupted: 0 finished before it, 2 in flight and finished" in command.output
        assert "4 did not start" in command.output and "run again to continue" in command.output
        manifest = json.loads((out / "manifest.json").read_text())
        statuses = collections.Counter(entry["status"] for entry in manifest["edits"])
        assert statuses == {"done": 2, "not run": 4}, manifest["edits"]
        assert sorted(entry["file"] for entry in manifest["edits"] if entry["file"]) == saved
        again = editgraph_here(*args, env=child_env(fake))
        assert again.returncode == 0, again.stdout
        billed = collections.Counter(entry["prompt"] for entry in fake.billed)
    assert len(billed) == 6 and set(billed.values()) == {1}, "an edit was paid for twice"
    print(f"\n{signal.Signals(signal_number).name}: 2 in flight finished and cached, 4 not "
          f"started; the re-run paid 4: {sum(billed.values())} payments for 6 edits")


#: A generation slower than every deadline of these tests: an edit in flight is never
#: answered while they run, so a process that exits did not wait for it, however
#: loaded the machine (an 8 s latency and a wall-clock bound were flaky under load).
NEVER = 2 * DEADLINE


def test_a_second_ctrl_c_abandons_at_once_naming_what_may_be_billed(tmp_path: Path) -> None:
    """Second SIGINT: exit 130 without waiting for the in-flight answers (which would take
    twice the test's deadline), naming them."""
    with FakeTogether(latency=NEVER) as fake:
        command, _ = start_six(tmp_path, fake)
        command.process.send_signal(signal.SIGINT)
        command.wait_for_line("interrupted: finishing 2 edit(s) in flight")
        command.process.send_signal(signal.SIGINT)
        assert command.finish() == 130, command.output  # within DEADLINE, < NEVER
        assert not fake.billed, "the in-flight edits had already finished"
    abandoned = next(line for line in command.lines if line.startswith("abandoned: "))
    assert "may have been billed" in abandoned
    assert sum(f"shade{index}" in abandoned for index in range(6)) == 2, abandoned


GRAPH_RUN_SCRIPT = """
import sys
import editgraph as eg
g = eg.Graph(width=256, height=256, cache_dir=sys.argv[1])
car = g.image(sys.argv[2])
for index in range(6):
    g.edit(f"Paint {car} in shade {index}", name=f"shade{index}")
try:
    g.run(concurrency=2, progress=False)
except eg.RunInterrupted as interrupt:
    run = interrupt.run
    print("finished", sorted(run), "in_flight", run.in_flight, "not_run", run.not_run,
          flush=True)
    raise
"""


def test_g_run_drains_on_keyboard_interrupt(tmp_path: Path) -> None:
    """g.run() in a script: Ctrl-C lets in-flight edits finish, then raises RunInterrupted."""
    car = tmp_path / "car.png"
    car.write_bytes(source_png((200, 30, 30)))
    with FakeTogether(latency=2.0) as fake:
        command = Command([sys.executable, "-c", GRAPH_RUN_SCRIPT, str(tmp_path / "cache"),
                           str(car)], env=child_env(fake))
        wait_until(lambda: len(fake.requests) == 2 or command.process.poll() is not None,
                   "two edits in flight")
        command.process.send_signal(signal.SIGINT)
        code = command.finish()
        assert len(fake.requests) == 2 and len(fake.billed) == 2
    assert code != 0 and "KeyboardInterrupt" not in command.output.split("finished")[0]
    line = next(line for line in command.lines if line.startswith("finished "))
    assert "not_run ['shade2', 'shade3', 'shade4', 'shade5']" in line, line
    assert "RunInterrupted" in command.output


# ============================================================ 10. truthful output folders

SWEEP_RECIPE = """
import editgraph as eg

def recipe(variants: int = 3) -> eg.Graph:
    g = eg.Graph(width=256, height=256)
    car = g.image("car.png")
    blue = g.edit(f"Paint {car} blue", name="blue")
    g.edit(f"A contact sheet of {blue}", name="sheet", seed=list(range(variants)))
    return g
"""


def test_a_failed_run_keeps_earlier_files_listed_as_stale(tmp_path: Path) -> None:
    """A good preview run, then a run failing on a wrong key: every edit listed as
    failed, the earlier files kept and listed as stale with their keys."""
    recipe = write_recipe(tmp_path / "recipes", SWEEP_RECIPE, name="sheet.py")
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ("run", str(recipe), "--out", str(out), "--cache-dir", str(cache))
    with FakeTogether(api_key=TEST_KEY) as fake:
        env = child_env(fake, key="tgp_v1_wrong_key_00000000000000000")
        good = editgraph_here(*args, "--provider", "preview", env=env)
        assert good.returncode == 0, good.stdout
        first = json.loads((out / "manifest.json").read_text())
        (out / "notes.txt").write_text("mine")  # no manifest lists it
        wrong = editgraph_here(*args, "--set", "variants=4", "--provider", "together", env=env)
        assert not fake.billed
    assert wrong.returncode == 1, wrong.stdout
    keys = {entry["node"]: entry["key"] for entry in first["edits"]}
    after = {entry["node"]: entry for entry in json.loads((out / "manifest.json").read_text())["edits"]}
    assert list(after) == ["blue", "sheet[0]", "sheet[1]", "sheet[2]", "sheet[3]"]
    assert {entry["status"] for entry in after.values()} == {"failed"}
    assert "API key" in after["blue"]["error"] and "input 'blue' failed" in after["sheet[0]"]["error"]
    for node in ("blue", "sheet[0]", "sheet[1]", "sheet[2]"):
        assert after[node]["stale"] is True and after[node]["key"] == keys[node], after[node]
        assert (out / after[node]["file"]).is_file()
    assert after["sheet[3]"]["stale"] is False and after["sheet[3]"]["file"] is None
    assert (out / "notes.txt").read_text() == "mine"


def test_fewer_sweep_variants_remove_the_old_files_and_nothing_else(tmp_path: Path) -> None:
    """Re-saving with fewer variants removes sheet[2].jpg (an earlier manifest listed it) only."""
    recipe = write_recipe(tmp_path / "recipes", SWEEP_RECIPE, name="sheet.py")
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ("run", str(recipe), "--out", str(out), "--cache-dir", str(cache), "--provider",
            "preview")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    assert editgraph_here(*args, env=env).returncode == 0
    assert (out / "sheet[2].jpg").is_file()
    (out / "sheet[9].jpg").write_bytes(b"a file of mine, named like an output")
    fewer = editgraph_here(*args, "--set", "variants=2", env=env)
    assert fewer.returncode == 0, fewer.stdout
    names = sorted(path.name for path in out.iterdir())
    assert names == ["blue.jpg", "manifest.json", "sheet[0].jpg", "sheet[1].jpg", "sheet[9].jpg"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(entry["node"], entry["status"]) for entry in manifest["edits"]] == [
        ("blue", "cached"), ("sheet[0]", "cached"), ("sheet[1]", "cached")]

"""Tests for repeated batch passes: unchanged folders are left alone yet stay truthful,
plan's history is kept per item, and the report and SQLite memory do not grow per item."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import invoke
from edit_providers import CountingProvider
from PIL import Image
from test_batch import COLOURS, image_folder, journal, write_recipe

import editgraph as eg
from editgraph.errors import GraphError
from editgraph.report import write_batch_report
from editgraph.sources import SourceMemo, prepare_source, prepared_sources
from editgraph.store import DiskStore


def two_passes(tmp_path: Path) -> tuple[Path, Path, Path, CountingProvider]:
    """A batch of three two-edit items run once (generated), in ``tmp_path``."""
    inputs = image_folder(tmp_path / "in", COLOURS)
    recipe = write_recipe(tmp_path)
    provider = CountingProvider()
    eg.batch(recipe, inputs, out=tmp_path / "out", provider=provider, cache=tmp_path / "cache")
    return recipe, inputs, tmp_path / "out", provider


def stamps(folder: Path) -> dict[str, int]:
    """Each file of an item folder and its modification time (ns)."""
    return {path.name: path.stat().st_mtime_ns for path in sorted(folder.iterdir())}


def test_a_cached_pass_leaves_unchanged_folders_as_they_are(tmp_path: Path) -> None:
    """Second pass: nothing paid, no item folder rewritten, outputs listed as before."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    before = {item: stamps(out / item) for item in COLOURS}
    paid = len(provider.calls)
    again = eg.batch(recipe, inputs, out=out, provider=provider, cache=tmp_path / "cache")
    assert len(provider.calls) == paid and again.summary.cached == 3
    assert {item: stamps(out / item) for item in COLOURS} == before
    lines = journal(out)
    first = {line["id"]: line["outputs"] for line in lines[:3]}
    assert {line["id"]: line["outputs"] for line in lines[3:]} == first


def test_a_folder_changed_since_its_save_is_written_again(tmp_path: Path) -> None:
    """A deleted output, an output edited after the manifest, a removed manifest: each
    folder is saved again on the cached pass, and its manifest lists its files."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    (out / "red" / "lifestyle.png").unlink()
    edited = out / "green" / "cutout.png"
    edited.write_bytes(b"not what editgraph wrote")
    later = (out / "green" / "manifest.json").stat().st_mtime_ns + 1_000_000_000
    os.utime(edited, ns=(later, later))
    (out / "blue" / "manifest.json").unlink()
    eg.batch(recipe, inputs, out=out, provider=provider, cache=tmp_path / "cache")
    assert (out / "red" / "lifestyle.png").is_file()
    assert edited.read_bytes() != b"not what editgraph wrote"
    for item in COLOURS:
        manifest = json.loads((out / item / "manifest.json").read_text())
        assert [entry["status"] for entry in manifest["edits"]] == ["cached", "cached"], item
        for entry in manifest["edits"]:
            assert eg.provenance(out / item / entry["file"]).key == entry["key"]


def test_a_folder_whose_recipe_changed_is_written_again(tmp_path: Path) -> None:
    """A pass with another setting (other keys) saves every folder anew."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    first = json.loads((out / "red" / "manifest.json").read_text())
    eg.batch(recipe, inputs, out=out, provider=provider, cache=tmp_path / "cache",
             settings={"colour": "#445566"})
    second = json.loads((out / "red" / "manifest.json").read_text())
    assert [e["key"] for e in second["edits"]] != [e["key"] for e in first["edits"]]
    assert [e["status"] for e in second["edits"]] == ["done", "done"]


def test_plan_history_is_kept_per_item(tmp_path: Path) -> None:
    """Each item's graph has its own name, so its history is its own: after a pass,
    every item's nodes are in the history under the item's name with its own key."""
    recipe, _, out, _ = two_passes(tmp_path)
    store = DiskStore(tmp_path / "cache")
    try:
        for item in COLOURS:
            manifest = json.loads((out / item / "manifest.json").read_text())
            for entry in manifest["edits"]:
                graph = f"{recipe.resolve()}#{item}"
                kept = store.get_history(entry["node"], graph)
                assert kept is not None and kept.key == entry["key"], (item, entry["node"])
    finally:
        store.close()


def test_the_report_keeps_the_latest_line_of_each_item_in_its_first_place(tmp_path: Path) -> None:
    """Three passes' lines (one cut short): one row per item, first-seen order, latest
    status, totals from the latest lines, spend over every line."""
    folder = tmp_path / "out"
    folder.mkdir()
    lines = [
        {"id": "b", "inputs": {}, "status": "failed", "error": "<b>boom</b>", "cost": 0.5},
        {"id": "a", "inputs": {}, "status": "done", "outputs": {"x": "a/x.png"}, "cost": 0.25},
        {"id": "b", "inputs": {}, "status": "done", "outputs": {"x": "b/x.png"}, "cost": 0.25},
        {"id": "a", "inputs": {}, "status": "done", "outputs": {"x": "a/x.png"}, "cached": True},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"id": "c", "sta'
    (folder / "batch.jsonl").write_text(text)
    page = write_batch_report(folder).read_text()
    assert page.index('id="item-1" class="item done"') < page.index("<strong>a</strong>")
    assert page.count('<tr id="item-') == 2 and "boom" not in page
    assert "<strong>2</strong>items" in page and "<strong>2</strong>done" in page
    assert "<strong>0</strong>failed" in page and "<strong>1</strong>fully cached" in page
    assert "<strong>$1.00</strong>" in page
    assert 'src="b/x.png"' in page and 'src="a/x.png"' in page


MEMORY_CHILD = """
import sys
from pathlib import Path
import editgraph as eg
import pytest
from edit_providers import png_bytes

class Instant:
    # Answers at once and keeps nothing (a recording provider grows per item).
    name = "instant"
    async def generate(self, request):
        return eg.GeneratedImage(png_bytes((len(request.prompt) % 256, 9, 9), (16, 16)),
                                 "image/png")

root = Path(sys.argv[1])
(root / "photo.png").write_bytes(png_bytes((10, 20, 30), (32, 24)))
(root / "recipe.py").write_text('''
from pathlib import Path
import editgraph as eg

def recipe(photo: Path, colour: str = "#112233") -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=256, height=256)
    product = g.image(photo, name="product")
    g.edit(f"Put {product} on a backdrop in color {colour}", name="cutout")
    return g
''')

def rss():
    # (anonymous, file-backed) resident bytes: a memory-mapped database is file-backed.
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return tuple(int(fields[name].split()[0]) * 1024 for name in ("RssAnon", "RssFile"))

marks = []
class Watch:
    count = 0
    def started(self, item_id):
        pass
    def finished(self, item, failed, spend):
        Watch.count += 1
        if Watch.count >= 1000 and Watch.count % 750 == 250:  # 1,000, 1,750 ... 4,000
            marks.append(rss())

rows = ({"photo": root / "photo.png", "colour": f"#{n:06x}"} for n in range(int(sys.argv[2])))
eg.batch(root / "recipe.py", rows, out=root / "out", provider=Instant(),
         cache=root / "cache", concurrency=16, progress=Watch())
anon = [(later[0] - earlier[0]) / 750 for earlier, later in zip(marks[1:], marks[2:])]
print(max(mark[1] for mark in marks) - marks[0][1], *anon)
"""


def test_the_batch_store_holds_sqlite_memory_small(tmp_path: Path) -> None:
    """bound_memory: every connection (this thread's, another thread's such as the
    writer's) maps nothing and caches 4 MiB; the directory keeps the defaults."""
    store = DiskStore(tmp_path / "cache")
    try:
        store.bound_memory()

        def pragmas() -> tuple[int, int]:
            connection = store._cache._con
            return (connection.execute("PRAGMA mmap_size").fetchone()[0],
                    connection.execute("PRAGMA cache_size").fetchone()[0])

        assert pragmas() == (0, -4096)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            assert pool.submit(pragmas).result() == (0, -4096)
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as database:
        kept = dict(database.execute("SELECT key, value FROM Settings").fetchall())
    assert kept["sqlite_mmap_size"] == 2**26 and kept["sqlite_cache_size"] == 8192


@pytest.mark.slow
def test_a_long_pass_holds_sqlite_memory_flat(tmp_path: Path) -> None:
    """Over items 1,000 to 4,000: file-backed RSS grows by under 1 MiB (SQLite's 64 MB
    memory map of the database grew it with the file, ~3 MB here), and anonymous RSS by
    under 2 KB per item in at least one of the last three windows of 750 items (a leak
    grows every window). RSS also steps up a MiB or more where the allocator's
    high-water mark rises (a large group commit: SQLite's transient memory), in some
    windows only and more often on a loaded machine (2.6 KB an item in one window of 500
    under load, 0.1 KB in the next), so the least growing window is what is bounded.
    Not 1 KB: the store's memo of validated record texts (4,096 entries) is still
    filling. Total RSS per item over the last 1,500 items, bounded before, measured
    0.2-2.6 KB with the bound and 0.8 KB without it (the page cache is mostly dropped
    at each commit by another connection): it could neither pass reliably nor fail."""
    tests = Path(__file__).resolve().parent
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get(
        "PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tmp_path), "4000"],
                           capture_output=True, text=True, env=environment, timeout=600,
                           check=False)
    assert child.returncode == 0, child.stderr
    mapped, *windows = (float(value) for value in child.stdout.strip().splitlines()[-1].split())
    assert len(windows) == 3, child.stdout
    assert mapped < 1 << 20, f"file-backed RSS grew {mapped:,.0f} bytes: the database is mapped"
    assert min(windows) < 2048, f"anonymous RSS grew {windows} bytes per item in each window"


def test_a_source_memo_answers_as_a_full_decode_does(tmp_path: Path) -> None:
    """Within prepared_sources: the same bytes give the same bytes and media type (a BMP
    its PNG), a pixel limit is keyed apart, and a bad image still fails under its own
    name every time."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buffer, "BMP")
    bmp = buffer.getvalue()
    plain = prepare_source(bmp, "a", "a.bmp")
    token = prepared_sources.set(SourceMemo(size=2))
    try:
        assert prepare_source(bmp, "a", "a.bmp") == plain
        assert prepare_source(bmp, "b", "b.bmp") == plain  # from the memo
        assert plain[1] == "image/png" and plain[0] != bmp
        with pytest.raises(GraphError, match="more than max_source_pixels"):
            prepare_source(bmp, "c", "c.bmp", max_pixels=100)
        for name in ("d", "e"):
            with pytest.raises(GraphError, match=f"source '{name}'"):
                prepare_source(b"not an image", name, f"{name}.png")
    finally:
        prepared_sources.reset(token)


def test_a_batch_gives_the_shared_cache_its_memory_defaults_back(tmp_path: Path) -> None:
    """bound_memory holds for the pass only: afterwards a store of the same folder (the
    process shares the open cache) maps and caches as diskcache sets it."""
    two_passes(tmp_path)
    store = DiskStore(tmp_path / "cache")
    try:
        connection = store._cache._con
        assert connection.execute("PRAGMA mmap_size").fetchone()[0] == 2**26
        assert connection.execute("PRAGMA cache_size").fetchone()[0] == 8192
        store.bound_memory()
        assert store._cache._con.execute("PRAGMA mmap_size").fetchone()[0] == 0
        store.bound_memory(None)
        assert store._cache._con.execute("PRAGMA mmap_size").fetchone()[0] == 2**26
    finally:
        store.close()


def test_the_spend_a_cached_pass_saved_is_committed_before_each_line(tmp_path: Path) -> None:
    """A cached pass holds the saved spend for one commit per group of items; when an
    item's line is written (the progress hears of it after), the cache's total already
    counts it, and the pass's total is every cached edit's cost."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    store = DiskStore(tmp_path / "cache")
    costs = [entry["cost"] for item in COLOURS for entry in
             json.loads((out / item / "manifest.json").read_text())["edits"]]
    per_item = sum(costs) / len(COLOURS)
    before = store.stats().saved_usd
    seen: list[tuple[int, float]] = []

    class Watch:
        def started(self, item_id: str) -> None:
            """Nothing to see."""

        def finished(self, item: eg.BatchItem, failed: int, spend: float) -> None:
            """The journal's lines so far, and the cache's saved total now."""
            lines = len((out / "batch.jsonl").read_bytes().splitlines())
            seen.append((lines, store.stats().saved_usd - before))

    try:
        again = eg.batch(recipe, inputs, out=out, provider=provider,
                         cache=tmp_path / "cache", progress=Watch())
        assert again.summary.cached == 3 and per_item > 0
        for lines, saved in seen:
            assert saved >= (lines - 3) * per_item - 1e-6, seen
        assert store.stats().saved_usd - before == pytest.approx(sum(costs))
    finally:
        store.close()


def test_an_input_checked_on_an_earlier_pass_is_not_decoded_again_unless_changed(
    tmp_path: Path,
) -> None:
    """A pass notes in the cache each input it fully decoded (by content); a later pass
    that reads the same bytes trusts the note. A changed file (other bytes) is decoded
    again, and a file that fails never gets a note: it fails with its error each pass."""
    from editgraph.batch import _checked_note, _CheckedSources

    recipe, inputs, out, provider = two_passes(tmp_path)
    store = DiskStore(tmp_path / "cache")
    try:
        red = (inputs / "red.png").read_bytes()
        key = (hashlib.sha256(red).digest(), eg.Graph().max_source_pixels)
        assert store.note(_checked_note(key)) == "image/png"
        # The note is what is trusted: bytes noted as checked are not decoded.
        garbage = b"\x89PNG\r\n\x1a\n not decodable"
        noted = (hashlib.sha256(garbage).digest(), 1000)
        store.commit_held({_checked_note(noted): "image/png"})
        token = prepared_sources.set(_CheckedSources(store))
        try:
            assert prepare_source(garbage, "g", "g.png", max_pixels=1000) == (
                garbage, "image/png")
            with pytest.raises(GraphError, match="not a readable image"):
                prepare_source(garbage, "g", "g.png", max_pixels=2000)  # another limit
        finally:
            prepared_sources.reset(token)
        # A changed file is checked again: truncated, it fails, twice, with no note.
        (inputs / "red.png").write_bytes(red[: len(red) // 2])
        for _ in range(2):
            again = eg.batch(recipe, inputs, out=out, provider=provider,
                             cache=tmp_path / "cache")
            failed = {item.id: item.error for item in again if item.status == "failed"}
            assert list(failed) == ["red"] and "red.png" in str(failed["red"])
        cut = (hashlib.sha256(red[: len(red) // 2]).digest(), key[1])
        assert store.note(_checked_note(cut)) is None
    finally:
        store.close()


class _Memo:
    """A ScanMemo in memory, counting what it was asked."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.puts = 0

    def get(self) -> str | None:
        return self.text

    def put(self, text: str) -> None:
        self.text = text
        self.puts += 1


def _page(folder: Path, **options: object) -> str:
    """The batch page, without the line saying when it was made."""
    page = write_batch_report(folder, folder / "page.html", **options).read_text()  # type: ignore[arg-type]
    return "\n".join(line for line in page.splitlines() if " UTC · " not in line)


def _line(item: str, status: str, cost: float = 0.0, cached: bool = False) -> str:
    return json.dumps({"id": item, "inputs": {}, "status": status, "cost": cost,
                       "cached": cached, "outputs": {"x": f"{item}/x.png"}}) + "\n"


def test_a_report_carrying_on_from_its_memo_shows_what_a_full_scan_shows(tmp_path: Path) -> None:
    """Lines added after a remembered scan, a line cut short then followed by others,
    and a journal rewritten under the memo: each time the page with the memo is the
    page a scan from the start writes."""
    folder = tmp_path / "out"
    folder.mkdir()
    journal_file = folder / "batch.jsonl"
    journal_file.write_text(_line("a", "failed", 0.5) + _line("b", "done", 0.25))
    memo = _Memo()
    assert _page(folder, memo=memo) == _page(folder) and memo.puts == 1
    with open(journal_file, "a") as handle:
        handle.write(_line("a", "done", 0.25) + _line("c", "moderated"))
    assert _page(folder, memo=memo) == _page(folder) and memo.puts == 2
    assert "<strong>$1.00</strong>" in _page(folder, memo=memo)
    with open(journal_file, "a") as handle:
        handle.write('{"id": "b", "status": "fai')  # a crash mid-line: not remembered
    assert _page(folder, memo=memo) == _page(folder) and memo.puts == 2
    with open(journal_file, "a") as handle:
        handle.write(_line("b", "failed") + _line("d", "done", cached=True))
    assert _page(folder, memo=memo) == _page(folder)
    assert "<strong>1</strong>failed" not in _page(folder)  # the cut line ate b's failure
    # Rewritten in place, same length: the remembered bytes no longer match.
    journal_file.write_text(journal_file.read_text().replace('"a", "inputs": {}, "status": "done"',
                                                             '"a", "inputs": {}, "status": "fail"'))
    assert _page(folder, memo=memo) == _page(folder)
    journal_file.write_text(_line("z", "skipped"))  # shorter than what was remembered
    assert _page(folder, memo=memo) == _page(folder)
    assert "<strong>z</strong>" in _page(folder) and "<strong>a</strong>" not in _page(folder)


def test_a_pass_report_reads_only_the_lines_added_since_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch keeps its report's place in the cache: the next pass's report parses
    only that pass's lines, and its page is the page of a scan from the start."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    eg.batch(recipe, inputs, out=out, provider=provider, cache=tmp_path / "cache")
    from editgraph import report

    parsed: list[object] = []
    real = report.from_json

    def counting(data: bytes | str, **options: object) -> object:
        parsed.append(data)
        return real(data, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(report, "from_json", counting)
    eg.batch(recipe, inputs, out=out, provider=provider, cache=tmp_path / "cache",
             settings={"colour": "#445566"})
    lines = (out / "batch.jsonl").read_bytes().splitlines(keepends=True)
    # The memo (text), this pass's three lines, then each row's latest line once more
    # (rows in the order items were first seen).
    assert isinstance(parsed[0], str) and len(lines) == 9
    assert parsed[1:4] == lines[-3:] and sorted(parsed[4:]) == sorted(lines[-3:])  # type: ignore[type-var]
    # A pass whose rows all read as before (only times differ): its lines are parsed,
    # no row is read again and the page is left as it was.
    eg.batch(recipe, inputs, out=out, provider=provider, cache=tmp_path / "cache",
             settings={"colour": "#445566"})  # now cached, at no cost: rows change
    before = (out / "batch.html").read_bytes()
    parsed.clear()
    eg.batch(recipe, inputs, out=out, provider=provider, cache=tmp_path / "cache",
             settings={"colour": "#445566"})
    lines = (out / "batch.jsonl").read_bytes().splitlines(keepends=True)
    assert isinstance(parsed[0], str) and parsed[1:] == lines[-3:]
    assert (out / "batch.html").read_bytes() == before
    monkeypatch.undo()
    written = "\n".join(line for line in (out / "batch.html").read_text().splitlines()
                        if " UTC · " not in line)
    assert written == _page(out)


def test_a_report_whose_rows_read_as_before_leaves_its_page_else_writes_it(
    tmp_path: Path,
) -> None:
    """With a memo: lines that repeat each item's row (other times) leave the page as
    it is; a row that changes (status, outputs), a new item, a cost (the total spent),
    the page deleted or written over each write it again, as a full scan shows it."""
    folder = tmp_path / "out"
    folder.mkdir()
    journal_file = folder / "batch.jsonl"
    page = folder / "batch.html"

    def timed(item: str, status: str, when: float, **fields: object) -> str:
        entry = {"id": item, "inputs": {}, "status": status, "outputs": {"x": f"{item}/x.png"},
                 "cost": 0.0, "cached": True, "elapsed": when, "finished_at": when}
        return json.dumps({**entry, **fields}) + "\n"

    def append(*lines: str) -> None:
        with open(journal_file, "a") as handle:
            handle.write("".join(lines))

    def stamp() -> tuple[int, int]:
        found = page.stat()
        return found.st_ino, found.st_mtime_ns

    def full() -> str:
        return _page(folder)

    def written() -> str:
        return "\n".join(line for line in page.read_text().splitlines() if " UTC · " not in line)

    memo = _Memo()
    journal_file.write_text(timed("a", "done", 1.0) + timed("b", "failed", 1.0, cached=False,
                                                            error="boom"))
    write_batch_report(folder, memo=memo)
    append(timed("a", "done", 2.0), timed("b", "failed", 2.0, cached=False, error="boom"))
    kept = stamp()
    write_batch_report(folder, memo=memo)
    assert stamp() == kept and written() == full()
    for change in (timed("b", "done", 3.0),  # a status
                   timed("a", "done", 5.0, outputs={"x": "a/y.png"}),  # an output
                   timed("c", "done", 6.0)):  # a new item
        append(change)
        write_batch_report(folder, memo=memo)
        assert stamp() != kept and written() == full(), change
        kept = stamp()
        append(change.replace('"finished_at"', '"elapsed": 9.0, "finished_at"'))
        write_batch_report(folder, memo=memo)
        assert stamp() == kept and written() == full()
    for _ in range(2):  # a cost: the total spent changes, even on a row as it was
        append(timed("b", "done", 4.0, cost=0.25))
        write_batch_report(folder, memo=memo)
        assert stamp() != kept and written() == full()
        kept = stamp()
    page.unlink()
    append(timed("a", "done", 7.0, outputs={"x": "a/y.png"}))
    write_batch_report(folder, memo=memo)
    assert page.is_file() and written() == full()
    page.write_text("edited by hand")
    append(timed("a", "done", 8.0, outputs={"x": "a/y.png"}))
    write_batch_report(folder, memo=memo)
    assert written() == full()
    other = write_batch_report(folder, folder / "other.html", memo=memo)
    append(timed("a", "done", 9.0, outputs={"x": "a/y.png"}))
    assert write_batch_report(folder, memo=memo) == page and written() == full()
    assert other.is_file()


def _history_key(tmp_path: Path, recipe: Path, item: str, node: str) -> str | None:
    store = DiskStore(tmp_path / "cache")
    try:
        kept = store.get_history(node, f"{recipe.resolve()}#{item}")
        return None if kept is None else kept.key
    finally:
        store.close()


def test_a_cached_item_whose_history_names_another_key_has_it_rewritten(tmp_path: Path) -> None:
    """Colour A, then B, then A again (every edit of the third pass a cache hit): the
    third pass pays nothing and each item's history names A's keys again."""
    recipe, inputs, out, provider = two_passes(tmp_path)  # colour #112233
    first = {item: json.loads((out / item / "manifest.json").read_text()) for item in COLOURS}
    options = {"out": out, "provider": provider, "cache": tmp_path / "cache"}
    eg.batch(recipe, inputs, settings={"colour": "#445566"}, **options)
    assert _history_key(tmp_path, recipe, "red", "cutout") != first["red"]["edits"][0]["key"]
    calls = len(provider.calls)
    result = eg.batch(recipe, inputs, **options)
    assert result.summary.cached == 3 and len(provider.calls) == calls
    for item, manifest in first.items():
        for entry in manifest["edits"]:
            assert _history_key(tmp_path, recipe, item, entry["node"]) == entry["key"]


def test_a_cached_pass_keeps_a_source_the_cache_lost_again(tmp_path: Path) -> None:
    """A source image removed from the cache (its edits still cached): the cached pass
    pays nothing and keeps the source again."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    digest = hashlib.sha256((inputs / "red.png").read_bytes()).hexdigest()
    store = DiskStore(tmp_path / "cache")
    try:
        assert store.has_blob(digest)
        store._cache.delete(f"blob:{digest}")
        assert not store.has_blob(digest)
    finally:
        store.close()
    calls = len(provider.calls)
    result = eg.batch(recipe, inputs, out=out, provider=provider, cache=tmp_path / "cache")
    assert result.summary.cached == 3 and len(provider.calls) == calls
    store = DiskStore(tmp_path / "cache")
    try:
        assert store.has_blob(digest)
    finally:
        store.close()


def test_a_cached_pass_verifies_every_hit_and_regenerates_a_damaged_one(tmp_path: Path) -> None:
    """One item's cached image damaged in the cache: the cached pass regenerates exactly
    that edit (under the same key), and the item is done."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    manifest = json.loads((out / "green" / "manifest.json").read_text())
    cutout = manifest["edits"][0]
    store = DiskStore(tmp_path / "cache")
    try:
        store._cache.set(f"blob:{cutout['output_hash']}", b"not the image it was")
    finally:
        store.close()
    calls = len(provider.calls)
    result = eg.batch(recipe, inputs, out=out, provider=provider, cache=tmp_path / "cache")
    assert result.summary.done == 3 and result.summary.cached == 2
    assert sorted(request.node for request in provider.calls[calls:]) == ["cutout"]
    again = json.loads((out / "green" / "manifest.json").read_text())
    assert again["edits"][0]["key"] == cutout["key"]
    assert again["edits"][0]["status"] == "done"  # made again, not served from the cache


def _report_notes(cache: Path) -> dict[str, str]:
    """The batch report notes the cache holds, by name."""
    with sqlite3.connect(cache / "cache.db") as con:
        rows = con.execute("SELECT key, value FROM Cache WHERE key LIKE 'note:batch-report:%'")
        return {str(name): str(value) for name, value in rows.fetchall()}


def test_cache_prune_drops_the_report_notes_of_out_folders_that_are_gone(tmp_path: Path) -> None:
    """Each out folder's report place is a note naming the folder; `cache prune` drops
    those whose folder is gone (and any of an older form), and the others still work."""
    recipe, inputs, out, provider = two_passes(tmp_path)
    cache = tmp_path / "cache"
    gone = tmp_path / "gone"
    eg.batch(recipe, inputs, out=gone, provider=provider, cache=cache)
    folders = sorted(text.partition("\n")[0] for text in _report_notes(cache).values())
    assert folders == sorted([os.path.realpath(out), os.path.realpath(gone)])
    store = DiskStore(cache)
    try:  # a note as an older version wrote it: the scan alone, no folder
        store.commit_held({"batch-report:old": '{"version": 1, "offset": 10}'})
    finally:
        store.close()
    shutil.rmtree(gone)
    result = invoke("cache", "prune", "--older-than", "52w", "--cache", str(cache))
    assert result.exit_code == 0, result.output
    left = _report_notes(cache)
    assert [text.partition("\n")[0] for text in left.values()] == [os.path.realpath(out)]
    kept = next(iter(left.values()))
    eg.batch(recipe, inputs, out=out, provider=provider, cache=cache)
    after = _report_notes(cache)
    assert list(after) == list(left) and after[next(iter(left))] != kept  # carried on

"""The HTML report of a run: one self-contained page to look at or send to a colleague.

The page holds the graph, and per edit its image, rewritten prompt, numbered
references, parameters, seed, key, timing, cost and whether it came from the cache;
then the totals. Images are embedded as ``data:`` URIs (scaled to at most 1024 px; the
full files sit beside the manifest). It is rendered by Jinja2 with autoescaping, so a
prompt or name that contains HTML shows as text, and the page forbids scripts.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import os
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from markupsafe import Markup, escape
from pydantic_core import from_json, to_json

from .display import templates, thumbnail_uri
from .drawing import DrawnEdge, DrawnNode, draw_dag
from .redact import redact
from .runs import Manifest, Run
from .saved import (
    entry_file,
    find_image_bytes,
    read_manifest,
    saved_inputs,
    source_names,
    write_atomically,
)

__all__ = [
    "ScanMemo", "render_report", "report_from_folder", "write_batch_report", "write_run_report",
]

_IMAGE_PX = 1024
_THUMBNAIL_PX = 160

#: Looks up image bytes by content hash (and the recorded source); None when unavailable.
ImageLookup = Callable[[str, str], "bytes | None"]


def write_run_report(run: Run, path: Path) -> Path:
    """Write the report of ``run`` (still in memory) to ``path``."""
    outputs = {result.output_hash: result for result in run.values()}
    given = {
        reference.hash: reference.data
        for result in run.values()
        for reference in result.request.references
        if reference.data is not None
    }

    def lookup(content_hash: str, source: str) -> bytes | None:
        if content_hash in outputs:
            return outputs[content_hash].data  # read from the store only now
        return given.get(content_hash)

    page = render_report(run.manifest, lookup, title="editgraph run")
    return _write(path, page)


def report_from_folder(out_dir: Path, path: Path | None = None) -> Path:
    """Write the report of the run saved in ``out_dir`` (images + ``manifest.json``).

    Writes ``out_dir/report.html`` unless ``path`` is given; returns where it wrote.
    Source images are shown when their recorded paths still hold the same bytes.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir / "manifest.json")
    saved = {entry.record.output_hash: entry for entry in manifest.finished_edits}

    def lookup(content_hash: str, source: str) -> bytes | None:
        entry = saved.get(content_hash)
        if entry is not None:
            data = entry_file(out_dir, entry)
            if data is not None:
                return data
        return find_image_bytes(content_hash, source, folder=out_dir)

    page = render_report(manifest, lookup, title=f"editgraph run · {out_dir.resolve().name}")
    return _write(path if path is not None else out_dir / "report.html", page)


def render_report(manifest: Manifest, lookup: ImageLookup, *, title: str) -> str:
    """The report page of ``manifest``, with images found by ``lookup``.

    The service's messages (failures, the notice) pass through the redactor: a manifest
    written elsewhere, or before a key was known, may quote one.
    """
    manifest = manifest.model_copy(update={
        "notice": None if manifest.notice is None else redact(manifest.notice),
        "failures": {name: redact(message) for name, message in manifest.failures.items()},
    })
    inputs = saved_inputs(manifest)
    sources = source_names(manifest)
    anchors = {
        entry.record.node: f"edit-{number}"
        for number, entry in enumerate(manifest.finished_edits, 1)
    }

    nodes: list[DrawnNode] = []
    drawn_sources: set[str] = set()
    edges: list[DrawnEdge] = []
    thumbnails: dict[str, str | None] = {}

    def thumbnail(content_hash: str, source: str) -> str | None:
        if content_hash not in thumbnails:
            data = lookup(content_hash, source)
            thumbnails[content_hash] = (
                None if data is None else thumbnail_uri(data, _THUMBNAIL_PX)
            )
        return thumbnails[content_hash]

    edits: list[dict[str, Any]] = []
    for entry in manifest.finished_edits:
        record = entry.record
        references = []
        for saved in inputs[record.node]:
            reference = saved.reference
            if saved.upstream is None:
                name = sources[reference.hash]
                if name not in drawn_sources:
                    drawn_sources.add(name)
                    nodes.append(DrawnNode(name, "source", reference.source))
            else:
                name = saved.upstream
            edges.append(DrawnEdge(name, record.node, saved.index))
            references.append({
                "index": saved.index,
                "source": reference.source,
                "hash": reference.hash,
                "upstream": saved.upstream,
                "anchor": anchors.get(saved.upstream or ""),
                "thumbnail": thumbnail(reference.hash, reference.source),
            })
        image = lookup(record.output_hash, record.node)
        edits.append({
            "entry": entry,
            "anchor": anchors[record.node],
            "image": None if image is None else thumbnail_uri(image, _IMAGE_PX, quality=88),
            "references": references,
            "parameters": {
                name: value for name, value in record.parameters.items() if value is not None
            },
            "made": _when(record.created_at),
        })
    nodes += [
        DrawnNode(entry.record.node, entry.record.kind, entry.record.prompt, cached=entry.cached,
                  href=f"#{anchors[entry.record.node]}")
        for entry in manifest.finished_edits
    ]
    elapsed = sum(entry.record.elapsed for entry in manifest.finished_edits if not entry.cached)
    page = templates.get_template("report.html.j2").render(
        title=title,
        manifest=manifest,
        made=_when(manifest.created_at),
        drawing=draw_dag(nodes, edges),
        edits=edits,
        elapsed=elapsed,
        sources=len(drawn_sources),
    )
    return page


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


class ScanMemo(Protocol):
    """Where ``write_batch_report`` keeps what its scan of the journal found, to carry
    on from there next time (a batch keeps it in its cache as a note)."""

    def get(self) -> str | None:
        """What was put last, or None."""

    def put(self, text: str) -> None:
        """Keep ``text`` (it may fail silently: the next scan then starts over)."""


def write_batch_report(
    folder: Path, path: Path | None = None, *, memo: ScanMemo | None = None
) -> Path:
    """Write ``batch.html`` for the batch whose ``batch.jsonl`` is in ``folder``.

    One row per item (its latest status over every pass): the input beside its outputs,
    linked as the files in the folder, and the error of an item that did not finish.
    Memory is one small integer per item (where its latest line starts, its status
    and whether it was cached), whatever the number of items and passes; the page is
    written as it renders.

    With ``memo``, the scan carries on from where the last one ended when the journal
    still begins with exactly the bytes that scan read (checked by their hash), so a
    pass reads only the lines added since; anything else is a scan from the start.
    When every line added since shows its item's row as it was (a cached pass: the
    same status, outputs, cost and error; only times differ), the totals are the same
    and the page the memo saw written is still there untouched (the same file, size and
    modification time), the page is left as it is: its rows would be the same bytes.
    """
    folder = Path(folder)
    absolute = os.path.abspath(folder)
    journal_path = folder / "batch.jsonl"
    with open(journal_path, "rb") as journal:
        scan = _resumed_scan(journal, memo) or _Scan()
        latest = scan.latest
        counts = scan.counts
        cached, spent, offset = scan.cached, scan.spent, scan.offset
        digest = scan.digest if memo is not None else None
        journal.seek(offset)
        complete = True
        # Whether a row differs from the page the memo saw (a scan from the start: yes).
        changed = scan.offset == 0
        for line in journal:
            here, offset = offset, offset + len(line)
            if digest is not None:
                digest.update(line)
            try:
                entry = from_json(line, cache_strings="keys")
            except ValueError:
                entry = None  # a line cut short by a crash
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                spent += _number(entry.get("cost"))
                status = _STATUSES.get(entry.get("status"), len(_STATUSES))  # type: ignore[arg-type]
                row = zlib.crc32(to_json([entry.get(name) for name in _ROW_FIELDS]))
                packed = (((row << _OFFSET_BITS) | here) << 4) | status * 2 | bool(
                    entry.get("cached"))
                earlier = latest.get(entry["id"])
                if earlier is not None:
                    counts[(earlier >> 1) & 7] -= 1
                    cached -= earlier & 1
                if earlier is None or earlier >> _ROW_SHIFT != row:
                    changed = True
                latest[entry["id"]] = packed
                counts[status] += 1
                cached += packed & 1
            if not line.endswith(b"\n"):
                # The end of this scan: a line still being written by another process
                # (its rest, read next, would look like a line of its own) or cut short.
                complete = False
                break
    target = Path(path if path is not None else folder / "batch.html")
    # The page the memo saw written, as (its path, the folder as shown, size, mtime, inode).
    page = [os.fspath(target), str(folder), *_page_stamp(target)]
    if (not changed and complete and spent == scan.spent and scan.page == page
            and memo is not None):
        if offset > scan.offset:
            memo.put(_scan_text(offset, digest, latest, counts, cached, spent, page))
        return target
    totals: dict[str, float] = {"count": len(latest), "cached": cached, "spent": spent}
    totals.update({name: counts[index] for name, index in _STATUSES.items()})

    def rows() -> Iterator[Markup]:
        with open(journal_path, "rb") as journal:
            for number, packed in enumerate(latest.values(), 1):
                journal.seek((packed >> 4) & _OFFSET_MASK)
                entry = from_json(journal.readline(), cache_strings="keys")
                yield _batch_row(number, entry, absolute)

    chunks = templates.get_template("batch.html.j2").generate(
        title=f"editgraph batch · {folder.resolve().name}",
        made=_when(datetime.datetime.now(datetime.timezone.utc).timestamp()),
        folder=str(folder),
        totals=totals,
        rows=rows(),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, (chunk.encode("utf-8") for chunk in chunks))  # streamed
    if digest is not None and memo is not None and complete and offset > scan.offset:
        # Kept only up to a line's end: a line cut short is read again, with whatever
        # follows it, as a scan from the start would read it.
        page[2:] = _page_stamp(target)
        memo.put(_scan_text(offset, digest, latest, counts, cached, spent, page))
    return target


#: An item's statuses, as packed in ``write_batch_report`` (any other counts as none).
_STATUSES = {"done": 0, "failed": 1, "moderated": 2, "skipped": 3}
_SCAN_VERSION = 2
#: What an item's row shows of its line (a line's times are not shown).
_ROW_FIELDS = ("id", "status", "cached", "cost", "inputs", "outputs", "error",
               "possibly_billed_twice", "possibly_billed")
#: An item packed as (crc32 of its row's fields, where its latest line starts, its
#: status, whether it was cached); the offset takes ``_OFFSET_BITS`` bits (256 TB).
_OFFSET_BITS = 48
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_ROW_SHIFT = _OFFSET_BITS + 4


def _page_stamp(page: Path) -> list[int]:
    """The page's size, modification time (ns) and inode; empty when it is not there."""
    try:
        found = os.stat(page)
    except OSError:
        return []
    return [found.st_size, found.st_mtime_ns, found.st_ino]


def _scan_text(offset: int, digest: Any, latest: dict[str, int], counts: list[int],
               cached: int, spent: float, page: list[Any]) -> str:
    """A scan's place and findings, as ``_resumed_scan`` reads them back."""
    return to_json({
        "version": _SCAN_VERSION, "offset": offset, "digest": digest.hexdigest(),
        "ids": list(latest), "packed": list(latest.values()), "counts": counts,
        "cached": cached, "spent": spent, "page": page,
    }).decode()


@dataclasses.dataclass
class _Scan:
    """What a scan of the journal found up to ``offset`` (see ``write_batch_report``)."""

    latest: dict[str, int] = dataclasses.field(default_factory=dict)
    counts: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(_STATUSES) + 1))
    cached: int = 0
    spent: float = 0.0
    offset: int = 0
    digest: Any = dataclasses.field(default_factory=hashlib.sha256)
    #: The page written after that scan (see ``write_batch_report``), or None.
    page: list[Any] | None = None


def _resumed_scan(journal: BinaryIO, memo: ScanMemo | None) -> _Scan | None:
    """The scan ``memo`` kept, when ``journal`` begins with the very bytes it read."""
    if memo is None:
        return None
    try:
        kept = memo.get()
        if kept is None:
            return None
        state = from_json(kept)
        offset = state["offset"]
        if state["version"] != _SCAN_VERSION or not 0 < offset <= os.fstat(journal.fileno()).st_size:
            return None
        digest = hashlib.sha256()
        left = offset
        while left:
            chunk = journal.read(min(left, 1 << 20))
            if not chunk:
                return None
            digest.update(chunk)
            left -= len(chunk)
        if digest.hexdigest() != state["digest"]:
            return None
        counts = [int(count) for count in state["counts"]]
        if len(counts) != len(_STATUSES) + 1 or len(state["ids"]) != len(state["packed"]):
            return None
        return _Scan(latest=dict(zip(state["ids"], state["packed"], strict=True)),
                     counts=counts, cached=int(state["cached"]), spent=float(state["spent"]),
                     offset=offset, digest=digest,
                     page=state["page"] if isinstance(state.get("page"), list) else None)
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _batch_row(number: int, entry: dict[str, Any], absolute: str) -> Markup:
    """One item's row of ``batch.html``: every value escaped (ids, paths, errors are
    text). Built directly rather than by a template loop: a page may have 100,000 rows."""
    status = escape(entry.get("status"))
    inputs = entry.get("inputs") or {}
    outputs = entry.get("outputs") or {}
    figures_in = "".join(
        _figure(name, _link(absolute, value)) for name, value in inputs.items()
        if isinstance(value, str) and os.path.splitext(value)[1].lower() in _IMAGE_SUFFIXES
    )
    figures_out = "".join(
        _figure(name, _output_link(absolute, value))
        for name, value in outputs.items() if isinstance(value, str)
    )
    error = entry.get("error")
    for field, label in (("possibly_billed_twice", "possibly billed twice"),
                         ("possibly_billed", "possibly billed, no image delivered")):
        names = entry.get(field)
        if names and isinstance(names, list):
            note = f"{label}: {', '.join(str(name) for name in names)}"
            error = f"{error}\n{note}" if error else note
    return Markup(
        f'<tr id="item-{number}" class="item {status}">\n'
        f'<td><strong>{escape(entry["id"])}</strong><br>'
        f'<span class="status {status}">{status}</span>'
        + (' <span class="muted">cached</span>' if entry.get("cached") else "")
        + f'<div class="muted">${_number(entry.get("cost")):.4f}</div></td>\n'
        f"<td>{figures_in}</td>\n<td>"
        + (f'<div class="error">{escape(error)}</div>' if error else "")
        + f'<div class="outputs">{figures_out}</div></td>\n</tr>'
    )


def _figure(name: str, link: str) -> str:
    name = escape(name)
    return (f'<figure><img loading="lazy" alt="{name}" src="{escape(link)}">'
            f"<figcaption>{name}</figcaption></figure>")


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


def _link(folder: str, file: str) -> str:
    """A relative link from ``folder`` (absolute) to ``file`` (a file URI across drives)."""
    target = os.path.abspath(file)
    parent, name = os.path.split(target)
    try:
        # Inputs share a few folders: the way to each is worked out once per page.
        way = _way_to(parent, folder)
    except ValueError:
        return Path(target).as_uri()
    return way + urllib.parse.quote(name)


@functools.lru_cache(maxsize=64)
def _way_to(parent: str, folder: str) -> str:
    """The quoted relative link from ``folder`` to the folder ``parent`` (both absolute,
    normalised), ending in "/" (empty when they are the same)."""
    relative = os.path.relpath(parent, folder)
    if relative == os.curdir:
        return ""
    return urllib.parse.quote(relative.replace(os.sep, "/")) + "/"


def _output_link(folder: str, file: str) -> str:
    """A link to ``file``, given relative to ``folder`` (as the journal lists outputs)."""
    if not os.path.isabs(file) and ".." not in file.replace(os.sep, "/").split("/"):
        return urllib.parse.quote(os.path.normpath(file).replace(os.sep, "/"))
    return _link(folder, os.path.join(folder, file))


def _write(path: Path, page: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, page.encode("utf-8"))
    return path

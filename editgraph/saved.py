"""Saved runs: a run written to a folder, and read back.

``save_run`` writes one image per edit (with its provenance embedded) and
``manifest.json``; every file, the report's page included, is written through
``write_atomically``. The report and replay work from those files alone: an input whose
hash is another edit's ``output_hash`` is that edit's output (an edge of the graph); any
other input is a source.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
from pydantic import ValidationError

from .errors import GraphError, ProvenanceError, StoreError
from .keys import content_hash
from .provenance import embed_provenance, remove_provenance
from .requests import Reference
from .runs import Manifest, ManifestEntry, NodeStatus, Run
from .sources import NODE_NAME, URL_SCHEME, fetch, safe_stem
from .store import Store

__all__ = [
    "SavedInput",
    "entry_file",
    "find_image_bytes",
    "read_manifest",
    "save_run",
    "saved_inputs",
    "source_names",
    "write_atomically",
]



def save_run(run: Run, folder: Path) -> Path:
    """Write one image per edit of ``run``, named after the node, and ``manifest.json``.

    Each PNG and JPEG carries its edit's record (``eg.provenance(path)`` reads it). Every
    file is written atomically, so an interrupted save never leaves a truncated image
    under its final name.

    The folder stays truthful: the manifest lists every edit of the graph with its
    status; an edit that did not finish keeps the file an earlier save left for it,
    listed as stale (with the key that made it); files an earlier manifest listed for
    edits no longer in the graph are removed; files no manifest listed are never touched.
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest = run.manifest
    earlier = _earlier_files(folder)
    for result in run.values():
        write_atomically(folder / result.filename, embed_provenance(result.data, result.record))
    listed: list[ManifestEntry | NodeStatus] = []
    for entry in manifest.edits:
        if isinstance(entry, NodeStatus) and entry.node in earlier:
            file, key = earlier[entry.node]
            entry = entry.model_copy(update={"stale": True, "file": file, "key": key})
        listed.append(entry)
    manifest = manifest.model_copy(update={"edits": listed})
    write_atomically(folder / "manifest.json", manifest.model_dump_json(indent=2).encode())
    # Files an earlier manifest listed for edits no longer in the graph (or under another
    # name now) go; files no manifest listed are never touched.
    current = {entry.file for entry in listed if entry.file is not None}
    for file, _ in earlier.values():
        if file not in current:
            (folder / file).unlink(missing_ok=True)
    return folder


def _earlier_files(folder: Path) -> dict[str, tuple[str, str]]:
    """node -> (file, key) of every image the manifest already in ``folder`` lists and
    that is still there; {} when there is none (or it is not one editgraph wrote)."""
    try:
        earlier = Manifest.model_validate_json((folder / "manifest.json").read_bytes())
    except (OSError, ValueError):  # pydantic's ValidationError included
        return {}
    files = {}
    for entry in earlier.edits:
        file, key = entry.file, entry.key
        # Only plain names inside the folder: a hand-edited manifest cannot point outside.
        if file is None or key is None or Path(file).name != file or file == "manifest.json":
            continue
        if (folder / file).is_file():
            files[entry.node] = (file, key)
    return files


def write_atomically(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or chunks of bytes written as they come: a large page never
    sits whole in memory) to ``path`` through a new temporary file in the same folder,
    then rename it into place: readers see the old file or the whole new one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            if isinstance(data, bytes):
                file.write(data)
            else:
                file.writelines(data)
        os.chmod(temporary, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SavedInput:
    """One input of a saved edit: image ``index``, made by edit ``upstream`` or a source."""

    index: int
    reference: Reference
    upstream: str | None


def read_manifest(path: Path) -> Manifest:
    """The manifest in ``path`` (a ``manifest.json`` or the folder holding one).

    Raises GraphError when it cannot be read or is not a manifest editgraph wrote.
    """
    if path.is_dir():
        path = path / "manifest.json"
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise GraphError(f"cannot read {path} ({exc.strerror or exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise GraphError(
            f"{path} is not a manifest editgraph wrote ({exc.error_count()} problem(s), "
            f"first: {where + ': ' if where else ''}{first['msg']})"
        ) from exc


def saved_inputs(manifest: Manifest) -> dict[str, list[SavedInput]]:
    """Each edit's inputs in order, each with the earlier edit that made it, if any."""
    made_by: dict[str, list[str]] = {}
    inputs: dict[str, list[SavedInput]] = {}
    for entry in manifest.finished_edits:
        record = entry.record
        found = []
        for index, reference in enumerate(record.references, 1):
            makers = made_by.get(reference.hash, [])
            upstream = reference.source if reference.source in makers else next(iter(makers), None)
            found.append(SavedInput(index, reference, upstream))
        inputs[record.node] = found
        made_by.setdefault(record.output_hash, []).append(record.node)
    return inputs


def source_names(manifest: Manifest) -> dict[str, str]:
    """A node name for each distinct source of the run (by content hash), e.g. ``car``.

    Names come from the source's file name, made unique against the edits and each other.
    """
    inputs = saved_inputs(manifest)
    taken = {entry.record.node for entry in manifest.finished_edits}
    names: dict[str, str] = {}
    for entry in manifest.finished_edits:
        for saved in inputs[entry.record.node]:
            if saved.upstream is not None or saved.reference.hash in names:
                continue
            stem = _stem(saved.reference.source)
            name, number = stem, 1
            while name in taken:
                number += 1
                name = f"{stem}-{number}"
            taken.add(name)
            names[saved.reference.hash] = name
    return names


def find_image_bytes(
    reference_hash: str,
    source: str,
    *,
    folder: Path,
    store: Store | None = None,
    fetch_urls: bool = False,
) -> bytes | None:
    """The bytes with ``reference_hash``, found without generating anything, or None.

    Looked for, in order: the store's blob; an image of the saved run in ``folder`` named
    after ``source`` (its embedded record removed); the recorded ``source`` as a path (as
    given, then relative to ``folder`` and its parents); with ``fetch_urls``, as a URL.
    Whatever is found must have the recorded hash.
    """
    if store is not None:
        try:
            return store.get_blob(reference_hash)
        except StoreError:
            pass  # not in the cache: look for the file
    if URL_SCHEME.match(source):
        return _fetch(source, reference_hash) if fetch_urls else None
    candidates = sorted(folder.glob(f"{_glob_escape(source)}.*")) if _is_name(source) else []
    path = Path(source).expanduser()
    if path.is_absolute():
        candidates.append(path)
    else:
        candidates += [Path.cwd() / path, folder / path, folder.parent / path,
                       folder.parent.parent / path]
    for candidate in candidates:
        try:
            data = remove_provenance(candidate.read_bytes())
        except (OSError, ValueError, ProvenanceError):
            continue  # absent, unreadable or not an image here: try the next place
        if content_hash(data) == reference_hash:
            return data
    return None


def entry_file(folder: Path, entry: ManifestEntry) -> bytes | None:
    """The image file the save wrote for ``entry``, as saved, or None when it is gone.

    ``entry.file`` comes from a manifest that may have been written elsewhere: it must
    name a file inside ``folder`` (no absolute path, no ``..``, no NUL), else
    ProvenanceError naming the node and the field.
    """
    path = _inside(folder, entry.file, f"node {entry.node!r}: file")
    try:
        return path.read_bytes()
    except OSError:
        return None


def _inside(folder: Path, name: str, field: str) -> Path:
    """``folder / name`` when that resolves to a file inside ``folder``; else ProvenanceError."""
    if "\x00" in name or Path(name).is_absolute() or ".." in Path(name).parts or not name:
        raise ProvenanceError(
            f"{field}: {name[:80]!r} is not a file name inside the run folder; the manifest "
            "was not written by editgraph, or was edited"
        )
    base = folder.resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(base):
        raise ProvenanceError(
            f"{field}: {name[:80]!r} leads outside the run folder (a link?); refusing to read it"
        )
    return path


def _fetch(url: str, reference_hash: str) -> bytes | None:
    try:
        response = fetch(url)
    except httpx.HTTPError:
        return None  # unreachable now: the caller reports the input as not found
    if response.is_error or content_hash(response.content) != reference_hash:
        return None
    return response.content


def _stem(source: str) -> str:
    if source.startswith("<"):  # "<bytes>", "<PIL image>": no file name to go by
        return "image"
    if URL_SCHEME.match(source):
        source = urlparse(source).path
    return safe_stem(Path(source).stem)


def _is_name(source: str) -> bool:
    return bool(NODE_NAME.fullmatch(source))


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", text)

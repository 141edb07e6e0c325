"""Runs and their results: Run, NodeResult, and the manifest a saved run carries.

Writing a run to a folder is :mod:`editgraph.saved`; the report is :mod:`editgraph.report`.
"""

from __future__ import annotations

import io
import mimetypes
import os
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    SerializerFunctionWrapHandler,
    Tag,
    model_serializer,
    model_validator,
)

from ._version import __version__
from .nodes import EditNode, OpNode, SourceNode
from .records import (
    HOSTING_FIELDS,
    RECORD_VERSION,
    EditRecord,
    RecordFacts,
    Timestamp,
    migrate_record,
)
from .redact import redact
from .requests import EditRequest, OpRequest, Reference, Submission

__all__ = ["Manifest", "ManifestEntry", "NodeResult", "NodeStatus", "Run"]


class NodeResult:
    """The outcome of one edit or op: its image, the exact request, and how it was obtained.

    An op's ``request`` is an :class:`~editgraph.requests.OpRequest`.

    ``record`` is the edit's :class:`~editgraph.records.EditRecord` (as the cache and the
    manifest keep it); ``elapsed``, ``cost`` and ``unknown_outcomes`` are this run's (0
    when cached). The image bytes stay in the store until asked for (``data``,
    ``image``), so a run of a thousand edits does not hold a thousand images in memory.
    """

    # The record's facts are kept as plain slots, and the request and the record are
    # built on demand from the node and its inputs (the graph's node, and the sources
    # and results it took): a pydantic model per edit would triple what a finished run
    # holds per edit.
    __slots__ = (
        "_charged",
        "_cost",
        "_data",
        "_editgraph_version",
        "_elapsed",
        "_image",
        "_inputs",
        "_load",
        "_memory_only",
        "_node",
        "_request",
        "_seed",
        "_size_bytes",
        "_unknown_outcomes",
        "cached",
        "created_at",
        "height",
        "key",
        "media_type",
        "output_hash",
        "provider",
        "url",
        "url_expires_at",
        "width",
    )

    def __init__(
        self,
        record: EditRecord | RecordFacts,
        *,
        request: EditRequest | OpRequest | None = None,
        node: EditNode | OpNode | None = None,
        inputs: Sequence[NodeResult | SourceNode] = (),
        cached: bool,
        load: Callable[[str], bytes],
    ) -> None:
        if request is None and node is None:
            raise TypeError("NodeResult needs the request, or the node and its inputs")
        self._request = request
        self._node = node
        self._inputs = tuple(inputs)
        self._seed = record.seed
        self.cached = cached
        self.key = record.key
        self.provider = sys.intern(record.provider)  # one string per run, not per edit
        self.output_hash = record.output_hash
        self.media_type = sys.intern(record.media_type)
        self.width = record.width
        self.height = record.height
        self.url = record.url
        self.url_expires_at = record.url_expires_at
        self.created_at = record.created_at
        self._elapsed = record.elapsed
        self._cost = record.cost
        self._charged = record.charged
        self._unknown_outcomes = record.unknown_outcomes
        self._size_bytes = record.size_bytes
        self._editgraph_version = sys.intern(record.editgraph_version)
        self._load = load
        self._data: bytes | None = None
        self._memory_only = False
        self._image: Image.Image | None = None

    def __repr__(self) -> str:
        state = "cached" if self.cached else f"ran in {self.elapsed:.2f}s"
        return f"<NodeResult {self.name!r} {self.width}x{self.height} {state} key={self.key[:12]}>"

    @property
    def name(self) -> str:
        """The edit's node name."""
        if self._node is not None:
            return self._node.name
        assert self._request is not None
        return self._request.node

    @property
    def request(self) -> EditRequest | OpRequest:
        """The exact request this result was made by (built anew on each use)."""
        if self._request is not None:
            return self._request
        node = self._node
        references = [_reference_to(given) for given in self._inputs]
        if isinstance(node, OpNode):
            return node.request(references)
        assert isinstance(node, EditNode)
        # The record's seed: the provider may have had to change the node's.
        return node.request(references, self._seed)

    @property
    def record(self) -> EditRecord:
        """The record of this edit, as the cache keeps it and the manifest lists it."""
        return EditRecord.of(
            self.request, key=self.key, provider=self.provider,
            editgraph_version=self._editgraph_version, output_hash=self.output_hash,
            media_type=self.media_type, width=self.width, height=self.height,
            size_bytes=self._size_bytes, elapsed=self._elapsed, cost=self._cost,
            charged=self._charged, unknown_outcomes=self._unknown_outcomes, url=self.url,
            url_expires_at=self.url_expires_at, created_at=self.created_at,
        )

    @property
    def elapsed(self) -> float:
        """Seconds this run spent generating it (0 when cached)."""
        return 0.0 if self.cached else self._elapsed

    @property
    def cost(self) -> float:
        """USD this run spent on it (0 when cached): the service's charge where it says
        (BFL), else the estimate."""
        return 0.0 if self.cached else self._cost

    @property
    def unknown_outcomes(self) -> int:
        """Tries of this run whose outcome was lost (each may have been billed)."""
        return 0 if self.cached else self._unknown_outcomes

    def keep_in_memory(self, data: bytes) -> None:
        """Hold the image bytes here: the store could not keep them."""
        self._data = data
        self._memory_only = True

    @property
    def in_memory_only(self) -> bool:
        """Whether the image is held here only (the store could not keep it)."""
        return self._memory_only

    @property
    def data(self) -> bytes:
        """The encoded image bytes, read from the store on first use."""
        if self._data is None:
            self._data = self._load(self.output_hash)
        return self._data

    @property
    def image(self) -> Image.Image:
        """The image as a decoded PIL image."""
        if self._image is None:
            image = Image.open(io.BytesIO(self.data))
            image.load()
            self._image = image
        return self._image

    @property
    def filename(self) -> str:
        """The file name ``run.save`` gives this result."""
        return self.name + (mimetypes.guess_extension(self.media_type) or ".img")

    def _repr_html_(self) -> str:
        from .display import node_result_html  # display renders results; imported on use

        return node_result_html(self)


class ManifestEntry(BaseModel):
    """One edit or op of a saved run: its record, the file it was saved as, and whether
    this run took it from the cache (an op's record has ``kind="op"``).

    In ``manifest.json`` an entry is one flat object: the record's fields, ``file``,
    ``cached`` and ``estimated_cost`` (what this run spent on it: 0 when cached); in
    Python the record's fields read through the entry too (``entry.node``).
    """

    model_config = ConfigDict(frozen=True)

    file: str
    cached: bool
    record: EditRecord

    @property
    def estimated_cost(self) -> float:
        """Estimated USD this run spent on the edit (0 when cached)."""
        return 0.0 if self.cached else self.record.cost

    @property
    def status(self) -> Literal["done", "cached"]:
        """"done" (generated by this run) or "cached" (served from the cache)."""
        return "cached" if self.cached else "done"

    def __getattr__(self, name: str) -> Any:
        # The record's fields read through the entry as well (``entry.node``), as they
        # did when an entry was a flat model.
        if name in EditRecord.model_fields:
            return getattr(self.record, name)
        return super().__getattr__(name)  # type: ignore[misc]

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "record" in data:
            return data
        fields = dict(data)
        fields.pop("status", None)  # derived: see status
        file, cached = fields.pop("file", None), fields.pop("cached", None)
        if "cost" in fields:
            fields.pop("estimated_cost", None)  # derived: see estimated_cost
        return {"file": file, "cached": cached, "record": migrate_record(fields)}

    @model_serializer(mode="wrap")
    def _flatten(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        fields = serialize(self)
        record = {k: v for k, v in fields.pop("record").items() if k not in HOSTING_FIELDS}
        return {"node": record.pop("node"), "status": self.status, "file": fields["file"],
                "cached": fields["cached"], **record, "estimated_cost": self.estimated_cost}


class NodeStatus(BaseModel):
    """An edit of the graph that did not finish in the run: why, and any earlier file.

    ``failed`` carries the error; ``not run`` is an edit an interrupt, the budget or a
    cache-only miss kept from starting. When an earlier save left a file for it in the
    folder, that file stays, listed with ``stale: true`` and the earlier ``key``.
    """

    model_config = ConfigDict(frozen=True)

    node: str
    status: Literal["failed", "not run"]
    error: str | None = None
    stale: bool = False
    file: str | None = None
    key: str | None = None


def _entry_kind(value: Any) -> str:
    status = value.get("status", "done") if isinstance(value, dict) else value.status
    return "unfinished" if status in ("failed", "not run") else "finished"


class Manifest(BaseModel):
    """The reproducible record of a run: every request, key, seed, hash and cost.

    ``edits`` lists every edit of the graph in order: the finished ones as full records
    (``ManifestEntry``), the others as ``NodeStatus``; ``finished_edits`` is the first.
    """

    model_config = ConfigDict(frozen=True)

    schema_version: int = RECORD_VERSION
    editgraph_version: str
    provider: str
    notice: str | None = None
    created_at: Timestamp
    edits: list[
        Annotated[
            Annotated[ManifestEntry, Tag("finished")] | Annotated[NodeStatus, Tag("unfinished")],
            Discriminator(_entry_kind),
        ]
    ]
    failures: dict[str, str]
    edits_run: int
    edits_cached: int
    estimated_cost: float
    possibly_billed_twice: list[str]
    #: Paid tasks whose result could no longer be had (journaled past its lifetime).
    billed_not_delivered: list[Submission] = []

    @model_validator(mode="before")
    @classmethod
    def _known_version(cls, data: Any) -> Any:
        # 0.1.0 wrote no version (its entries are migrated one by one); refuse newer ones.
        version = data.get("schema_version", RECORD_VERSION) if isinstance(data, dict) else None
        if isinstance(version, int) and version > RECORD_VERSION:
            raise ValueError(
                f"schema_version {version}: written by a newer editgraph (this one reads up "
                f"to {RECORD_VERSION}); upgrade editgraph"
            )
        return data

    @property
    def finished_edits(self) -> list[ManifestEntry]:
        """The edits that finished (done or cached): those with an image of this run."""
        return [entry for entry in self.edits if isinstance(entry, ManifestEntry)]


class Run(Mapping[str, NodeResult]):
    """The results of a run: a mapping from node name to NodeResult in topological order.

    Edits and ops appear in it (a region edit's ``NAME.crop``, ``NAME.edit`` and
    ``NAME`` included), not sources. Failed edits are absent; ``failures`` maps
    them to their errors.
    """

    def __init__(
        self,
        results: Mapping[str, NodeResult],
        *,
        provider: str,
        failures: Mapping[str, BaseException] | None = None,
        notice: str | None = None,
        billed_not_delivered: Sequence[Submission] = (),
        resumed: Collection[str] = (),
    ) -> None:
        self._results = dict(results)
        self.provider = provider
        self.failures = dict(failures or {})
        self.notice = notice
        #: Paid tasks (from the submission journal) whose result could not be had.
        self.billed_not_delivered = list(billed_not_delivered)
        #: Edits that collected a journaled task instead of submitting a new one.
        self.resumed = frozenset(resumed)
        self.created_at = time.time()
        #: Damaged cache entries (records and images) removed during this run; the
        #: edits they held ran again.
        self.repaired = 0
        #: Results this run made but the store could not keep (disk full, say), with
        #: the reason: they are in the run (and saved by ``save``), not in the cache.
        self.uncached: dict[str, str] = {}
        #: Set when SIGINT/SIGTERM stopped the run: the signal's number, whether a second
        #: SIGINT abandoned it, the edits being generated when it came, and those that
        #: did not start.
        self.interrupted: int | None = None
        self.abandoned = False
        self.in_flight: list[str] = []
        self.not_run: list[str] = []
        #: Every edit of the graph in order (the engine sets it; else results + failures).
        self.nodes: list[str] = [*self._results, *self.failures]

    def __getitem__(self, name: str) -> NodeResult:
        return self._results[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __repr__(self) -> str:
        cached = sum(result.cached for result in self._results.values())
        return (
            f"<Run {len(self)} edits: {len(self) - cached} run, {cached} cached, "
            f"{len(self.failures)} failed, ${self.cost:.2f} estimated>"
        )

    @property
    def cost(self) -> float:
        """USD spent by this run: what the service charged where it says (BFL), else the
        estimate (cached edits cost nothing)."""
        return round(sum(result.cost for result in self._results.values()), 6)

    @property
    def manifest(self) -> Manifest:
        """The reproducible record of this run."""
        entries = [
            ManifestEntry(file=result.filename, cached=result.cached, record=result.record)
            for result in self._results.values()
        ]
        finished = {entry.node: entry for entry in entries}
        listed: list[ManifestEntry | NodeStatus] = []
        for name in dict.fromkeys([*self.nodes, *self._results, *self.failures]):
            if name in finished:
                listed.append(finished[name])
            elif name in self.failures and not _kept_from_starting(self.failures[name]):
                listed.append(NodeStatus(node=name, status="failed",
                                         error=redact(str(self.failures[name]))))
            else:
                error = self.failures.get(name)
                listed.append(NodeStatus(node=name, status="not run",
                                         error=None if error is None else redact(str(error))))
        return Manifest(
            editgraph_version=__version__,
            provider=self.provider,
            notice=self.notice,
            created_at=self.created_at,
            edits=listed,
            failures={name: redact(str(error)) for name, error in self.failures.items()},
            edits_run=sum(not entry.cached for entry in entries),
            edits_cached=sum(entry.cached for entry in entries),
            estimated_cost=self.cost,
            possibly_billed_twice=[
                result.name for result in self._results.values() if result.unknown_outcomes
            ]
            + [
                name
                for name, error in self.failures.items()
                if getattr(error, "possibly_billed", False)
            ],
            billed_not_delivered=self.billed_not_delivered,
        )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write one image per edit, named after the node, and ``manifest.json``.

        Each PNG and JPEG carries its provenance record (``eg.provenance(path)`` reads
        it), so its bytes differ from ``result.data`` by that block only. See
        :func:`editgraph.saved.save_run`.
        """
        from .saved import save_run  # saved runs are written by saved.py; imported on use

        return save_run(self, Path(directory))

    def report(self, path: str | os.PathLike[str]) -> Path:
        """Write a self-contained HTML report of this run to ``path``; returns the path.

        One file, images embedded: the graph, and per edit its image, rewritten prompt,
        numbered references, parameters, seed, key, timing, cost and whether it was cached.
        """
        from .report import write_run_report  # the report renders runs; imported on use

        return write_run_report(self, Path(path))

    def _repr_html_(self) -> str:
        from .display import run_html  # display renders runs; imported on use

        return run_html(self)


def _reference_to(given: NodeResult | SourceNode) -> Reference:
    """A source or an earlier result as an input of an edit (as the engine sent it: an
    upstream result the store could not keep goes with its bytes)."""
    if isinstance(given, SourceNode):
        return given.reference()
    return Reference(
        hash=given.output_hash, media_type=given.media_type, source=given.name,
        url=given.url, url_expires_at=given.url_expires_at,
        data=given._data if given._memory_only else None,
    )


def _kept_from_starting(error: BaseException) -> bool:
    """Whether ``error`` kept an edit from starting (budget, cache-only) rather than
    failing it."""
    from .errors import BudgetError, StoreError

    return isinstance(error, BudgetError) or (
        isinstance(error, StoreError) and "cache-only" in str(error)
    )

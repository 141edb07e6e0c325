"""Runs and their results: Run, NodeResult, and the manifest a saved run carries."""

from __future__ import annotations

import io
import mimetypes
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict

from ._version import __version__
from .provenance import Provenance, embed_provenance
from .requests import EditRequest

__all__ = [
    "Manifest",
    "ManifestEntry",
    "ManifestReference",
    "NodeResult",
    "Run",
    "provenance_of",
]



class NodeResult:
    """The outcome of one edit: its image, the exact request, and how it was obtained.

    The image bytes stay in the store until asked for (``data``, ``image``), so a run
    of a thousand edits does not hold a thousand images in memory.
    """

    __slots__ = (
        "name",
        "key",
        "cached",
        "request",
        "output_hash",
        "media_type",
        "width",
        "height",
        "elapsed",
        "cost",
        "url",
        "url_expires_at",
        "unknown_outcomes",
        "created_at",
        "_load",
        "_data",
        "_image",
    )

    def __init__(
        self,
        *,
        name: str,
        key: str,
        cached: bool,
        request: EditRequest,
        output_hash: str,
        media_type: str,
        width: int,
        height: int,
        elapsed: float,
        cost: float,
        load: Callable[[str], bytes],
        url: str | None = None,
        url_expires_at: float | None = None,
        unknown_outcomes: int = 0,
        created_at: float | None = None,
    ) -> None:
        self.name = name
        self.key = key
        self.cached = cached
        self.request = request
        self.output_hash = output_hash
        self.media_type = media_type
        self.width = width
        self.height = height
        self.elapsed = elapsed
        self.cost = cost
        self.url = url
        self.url_expires_at = url_expires_at
        self.unknown_outcomes = unknown_outcomes
        self.created_at = created_at if created_at is not None else time.time()
        self._load = load
        self._data: bytes | None = None
        self._image: Image.Image | None = None

    def __repr__(self) -> str:
        state = "cached" if self.cached else f"ran in {self.elapsed:.2f}s"
        return f"<NodeResult {self.name!r} {self.width}x{self.height} {state} key={self.key[:12]}>"

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


class ManifestReference(BaseModel):
    """One input of an edit as recorded in the manifest."""

    model_config = ConfigDict(frozen=True)

    source: str
    hash: str
    media_type: str


class ManifestEntry(BaseModel):
    """The reproducible record of one edit."""

    model_config = ConfigDict(frozen=True)

    node: str
    file: str
    provider: str
    key: str
    cached: bool
    model: str
    prompt: str
    seed: int
    parameters: dict[str, Any]
    references: list[ManifestReference]
    output_hash: str
    media_type: str
    width: int
    height: int
    elapsed: float
    estimated_cost: float
    unknown_outcomes: int
    created_at: float


class Manifest(BaseModel):
    """The reproducible record of a run: every request, key, seed, hash and cost."""

    model_config = ConfigDict(frozen=True)

    editgraph_version: str
    provider: str
    notice: str | None = None
    created_at: float
    edits: list[ManifestEntry]
    failures: dict[str, str]
    edits_run: int
    edits_cached: int
    estimated_cost: float
    possibly_billed_twice: list[str]


class Run(Mapping[str, NodeResult]):
    """The results of a run: a mapping from edit name to NodeResult in topological order.

    Only edits appear in it, not sources. Failed edits are absent; ``failures`` maps
    them to their errors.
    """

    def __init__(
        self,
        results: Mapping[str, NodeResult],
        *,
        provider: str,
        failures: Mapping[str, BaseException] | None = None,
        notice: str | None = None,
    ) -> None:
        self._results = dict(results)
        self.provider = provider
        self.failures = dict(failures or {})
        self.notice = notice
        self.created_at = time.time()

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
        """Estimated USD spent by this run (cached edits cost nothing)."""
        return round(sum(result.cost for result in self._results.values()), 6)

    @property
    def manifest(self) -> Manifest:
        """The reproducible record of this run."""
        entries = [
            ManifestEntry(
                node=result.name,
                file=result.filename,
                provider=self.provider,
                key=result.key,
                cached=result.cached,
                model=result.request.model,
                prompt=result.request.prompt,
                seed=result.request.seed,
                parameters=result.request.model_dump(
                    exclude={"node", "model", "prompt", "references", "seed"}
                ),
                references=[
                    ManifestReference(
                        source=reference.source,
                        hash=reference.hash,
                        media_type=reference.media_type,
                    )
                    for reference in result.request.references
                ],
                output_hash=result.output_hash,
                media_type=result.media_type,
                width=result.width,
                height=result.height,
                elapsed=round(result.elapsed, 4),
                estimated_cost=result.cost,
                unknown_outcomes=result.unknown_outcomes,
                created_at=result.created_at,
            )
            for result in self._results.values()
        ]
        return Manifest(
            editgraph_version=__version__,
            provider=self.provider,
            notice=self.notice,
            created_at=self.created_at,
            edits=entries,
            failures={name: str(error) for name, error in self.failures.items()},
            edits_run=sum(not entry.cached for entry in entries),
            edits_cached=sum(entry.cached for entry in entries),
            estimated_cost=self.cost,
            possibly_billed_twice=[
                entry.node for entry in entries if entry.unknown_outcomes
            ]
            + [
                name
                for name, error in self.failures.items()
                if getattr(error, "possibly_billed", False)
            ],
        )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write one image per edit, named after the node, and ``manifest.json``.

        Each PNG and JPEG carries its provenance record (``eg.provenance(path)`` reads
        it), so its bytes differ from ``result.data`` by that block only. Each file is
        written under a temporary name and renamed into place, so an interrupted save
        never leaves a truncated image under its final name.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest
        for entry in manifest.edits:
            result = self._results[entry.node]
            record = provenance_of(entry, manifest.editgraph_version)
            _write_atomically(folder / result.filename, embed_provenance(result.data, record))
        _write_atomically(folder / "manifest.json", manifest.model_dump_json(indent=2).encode())
        return folder

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


def provenance_of(entry: ManifestEntry, editgraph_version: str) -> Provenance:
    """The provenance record of one manifest entry, as embedded in its saved image."""
    return Provenance(
        editgraph_version=editgraph_version,
        **entry.model_dump(
            include={
                "node", "provider", "key", "model", "prompt", "seed", "parameters",
                "references", "output_hash", "media_type", "width", "height", "created_at",
            }
        ),
    )


def _write_atomically(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

"""EditRecord: the one record of a finished edit, wherever it is kept.

The store keeps one per key, a saved run's manifest one per edit (with the file it was
saved as), a saved image embeds one (its provenance), and replay rebuilds requests from
them. Records carry a schema version; what editgraph 0.1.0 wrote (a cache record with a
nested ``request``, a manifest entry with ``estimated_cost``, a provenance block) is
read and migrated on the way in.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._version import __version__
from .requests import EditRequest, OpRequest, Reference

__all__ = [
    "HOSTING_FIELDS",
    "RECORD_VERSION",
    "EditRecord",
    "Timestamp",
    "migrate_record",
]

#: The version of the record format. 1 is what editgraph 0.1.0 wrote (migrated on read,
#: see ``migrate_record``); a record from a newer version is refused rather than misread.
RECORD_VERSION = 2

#: Fields of an EditRequest that are not parameters of the call.
_NOT_PARAMETERS = frozenset({"node", "model", "prompt", "references", "seed"})

#: A moment as seconds since the epoch, within what dates can show (years 1970 to 9999):
#: a record from elsewhere saying ``created_at: 1e300`` is refused when read, not when a
#: report tries to print it.
Timestamp = Annotated[float, Field(ge=0.0, le=253_402_300_799.0, allow_inf_nan=False)]

#: Where the provider hosts the output: kept in the cache only. Saved runs and
#: provenance leave it out, since it expires (and may be presigned).
HOSTING_FIELDS = frozenset({"url", "url_expires_at"})


class EditRecord(BaseModel):
    """How one edit's output was made: the exact request, its key, the output and its cost.

    ``output_hash`` is the sha256 of the image as generated. ``elapsed`` and ``cost``
    are what generating it took (estimated USD); ``unknown_outcomes`` counts tries that
    may have been billed too. ``editgraph_version`` is the version that made it.

    An op node's record (``kind="op"``) has the operation's qualified name as ``model``,
    the call (``crop(box=[...])``) as ``prompt``, its ``version``, seed 0, its
    parameters, and ``local`` as its provider.
    """

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[2] = 2
    editgraph_version: str = __version__
    node: str
    kind: Literal["edit", "op"] = "edit"
    version: str | None = None
    provider: str
    key: str
    model: str
    prompt: str
    seed: int
    parameters: dict[str, Any]
    references: tuple[Reference, ...] = ()
    output_hash: str
    media_type: str
    width: int
    height: int
    size_bytes: int | None = None
    elapsed: float = 0.0
    cost: float = 0.0
    #: ``cost`` is what the service said it charged (BFL), not an estimate.
    charged: bool = False
    unknown_outcomes: int = 0
    url: str | None = None
    url_expires_at: float | None = None
    created_at: Timestamp

    @classmethod
    def from_json(cls, text: str | bytes) -> EditRecord:
        """The record in ``text``, written by this version or migrated from an earlier one.

        Raises ValueError (pydantic's ValidationError is one) when it is not a record
        this version can read, one from a newer version included.
        """
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            # Not the current shape: only then pay for reading it twice.
            try:
                data = json.loads(text)
            except ValueError:
                raise exc from None
            if not isinstance(data, dict) or data.get("schema_version", 1) == RECORD_VERSION:
                raise
            return cls.model_validate(migrate_record(data))

    @classmethod
    def of(cls, request: EditRequest | OpRequest, **facts: Any) -> EditRecord:
        """The record of ``request`` (its model, prompt, seed, parameters and inputs)
        with the other ``facts`` (key, provider, output_hash...)."""
        if isinstance(request, OpRequest):
            return cls(
                node=request.node, kind="op", version=request.version,
                model=request.operation, prompt=request.prompt, seed=0,
                parameters=dict(request.parameters),
                references=_bare_references(request.references), **facts,
            )
        return cls(
            node=request.node,
            model=request.model,
            prompt=request.prompt,
            seed=request.seed,
            parameters=request.model_dump(exclude=set(_NOT_PARAMETERS)),
            references=_bare_references(request.references),
            **facts,
        )


def _bare_references(references: tuple[Reference, ...]) -> tuple[Reference, ...]:
    """``references`` without the bytes or URLs they were sent with (what a record keeps)."""
    if all(reference.url is None and reference.data is None for reference in references):
        return references
    return tuple(
        Reference(hash=reference.hash, media_type=reference.media_type, source=reference.source)
        for reference in references
    )


def migrate_record(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a record as some version wrote it) in the current shape.

    Raises ValueError for a record of a newer version, or of no version editgraph wrote.
    """
    version = data.get("schema_version", 1)
    if version == RECORD_VERSION:
        return data
    if version == 1:
        return _from_0_1_0(data)
    if isinstance(version, int) and version > RECORD_VERSION:
        raise ValueError(
            f"schema_version {version}: written by a newer editgraph (this one reads up to "
            f"{RECORD_VERSION}); upgrade editgraph"
        )
    raise ValueError(f"schema_version {version!r}: not a record editgraph writes")


def _from_0_1_0(data: dict[str, Any]) -> dict[str, Any]:
    """A 0.1.0 cache record, manifest entry or provenance block as a version-2 record."""
    migrated = dict(data)
    migrated["schema_version"] = RECORD_VERSION
    migrated.setdefault("editgraph_version", "0.1.0")
    request = migrated.pop("request", None)
    if isinstance(request, dict):  # a cache record: the request was kept whole
        migrated.update(
            model=request.get("model"),
            prompt=request.get("prompt"),
            references=request.get("references", ()),
            parameters={k: v for k, v in request.items() if k not in _NOT_PARAMETERS},
        )
    if "estimated_cost" in migrated:  # a manifest entry: this run's estimated spend
        migrated["cost"] = migrated.pop("estimated_cost")
    return migrated

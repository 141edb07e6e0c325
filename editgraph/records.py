"""EditRecord: the one record of a finished edit, wherever it is kept.

The store keeps one per key, a saved run's manifest one per edit (with the file it was
saved as), a saved image embeds one (its provenance), and replay rebuilds requests from
them. Records carry a schema version; what editgraph 0.1.0 wrote (a cache record with a
nested ``request``, a manifest entry with ``estimated_cost``, a provenance block) is
read and migrated on the way in.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from ._version import __version__
from .requests import EditRequest, OpRequest, Reference

__all__ = [
    "HOSTING_FIELDS",
    "RECORD_VERSION",
    "EditRecord",
    "RecordFacts",
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
_LATEST = 253_402_300_799.0
Timestamp = Annotated[float, Field(ge=0.0, le=_LATEST, allow_inf_nan=False)]

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


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """What serving a cached result needs of its record (the hot path of a cached run).

    ``from_json`` validates the record's JSON as ``EditRecord`` does, field by field,
    without building the model and its references; anything else (an older version
    to migrate, a damaged record) is None, and the caller reads it the slow way.
    """

    key: str
    provider: str
    editgraph_version: str
    seed: int
    output_hash: str
    media_type: str
    width: int
    height: int
    size_bytes: int | None
    elapsed: float
    cost: float
    charged: bool
    unknown_outcomes: int
    url: str | None
    url_expires_at: float | None
    created_at: float

    @classmethod
    def of(cls, record: EditRecord) -> RecordFacts:
        """The facts of a validated record."""
        return cls(
            record.key, record.provider, record.editgraph_version, record.seed,
            record.output_hash, record.media_type, record.width, record.height,
            record.size_bytes, record.elapsed, record.cost, record.charged,
            record.unknown_outcomes, record.url, record.url_expires_at, record.created_at,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> RecordFacts | None:
        """The facts of the record in ``text``; None unless it is a record of the
        current version that ``EditRecord`` would read too (then ``EditRecord.from_json``
        decides: an older version is migrated, a damaged record is a miss).

        Reading is a pure function of the text, and a record is written once: the
        facts of a text read lately are remembered (by the exact text), so a re-run
        reads each record's row but validates it once."""
        seen = _SEEN.get(text)
        if seen is not None:
            return seen
        try:
            fields = _RECORD_FIELDS.validate_json(text)
        except ValueError:  # pydantic's ValidationError included
            return None
        facts = cls(
            fields["key"], sys.intern(fields["provider"]),
            sys.intern(fields.get("editgraph_version", __version__)), fields["seed"],
            fields["output_hash"], sys.intern(fields["media_type"]), fields["width"],
            fields["height"], fields.get("size_bytes"), fields.get("elapsed", 0.0),
            fields.get("cost", 0.0), fields.get("charged", False),
            fields.get("unknown_outcomes", 0), fields.get("url"), fields.get("url_expires_at"),
            fields["created_at"],
        )
        if len(_SEEN) >= _SEEN_LIMIT:
            _SEEN.clear()
        _SEEN[text] = facts
        return facts


#: Record texts read lately and their facts (see RecordFacts.from_json): at most a few
#: MB (a record's text is about 1 KB).
_SEEN: dict[str | bytes, RecordFacts] = {}
_SEEN_LIMIT = 4096


class _ReferenceFields(TypedDict):
    """A Reference's fields, as plain data (see _RecordFields)."""

    hash: str
    media_type: str
    source: str
    url: NotRequired[str | None]
    url_expires_at: NotRequired[float | None]
    data: NotRequired[bytes | None]


class _RecordFields(TypedDict):
    """EditRecord's fields with its types, validated into plain dicts (no model is
    built, so a cached hit reads its record in a third of the time). It must accept
    exactly what EditRecord accepts: tests compare the two field by field."""

    schema_version: Literal[2]
    editgraph_version: NotRequired[str]
    node: str
    kind: NotRequired[Literal["edit", "op"]]
    version: NotRequired[str | None]
    provider: str
    key: str
    model: str
    prompt: str
    seed: int
    parameters: dict[str, Any]
    references: NotRequired[tuple[_ReferenceFields, ...]]
    output_hash: str
    media_type: str
    width: int
    height: int
    size_bytes: NotRequired[int | None]
    elapsed: NotRequired[float]
    cost: NotRequired[float]
    charged: NotRequired[bool]
    unknown_outcomes: NotRequired[int]
    url: NotRequired[str | None]
    url_expires_at: NotRequired[float | None]
    created_at: Timestamp


_RECORD_FIELDS = TypeAdapter(_RecordFields)


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

"""The records that cross the provider boundary: EditRequest, Reference, GeneratedImage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
import dataclasses

from pydantic.dataclasses import dataclass

__all__ = ["EditRequest", "GeneratedImage", "Reference"]

OutputFormat = Literal["jpeg", "png"]


class Reference(BaseModel):
    """One input image of an edit, in the order the model numbers them ("image N").

    ``hash``, ``media_type`` and ``source`` describe what it is; ``url`` and ``data`` say
    how it may be sent and are never part of a cache key.
    """

    model_config = ConfigDict(frozen=True)

    hash: str
    media_type: str
    source: str
    url: str | None = Field(default=None, exclude=True)
    url_expires_at: float | None = Field(default=None, exclude=True)
    data: bytes | None = Field(default=None, exclude=True, repr=False)


class EditRequest(BaseModel):
    """Exactly what one provider call needs, after prompt rewriting."""

    model_config = ConfigDict(frozen=True)

    node: str
    model: str
    prompt: str
    references: tuple[Reference, ...] = ()
    width: int
    height: int
    seed: int
    steps: int | None = None
    guidance: float | None = None
    prompt_upsampling: bool = False
    output_format: OutputFormat = "jpeg"


@dataclass(frozen=True)
class GeneratedImage:
    """What a provider returns: the downloaded bytes and, when hosted, the URL.

    ``unknown_outcomes`` counts earlier tries whose outcome was unknown (the request was
    sent, the answer lost): each may have been billed too.
    """

    data: bytes = dataclasses.field(repr=False)
    media_type: str
    url: str | None = None
    url_expires_at: float | None = None
    unknown_outcomes: int = 0

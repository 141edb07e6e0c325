"""The records that cross the provider boundary: EditRequest, Reference, GeneratedImage.

OpRequest is an op node's counterpart of EditRequest: what a local operation was applied
to, recorded the same way (it never reaches a provider).
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

__all__ = [
    "SCHEMA_VERSION",
    "EditRequest",
    "GeneratedImage",
    "OpRequest",
    "Reference",
    "Submission",
    "describe_operation",
    "media_type_of",
    "pixel_size",
]

OutputFormat = Literal["jpeg", "png", "webp"]

#: The version of what a cache key and a cache record mean; bump it when that changes,
#: and old entries simply stop matching.
SCHEMA_VERSION = 1

#: Pillow's format names, as the media types editgraph sends and records (a camera's
#: multi-picture JPEG is a JPEG to everyone else).
_MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}


def media_type_of(image_format: str | None) -> str | None:
    """The media type of a Pillow format name ("JPEG", or "jpeg" as in output_format)."""
    return _MEDIA_TYPES.get((image_format or "").upper())


def pixel_size(data: bytes | None) -> tuple[int, int] | None:
    """Width and height of an encoded image, read from its header (None if unreadable)."""
    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


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


class OpRequest(BaseModel):
    """What one local operation was applied to: its function, version, parameters, inputs.

    ``model`` and ``prompt`` describe the operation the way an edit's do (its qualified
    name, and a call such as ``crop(box=[0, 0, 64, 64])``), so views that list edits
    list ops too. ``seed`` is always 0: an operation is deterministic.
    """

    model_config = ConfigDict(frozen=True)

    node: str
    operation: str
    version: str
    parameters: dict[str, Any]
    references: tuple[Reference, ...] = ()
    output_format: Literal["png"] = "png"

    @property
    def model(self) -> str:
        """The operation's qualified name (``editgraph.ops.crop``)."""
        return self.operation

    @property
    def prompt(self) -> str:
        """The operation as a call: ``crop(box=[0, 0, 64, 64])``."""
        return describe_operation(self.operation, self.parameters)

    @property
    def seed(self) -> int:
        """Always 0: an operation is deterministic."""
        return 0


def describe_operation(operation: str, parameters: dict[str, Any]) -> str:
    """An operation and its parameters as a short call: ``crop(box=[0, 0, 64, 64])``."""
    arguments = ", ".join(
        f"{name}={json.dumps(value, ensure_ascii=False)}"
        for name, value in parameters.items() if value is not None
    )
    return f"{operation.rpartition('.')[2]}({arguments})"


@dataclass(frozen=True)
class GeneratedImage:
    """What a provider returns: the downloaded bytes and, when hosted, the URL.

    ``unknown_outcomes`` counts earlier tries whose outcome was unknown (the request was
    sent, the answer lost): each may have been billed too. ``cost`` is what the service
    said it charged (USD), when it says (BFL does); the engine records it instead of the
    estimate. ``seed`` is the seed that made the image when the provider had to change
    the request's (a new seed after an output-side moderation block).
    """

    data: bytes = dataclasses.field(repr=False)
    media_type: str
    url: str | None = None
    url_expires_at: float | None = None
    unknown_outcomes: int = 0
    cost: float | None = None
    seed: int | None = None


class Submission(BaseModel):
    """A paid task at an asynchronous service (BFL), journaled before it is polled.

    ``cost`` is what the service said it charges (USD; None when it did not say);
    ``submitted_at`` is Unix time.
    """

    model_config = ConfigDict(frozen=True)

    node: str
    model: str
    task_id: str
    polling_url: str
    seed: int
    estimated_cost: float
    cost: float | None = None
    submitted_at: float

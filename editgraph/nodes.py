"""The node types of a graph: a source image, an edit and an op, as the engine sees them.

Shared by graph, keys, plan, execute, display and replay, so none of them needs the
scheduler to name a node. Each kind is a frozen value; the graph builds them once, when
the node is declared and checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .models import ModelSpec
from .requests import EditRequest, OpRequest, Reference, describe_operation

if TYPE_CHECKING:
    from .ops import Operation

__all__ = ["EditNode", "OpNode", "SourceNode"]


@dataclass(frozen=True, slots=True)
class SourceNode:
    """A source image: its bytes, read and checked when the graph was built."""

    name: str
    hash: str
    media_type: str
    source: str
    data: bytes = field(repr=False)
    url: str | None = None

    def reference(self) -> Reference:
        """This source as an input of an edit."""
        return Reference(hash=self.hash, media_type=self.media_type, source=self.source,
                         url=self.url, data=self.data)


@dataclass(frozen=True, slots=True)
class EditNode:
    """One edit, validated and rewritten: what the scheduler needs to run it."""

    name: str
    model: ModelSpec
    prompt: str
    references: tuple[str, ...]
    parameters: Mapping[str, Any]
    #: (width, height) of each reference whose size is known when the edit is declared:
    #: some providers bill input megapixels (models.PRICES).
    input_sizes: tuple[tuple[int, int], ...] = ()

    def estimate_cost(self, provider: str = "together") -> float:
        """Estimated USD for one generation of this edit by the provider named ``provider``."""
        return self.model.estimate_cost(
            self.parameters["width"], self.parameters["height"],
            inputs=self.input_sizes, provider=provider,
        )

    @property
    def estimated_cost(self) -> float:
        """Estimated USD for one generation of this edit at Together's prices."""
        return self.estimate_cost()

    def request(self, references: Iterable[Reference], seed: int) -> EditRequest:
        """The provider request of this edit with these references and this seed."""
        parameters = {k: v for k, v in self.parameters.items() if k != "seed"}
        return EditRequest(node=self.name, model=self.model.id, prompt=self.prompt,
                           references=tuple(references), seed=seed, **parameters)


@dataclass(frozen=True, slots=True)
class OpNode:
    """One local operation: a pure function of its inputs, run in a thread, free.

    ``references`` are its inputs' node names in order (as an edit's references are);
    ``parameters`` are checked and in canonical JSON form.
    """

    name: str
    operation: Operation
    references: tuple[str, ...]
    parameters: Mapping[str, Any]

    @property
    def estimated_cost(self) -> float:
        """Operations cost nothing."""
        return 0.0

    def estimate_cost(self, provider: str = "together") -> float:
        """Operations cost nothing, whichever provider runs the edits around them."""
        return 0.0

    @property
    def description(self) -> str:
        """The operation as a call, e.g. ``crop(box=[0, 0, 64, 64])``."""
        return describe_operation(self.operation.name, dict(self.parameters))

    def request(self, references: Iterable[Reference]) -> OpRequest:
        """What this op is applied to, as its record keeps it."""
        return OpRequest(node=self.name, operation=self.operation.name,
                         version=self.operation.version, parameters=dict(self.parameters),
                         references=tuple(references))

    def key(self, input_hashes: list[str]) -> str:
        """The content-hash key of this op given its inputs' hashes."""
        return self.operation.key(self.parameters, input_hashes)

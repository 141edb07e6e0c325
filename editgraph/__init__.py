"""editgraph: multi-step image editing with FLUX.2 as a cached, concurrent DAG of edits.

Each public name is imported from its module when it is first used (``eg.Graph``,
``from editgraph import batch``), so ``import editgraph`` and ``editgraph --help`` do not
pay for networkx, httpx, pydantic models and the providers up front.
"""

import importlib as _importlib
import sys as _sys
import types as _types
import typing as _typing

if _typing.TYPE_CHECKING:
    from . import hosts, ops, providers
    from ._version import __version__
    from .batch import Batch, BatchItem, BatchSummary, batch
    from .errors import (
        BudgetError,
        ConfigurationError,
        EditGraphError,
        GraphError,
        InputFailedError,
        ModerationError,
        OperationError,
        ProvenanceError,
        ProviderError,
        RunError,
        RunInterrupted,
        StoreError,
    )
    from .graph import Graph, Handle, Sweep, chain
    from .ops import Operation, operation
    from .plan import Plan, PlanStep
    from .prompts import Camera, StructuredPrompt, Subject
    from .provenance import Provenance, provenance
    from .requests import EditRequest, GeneratedImage, OpRequest, Reference
    from .runs import Manifest, NodeResult, Run

__all__ = [
    "Batch",
    "BatchItem",
    "BatchSummary",
    "BudgetError",
    "Camera",
    "ConfigurationError",
    "EditGraphError",
    "EditRequest",
    "GeneratedImage",
    "Graph",
    "GraphError",
    "Handle",
    "InputFailedError",
    "Manifest",
    "ModerationError",
    "NodeResult",
    "OpRequest",
    "Operation",
    "OperationError",
    "Plan",
    "PlanStep",
    "Provenance",
    "ProvenanceError",
    "ProviderError",
    "Reference",
    "Run",
    "RunError",
    "RunInterrupted",
    "StoreError",
    "StructuredPrompt",
    "Subject",
    "Sweep",
    "__version__",
    "batch",
    "chain",
    "hosts",
    "operation",
    "ops",
    "provenance",
    "providers",
]

#: The public names that are modules.
_MODULES = frozenset({"hosts", "ops", "providers"})
#: Where each public name lives.
_HOMES = {
    "Batch": ".batch",
    "BatchItem": ".batch",
    "BatchSummary": ".batch",
    "BudgetError": ".errors",
    "Camera": ".prompts",
    "ConfigurationError": ".errors",
    "EditGraphError": ".errors",
    "EditRequest": ".requests",
    "GeneratedImage": ".requests",
    "Graph": ".graph",
    "GraphError": ".errors",
    "Handle": ".graph",
    "InputFailedError": ".errors",
    "Manifest": ".runs",
    "ModerationError": ".errors",
    "NodeResult": ".runs",
    "OpRequest": ".requests",
    "Operation": ".ops",
    "OperationError": ".errors",
    "Plan": ".plan",
    "PlanStep": ".plan",
    "Provenance": ".provenance",
    "ProvenanceError": ".errors",
    "ProviderError": ".errors",
    "Reference": ".requests",
    "Run": ".runs",
    "RunError": ".errors",
    "RunInterrupted": ".errors",
    "StoreError": ".errors",
    "StructuredPrompt": ".prompts",
    "Subject": ".prompts",
    "Sweep": ".graph",
    "__version__": "._version",
    "batch": ".batch",
    "chain": ".graph",
    "hosts": ".hosts",
    "operation": ".ops",
    "ops": ".ops",
    "provenance": ".provenance",
    "providers": ".providers",
}


def __getattr__(name: str) -> _typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _importlib.import_module(home, __name__)
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value  # found once; later uses are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """This package: ``eg.batch`` and ``eg.provenance`` stay the functions when their
    modules (``editgraph.batch``, ``editgraph.provenance``) are first imported, which sets
    the package's attribute of that name to the module."""

    def __setattr__(self, name: str, value: _typing.Any) -> None:
        if name in _FUNCTIONS_NAMED_AS_MODULES and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_FUNCTIONS_NAMED_AS_MODULES = frozenset({"batch", "provenance"})
_sys.modules[__name__].__class__ = _Package

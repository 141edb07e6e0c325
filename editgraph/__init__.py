"""editgraph: multi-step image editing with FLUX.2 as a cached, concurrent DAG of edits."""

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
    StoreLockedError,
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
    "StoreLockedError",
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

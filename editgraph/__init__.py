"""editgraph: multi-step image editing with FLUX.2 as a cached, concurrent DAG of edits."""

from .errors import EditGraphError, GraphError, InputFailedError, ProviderError, RunError, StoreError
from .requests import EditRequest, GeneratedImage, Reference

__version__ = "0.1.0"

__all__ = [
    "EditGraphError",
    "EditRequest",
    "GeneratedImage",
    "GraphError",
    "InputFailedError",
    "ProviderError",
    "Reference",
    "RunError",
    "StoreError",
]

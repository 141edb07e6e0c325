"""The public surface: what `import editgraph as eg` offers, sorted and complete."""

from __future__ import annotations

import types

import editgraph as eg

#: Names the documented public API promises users.
CONTRACT = {
    "BudgetError", "EditGraphError", "EditRequest", "GeneratedImage", "Graph", "GraphError",
    "NodeResult", "Plan", "ProviderError", "Reference", "Run", "RunError", "StructuredPrompt",
    "Sweep", "chain", "provenance", "providers",
}


def test_all_is_sorted_and_lists_only_real_names() -> None:
    """__all__ is sorted, has no duplicates, and every name in it exists."""
    assert list(eg.__all__) == sorted(set(eg.__all__))
    for name in eg.__all__:
        assert hasattr(eg, name), name


def test_every_public_attribute_is_in_all() -> None:
    """Nothing public is exported by accident: every public attribute is listed."""
    public = {
        name for name, value in vars(eg).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(eg.__all__) == set()


def test_the_contract_names_are_exported() -> None:
    """Every name the design promises is importable from the package root."""
    assert CONTRACT <= set(eg.__all__)
    assert {"Together", "Preview", "Provider"} <= set(eg.providers.__all__)


def test_every_exported_error_derives_from_editgraph_error() -> None:
    """Each exception editgraph exports is an EditGraphError."""
    for name in eg.__all__:
        value = getattr(eg, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, eg.EditGraphError), name

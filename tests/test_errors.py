"""The exception hierarchy and how a failed run reads."""

from __future__ import annotations

import editgraph as eg


def test_the_tree_is_rooted_at_editgraph_error() -> None:
    """Every error class derives from EditGraphError; RecipeError is a GraphError."""
    from editgraph.errors import RecipeError

    for error in (eg.GraphError, eg.ProviderError, eg.InputFailedError, eg.BudgetError,
                  eg.StoreError, eg.RunError, RecipeError):
        assert issubclass(error, eg.EditGraphError)
    assert issubclass(RecipeError, eg.GraphError)


def test_run_error_has_one_line_per_failed_node() -> None:
    """str(RunError) is one 'name: message' line per failure; .failures keeps them all."""
    failures = {
        "bad": eg.ProviderError("node 'bad': refused", node="bad", status=400),
        "child": eg.InputFailedError("child", "bad"),
    }
    error = eg.RunError(failures)
    assert str(error).splitlines() == [
        "bad: node 'bad': refused",
        "child: node 'child': not run because its input 'bad' failed",
    ]
    assert error.failures == failures


def test_provider_error_carries_node_status_and_billing() -> None:
    """ProviderError says which node, which status, and whether it may have been billed."""
    error = eg.ProviderError("lost", node="n", status=None, possibly_billed=True)
    assert (error.node, error.status, error.possibly_billed) == ("n", None, True)

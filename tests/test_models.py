"""The FLUX.2 catalogue: ids, aliases, limits and price estimates."""

from __future__ import annotations

import pytest

import editgraph as eg
from editgraph.models import CATALOGUE, resolve_model


@pytest.mark.parametrize(
    ("alias", "model_id"),
    [
        ("flux.2-pro", "black-forest-labs/FLUX.2-pro"),
        ("FLUX.2-MAX", "black-forest-labs/FLUX.2-max"),
        ("flux.2-flex", "black-forest-labs/FLUX.2-flex"),
        ("flux.2-dev", "black-forest-labs/FLUX.2-dev"),
        ("black-forest-labs/FLUX.2-pro", "black-forest-labs/FLUX.2-pro"),
    ],
)
def test_aliases_resolve_to_full_ids(alias: str, model_id: str) -> None:
    """Short aliases and full ids, in any case, name the same model."""
    assert resolve_model(alias).id == model_id


def test_unknown_model_lists_the_known_ones() -> None:
    """An unknown model is a GraphError naming the node and every known alias."""
    with pytest.raises(eg.GraphError, match=r"node 'x': model: unknown model 'flux.2-klein'"):
        resolve_model("flux.2-klein", node="x")
    with pytest.raises(eg.GraphError, match="flux.2-pro, flux.2-max, flux.2-flex, flux.2-dev"):
        resolve_model("flux-3")


def test_reference_limits_and_parameters() -> None:
    """8 references for pro/max/flex and 6 for dev; steps and guidance on dev and flex only."""
    limits = {spec.aliases[0]: spec.max_references for spec in CATALOGUE}
    assert limits == {"flux.2-pro": 8, "flux.2-max": 8, "flux.2-flex": 8, "flux.2-dev": 6}
    takes_steps = {spec.aliases[0] for spec in CATALOGUE if "steps" in spec.params}
    assert takes_steps == {"flux.2-flex", "flux.2-dev"}


def test_price_estimates_per_image_and_per_megapixel() -> None:
    """pro/flex/dev are priced per image; max per started megapixel of output."""
    assert resolve_model("flux.2-pro").estimate_cost(1024, 768) == pytest.approx(0.03)
    assert resolve_model("flux.2-dev").estimate_cost(1920, 1920) == pytest.approx(0.0154)
    assert resolve_model("flux.2-max").estimate_cost(1024, 1024) == pytest.approx(0.07)
    assert resolve_model("flux.2-max").estimate_cost(1920, 1080) == pytest.approx(0.14)

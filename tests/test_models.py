"""The FLUX.2 catalogue: ids, aliases, limits and price estimates."""

from __future__ import annotations

import pytest

import editgraph as eg
from editgraph.models import CATALOGUE, PRICES, megapixels, resolve_model


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
    """8 references for pro/max/flex, 6 for dev, 4 for klein; steps and guidance on dev and flex only."""
    limits = {spec.aliases[0]: spec.max_references for spec in CATALOGUE}
    assert limits == {"flux.2-pro": 8, "flux.2-max": 8, "flux.2-flex": 8, "flux.2-dev": 6,
                      "flux.2-klein-4b": 4, "flux.2-klein-9b": 4}
    takes_steps = {spec.aliases[0] for spec in CATALOGUE if "steps" in spec.params}
    assert takes_steps == {"flux.2-flex", "flux.2-dev"}


def test_together_prices_per_started_output_megapixel() -> None:
    """Together bills each started megapixel of output; references cost nothing there."""
    pro, dev, max_ = (resolve_model(name) for name in ("flux.2-pro", "flux.2-dev", "flux.2-max"))
    assert pro.estimate_cost(1024, 768) == pytest.approx(0.03)
    assert pro.estimate_cost(1920, 1080) == pytest.approx(0.06)
    assert dev.estimate_cost(1920, 1920) == pytest.approx(4 * 0.0154)
    assert max_.estimate_cost(1024, 1024) == pytest.approx(0.07)
    assert pro.estimate_cost(1024, 768, inputs=[(1920, 1920)] * 3) == pytest.approx(0.03)


def test_bfl_prices_input_megapixels_too() -> None:
    """BFL's formula: first MP, each further output MP, and every input MP (docs.bfl.ai pricing)."""
    pro, flex = resolve_model("flux.2-pro"), resolve_model("flux.2-flex")
    assert pro.estimate_cost(1024, 1024, provider="bfl") == pytest.approx(0.03)
    assert pro.estimate_cost(1024, 1024, inputs=[(1024, 1024)], provider="bfl") == pytest.approx(0.045)
    assert flex.estimate_cost(1024, 1024, inputs=[(1024, 1024)], provider="bfl") == pytest.approx(0.10)
    assert pro.estimate_cost(1920, 1080, inputs=[(512, 512), (512, 512)], provider="bfl") == (
        pytest.approx(0.03 + 0.015 + 2 * 0.015)
    )


def test_every_price_names_its_source_and_unknown_providers_use_together() -> None:
    """Each price documents where it comes from; Preview and others estimate at Together's."""
    for provider, table in PRICES.items():
        for model_id, price in table.items():
            assert price.source, (provider, model_id)
    pro = resolve_model("flux.2-pro")
    assert pro.estimate_cost(1024, 768, provider="preview") == pro.estimate_cost(1024, 768)
    assert megapixels(1024, 768) == 1 and megapixels(1025, 1024) == 2


def test_flex_ranges_follow_the_sources() -> None:
    """flex takes steps 1-50 and guidance 1.5-10; pro takes neither."""
    flex = resolve_model("flux.2-flex")
    assert flex.range_of("steps") == (1, 50) and flex.range_of("guidance") == (1.5, 10.0)
    assert resolve_model("flux.2-pro").range_of("steps") is None


def test_an_edit_knows_its_inputs_sizes_and_each_provider_prices_it(tmp_path: object) -> None:
    """An edit records its references' sizes; BFL's estimate counts them, Together's does not."""
    import io

    from PIL import Image

    swatch = io.BytesIO()
    Image.new("RGB", (2048, 1024), (9, 9, 9)).save(swatch, format="PNG")
    graph = eg.Graph(width=1024, height=1024)
    source = graph.image(swatch.getvalue(), name="swatch")
    graph.edit(f"Paint {source}", name="paint")
    graph.edit("Frame @paint beside @swatch", name="frame")
    paint, frame = graph.edits["paint"], graph.edits["frame"]
    assert paint.input_sizes == ((2048, 1024),)
    assert frame.input_sizes == ((1024, 1024), (2048, 1024))
    assert frame.estimate_cost("together") == pytest.approx(0.03)
    assert frame.estimate_cost("bfl") == pytest.approx(0.03 + (1 + 2) * 0.015)
    assert frame.estimated_cost == frame.estimate_cost("together")


def test_hosts_klein_on_bfl_only_and_dev_on_together_only() -> None:
    """klein has a BFL endpoint and no Together model; dev the reverse."""
    hosts = {spec.aliases[0]: (spec.on_together, spec.bfl_endpoint) for spec in CATALOGUE}
    assert hosts["flux.2-klein-4b"] == (False, "flux-2-klein-4b")
    assert hosts["flux.2-klein-9b"] == (False, "flux-2-klein-9b")
    assert hosts["flux.2-dev"] == (True, None)


def test_klein_is_priced_by_bfls_formula() -> None:
    """klein 9B: 1.5 cents for the first megapixel, 0.2 for each input megapixel."""
    assert resolve_model("klein-9b").estimate_cost(
        1024, 1024, inputs=[(512, 512)], provider="bfl") == pytest.approx(0.017)

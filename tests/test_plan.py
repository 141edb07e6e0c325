"""Tests for plan.py: what a run would do, why, and its cost, without calling a provider."""

from __future__ import annotations

from pathlib import Path

import pytest
from edit_providers import CountingProvider, png_bytes

import editgraph as eg
from editgraph.store import DiskStore

RED = png_bytes((255, 0, 0))
BLUE = png_bytes((0, 0, 255))


class Forbidden:
    """A provider that fails the test if anything calls it."""

    name = "counting"  # the same name as CountingProvider, so plans read its cache

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        raise AssertionError(f"plan called the provider for {request.node}")


def recolour(cache: Path, car: Path, *, night: str = "Make {blue} a night scene",
             **night_params: object) -> eg.Graph:
    """car -> blue -> night, with a second branch car -> sketch."""
    graph = eg.Graph(cache_dir=cache)
    source = graph.image(car)
    blue = graph.edit(f"Paint {source} blue", name="blue")
    graph.edit(night.format(blue=blue), name="night", **night_params)
    graph.edit(f"A pencil sketch of {source}", name="sketch")
    return graph


@pytest.fixture
def car(tmp_path: Path) -> Path:
    """A source image file the tests may rewrite."""
    path = tmp_path / "car.png"
    path.write_bytes(RED)
    return path


def test_plan_of_a_new_graph_calls_no_provider(tmp_path: Path, car: Path) -> None:
    """A fresh graph plans every edit as new, with a cost, and calls nothing."""
    graph = recolour(tmp_path / "cache", car)
    plan = graph.plan(provider=Forbidden())
    assert isinstance(plan, eg.Plan)
    assert plan.to_run == ["blue", "night", "sketch"]
    assert plan.cached == []
    assert all(reason.startswith("new") for reason in plan.reasons.values())
    assert plan.estimated_cost == pytest.approx(0.09)


def test_plan_does_not_make_a_missing_cache_folder(tmp_path: Path, car: Path) -> None:
    """Planning against a cache folder that does not exist reads it as empty and leaves
    it unmade; the run after it (same Graph) makes it and keeps its results there."""
    cache = tmp_path / "new" / "cache"
    graph = recolour(cache, car)
    assert graph.plan(provider=Forbidden()).to_run == ["blue", "night", "sketch"]
    assert not (tmp_path / "new").exists()
    graph.run(provider=CountingProvider())
    assert DiskStore(cache).stats().records == 3
    assert graph.plan(provider=Forbidden()).to_run == []


def test_plan_after_a_run_shows_nothing_to_run(tmp_path: Path, car: Path) -> None:
    """After a run, the plan is all cached at $0."""
    graph = recolour(tmp_path / "cache", car)
    graph.run(provider=CountingProvider())
    plan = graph.plan(provider=Forbidden())
    assert plan.to_run == [] and plan.reasons == {}
    assert plan.cached == ["blue", "night", "sketch"]
    assert plan.estimated_cost == 0
    assert "0 to run, 3 cached, estimated $0.0000" in str(plan)


def test_plan_steps_carry_rewritten_prompt_and_references(tmp_path: Path, car: Path) -> None:
    """Each step shows the rewritten prompt and the numbered reference list."""
    plan = recolour(tmp_path / "cache", car).plan(provider=Forbidden())
    night = next(step for step in plan.steps if step.name == "night")
    assert night.prompt == "Make image 1 a night scene"
    assert night.references == ["image 1 = blue"]
    assert "<table>" in plan._repr_html_()


def test_plan_reason_prompt_changed(tmp_path: Path, car: Path) -> None:
    """A changed prompt is named as the reason, with the words that changed."""
    cache = tmp_path / "cache"
    recolour(cache, car).run(provider=CountingProvider())
    plan = recolour(cache, car, night="Make {blue} a dusk scene").plan(provider=Forbidden())
    assert plan.to_run == ["night"]
    assert "prompt" in plan.reasons["night"]
    assert "'night' -> 'dusk'" in plan.reasons["night"]


def test_plan_reason_parameter_changed(tmp_path: Path, car: Path) -> None:
    """A changed parameter is named with its old and new values."""
    cache = tmp_path / "cache"
    recolour(cache, car, seed=1).run(provider=CountingProvider())
    plan = recolour(cache, car, seed=2).plan(provider=Forbidden())
    assert plan.to_run == ["night"]
    assert plan.reasons["night"] == "seed 1 -> 2"


def test_plan_reason_pinned_seed_dropped(tmp_path: Path, car: Path) -> None:
    """Dropping a pinned seed is a reason of its own: the seed is now derived."""
    cache = tmp_path / "cache"
    recolour(cache, car, seed=1).run(provider=CountingProvider())
    plan = recolour(cache, car).plan(provider=Forbidden())
    assert plan.to_run == ["night"]
    assert plan.reasons["night"].startswith("seed 1 -> ")
    assert plan.reasons["night"].endswith("(derived)")


def test_plan_reason_size_changed(tmp_path: Path, car: Path) -> None:
    """A changed width is named with its old and new values."""
    cache = tmp_path / "cache"
    recolour(cache, car).run(provider=CountingProvider())
    plan = recolour(cache, car, width=512).plan(provider=Forbidden())
    assert plan.to_run == ["night"]
    assert "width 1024 -> 512" in plan.reasons["night"]


def test_plan_reason_model_changed(tmp_path: Path, car: Path) -> None:
    """A changed model is named with the old and new ids."""
    cache = tmp_path / "cache"
    recolour(cache, car).run(provider=CountingProvider())
    plan = recolour(cache, car, model="flux.2-flex").plan(provider=Forbidden())
    assert plan.to_run == ["night"]
    assert "model black-forest-labs/FLUX.2-pro -> black-forest-labs/FLUX.2-flex" in (
        plan.reasons["night"]
    )


def test_plan_reason_reference_bytes_changed(tmp_path: Path, car: Path) -> None:
    """Rewriting a source file re-runs its edits; downstream edits wait for them."""
    cache = tmp_path / "cache"
    recolour(cache, car).run(provider=CountingProvider())
    car.write_bytes(BLUE)
    plan = recolour(cache, car).plan(provider=Forbidden())
    assert plan.to_run == ["blue", "night", "sketch"]
    assert plan.reasons["blue"] == "image 1 (car) bytes changed"
    assert plan.reasons["sketch"] == "image 1 (car) bytes changed"
    assert plan.reasons["night"] == "image 1 (blue) is made again first"


def test_plan_reason_provider_changed(tmp_path: Path, car: Path) -> None:
    """Planning for another provider names the change of provider."""
    cache = tmp_path / "cache"
    recolour(cache, car).run(provider=CountingProvider())

    class Other(Forbidden):
        name = "other"

    plan = recolour(cache, car).plan(provider=Other())
    assert plan.to_run == ["blue", "night", "sketch"]
    assert "provider counting -> other" in plan.reasons["blue"]


def test_plan_reason_cache_cleared(tmp_path: Path, car: Path) -> None:
    """With the same request but the record gone, the reason says the cache lost it."""
    cache = tmp_path / "cache"
    graph = recolour(cache, car)
    graph.run(provider=CountingProvider())
    store = DiskStore(cache)
    try:
        assert store.prune(older_than=-1.0) == 3  # records and images go, history stays
    finally:
        store.close()
    plan = recolour(cache, car).plan(provider=Forbidden())
    assert plan.to_run == ["blue", "night", "sketch"]
    assert plan.reasons["blue"] == "not in the cache any more (cleared or pruned)"
    assert plan.reasons["night"] == "image 1 (blue) is made again first"


def test_plan_estimated_cost_sums_the_edits_to_run(tmp_path: Path, car: Path) -> None:
    """The estimate sums what will run, per model and size."""
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    source = graph.image(car)
    graph.edit(f"Paint {source}", name="pro")  # $0.03 per image
    graph.edit(f"Paint {source}", name="dev", model="flux.2-dev")  # $0.0154 per image
    graph.edit(f"Paint {source}", name="max", model="flux.2-max",
               width=1920, height=1088)  # 2 MP at $0.07
    plan = graph.plan(provider=Forbidden())
    assert [step.estimated_cost for step in plan.steps] == pytest.approx([0.03, 0.0154, 0.14])
    assert plan.estimated_cost == pytest.approx(0.1854)


def test_identical_requests_are_estimated_once(tmp_path: Path, car: Path) -> None:
    """Two edits with identical requests cost one generation in the plan, as in the run."""
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    source = graph.image(car)
    graph.edit(f"Paint {source} blue", name="one", seed=3)
    graph.edit(f"Paint {source} blue", name="two", seed=3)
    plan = graph.plan(provider=Forbidden())
    assert plan.to_run == ["one", "two"]
    assert plan.estimated_cost == pytest.approx(0.03)
    assert plan.reasons["two"] == "same request as 'one', which makes it for both"
    provider = CountingProvider()
    graph.run(provider=provider, budget=0.03)
    assert len(provider.calls) == 1


def test_plan_matches_what_run_does(tmp_path: Path, car: Path) -> None:
    """The edits a plan says will run are exactly the ones a run generates."""
    cache = tmp_path / "cache"
    recolour(cache, car).run(provider=CountingProvider())
    changed = recolour(cache, car, night="Make {blue} a dawn scene")
    plan = changed.plan(provider=Forbidden())
    provider = CountingProvider()
    changed.run(provider=provider)
    assert provider.nodes == plan.to_run == ["night"]


def test_plan_uses_the_graph_cache_dir_or_the_one_given(tmp_path: Path, car: Path) -> None:
    """plan(cache_dir=) reads that cache; the graph's own is the default."""
    graph = recolour(tmp_path / "cache", car)
    graph.run(provider=CountingProvider())
    assert graph.plan(provider=Forbidden()).to_run == []
    assert graph.plan(provider=Forbidden(), cache_dir=tmp_path / "empty").to_run == [
        "blue", "night", "sketch",
    ]


def test_plan_and_budget_price_input_megapixels_for_a_provider_that_bills_them(tmp_path: Path) -> None:
    """Named "bfl", a provider's plan counts the reference's megapixel; --budget follows."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=1024, height=1024)
    source = graph.image(png_bytes((1, 2, 3)), name="src")
    graph.edit(f"Paint {source}", name="paint")
    assert graph.plan(provider=CountingProvider("together")).estimated_cost == pytest.approx(0.03)
    bfl = CountingProvider("bfl")
    assert graph.plan(provider=bfl).estimated_cost == pytest.approx(0.045)
    with pytest.raises(eg.BudgetError):
        graph.run(provider=bfl, budget=0.04, progress=False)
    assert bfl.calls == []
    assert graph.run(provider=bfl, budget=0.05, progress=False)["paint"].cost == pytest.approx(0.045)


def test_why_compares_only_with_the_same_node_of_the_same_graph(tmp_path: Path, car: Path) -> None:
    """A node named like one in another graph (a recipe, a notebook) is "new", not a diff."""
    cache = tmp_path / "cache"
    recipe = tmp_path / "quickstart.py"
    recipe.write_text(
        "import editgraph as eg\n\n"
        "def recipe() -> eg.Graph:\n"
        "    g = eg.Graph()\n"
        "    car = g.image('car.png')\n"
        "    g.edit(f'Place the car from {car} on a beach', name='night')\n"
        "    return g\n"
    )
    from editgraph.recipe import build_recipe  # the command's way of loading a recipe

    quickstart = build_recipe(recipe)
    assert quickstart.name == str(recipe.resolve())
    quickstart.run(provider=CountingProvider(), cache_dir=cache)
    snippet = recolour(cache, car, night="Make {blue} a night scene, wet asphalt")
    assert snippet.name == "__main__"
    assert snippet.plan(provider=Forbidden()).reasons["night"].startswith("new")
    again = build_recipe(recipe)  # the same recipe file, loaded anew
    again.edit("Place the car from @car on a beach at night", name="dusk")
    assert again.plan(provider=Forbidden(), cache_dir=cache).to_run == ["dusk"]
    snippet.run(provider=CountingProvider())
    changed = recolour(cache, car, night="Make {blue} a dusk scene, wet asphalt")
    assert "'night' -> 'dusk'" in changed.plan(provider=Forbidden()).reasons["night"]
    named = eg.Graph(cache_dir=cache, name="another notebook")
    named.edit(f"Make {named.image(car)} a night scene", name="night")
    assert named.plan(provider=Forbidden()).reasons["night"].startswith("new")

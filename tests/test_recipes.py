"""Tests for the recipes in recipes/: each runs offline through the command and is well formed."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import get_type_hints

import pytest
from click.testing import CliRunner, Result

import editgraph as eg
from editgraph.cli import main
from editgraph.nodes import EditNode
from editgraph.recipe import build_recipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.py"))
ASSETS = ROOT / "examples" / "assets"

recipe_files = pytest.mark.parametrize("recipe", RECIPES, ids=[path.stem for path in RECIPES])


pytestmark = pytest.mark.usefixtures("offline")


def invoke(*args: str) -> Result:
    """Run the command in-process, as click would from a shell."""
    return CliRunner().invoke(main, list(args))


def test_there_are_at_least_twelve_recipes() -> None:
    """The recipe library covers the twelve FLUX.2 use cases the project promises."""
    assert len(RECIPES) >= 12, [path.name for path in RECIPES]


@recipe_files
def test_recipe_runs_and_writes_every_edit(recipe: Path, tmp_path: Path) -> None:
    """run writes one image per edit and a manifest.json that records every edit."""
    edits = list(build_recipe(recipe).edits)
    # A recipe written for batches (it takes its input as a pathlib.Path) runs once per item,
    # so two steps make a chain there; the others show longer chains.
    shortest = 2 if "pathlib" in recipe.read_text(encoding="utf-8") else 3
    assert len(edits) >= shortest, "a recipe is a multi-step chain, not a single call"
    result = invoke("run", str(recipe), "--out", "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    manifest = eg.Manifest.model_validate_json((out / "manifest.json").read_text())
    assert [entry.node for entry in manifest.edits] == edits
    assert manifest.edits_run == len(edits) and not manifest.failures
    images = sorted(path.name for path in out.iterdir() if path.name != "manifest.json")
    assert images == sorted(entry.file for entry in manifest.edits)
    assert all((out / entry.file).stat().st_size > 0 for entry in manifest.edits)


@recipe_files
def test_plan_after_run_has_nothing_to_run(recipe: Path) -> None:
    """After a run, plan shows every edit cached and an estimate of $0."""
    assert invoke("run", str(recipe), "--out", "out").exit_code == 0
    plan = invoke("plan", str(recipe))
    assert plan.exit_code == 0, plan.output
    count = len(build_recipe(recipe).edits)
    assert f"0 to run, {count} cached" in plan.stdout
    assert "estimated $0.0000" in plan.stdout


@recipe_files
def test_recipe_has_a_docstring(recipe: Path) -> None:
    """Each recipe file opens with a docstring saying what it makes."""
    docstring = ast.get_docstring(ast.parse(recipe.read_text(encoding="utf-8")))
    assert docstring and "Makes" in docstring, recipe.name


@recipe_files
def test_recipe_parameters_are_typed_with_defaults(recipe: Path) -> None:
    """Every parameter of recipe() has a type hint and a default, and it returns eg.Graph."""
    function = load_recipe(recipe).recipe
    hints = get_type_hints(function)
    assert hints.get("return") is eg.Graph
    parameters = inspect.signature(function).parameters
    assert parameters, "a recipe takes at least one parameter to adapt it"
    for name, parameter in parameters.items():
        assert name in hints, f"{recipe.name}: {name} has no type hint"
        assert parameter.default is not inspect.Parameter.empty, f"{recipe.name}: {name}"


@recipe_files
def test_setting_the_defaults_changes_nothing(recipe: Path) -> None:
    """--set with every parameter's default, as text, plans exactly as no --set does."""
    parameters = inspect.signature(load_recipe(recipe).recipe).parameters
    sets = [arg for name, parameter in parameters.items()
            for arg in ("--set", f"{name}={parameter.default}")]
    plain = invoke("plan", str(recipe))
    assert plain.exit_code == 0, plain.output
    with_sets = invoke("plan", str(recipe), *sets)
    assert with_sets.exit_code == 0, with_sets.output
    assert with_sets.stdout == plain.stdout


def test_recipe_sources_are_shipped_and_small() -> None:
    """The sample inputs the recipes read are in examples/assets/, well under 5 MB in all."""
    total = sum(path.stat().st_size for path in ASSETS.iterdir() if path.is_file())
    assert total < 5 * 1024 * 1024, f"examples/assets/ is {total / 1024 / 1024:.1f} MB"
    for recipe in RECIPES:
        for source in build_recipe(recipe).sources.values():
            assert (ROOT / "recipes" / source.source).resolve().parent == ASSETS, source.source


@recipe_files
def test_recipe_runs_unchanged_on_bfl(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--provider bfl against FakeBFL: every recipe runs (dev is refused naming what BFL hosts),
    and the manifest's costs are what the fake charged."""
    from editgraph.testing import FakeBFL

    with FakeBFL(api_key="bfl_R8w3Jm5Yp1") as fake:
        monkeypatch.setenv("BFL_API_KEY", "bfl_R8w3Jm5Yp1")
        monkeypatch.setenv("BFL_BASE_URL", fake.base_url)
        result = invoke("run", str(recipe), "--provider", "bfl", "--out", "out")
        billed = fake.billed
    models = {node.model.id for node in build_recipe(recipe).edits.values()
              if isinstance(node, EditNode)}
    if "black-forest-labs/FLUX.2-dev" in models:
        assert result.exit_code == 2, result.output
        assert "BFL hosts no endpoint for FLUX.2 [dev]" in result.stderr
        assert "flux.2-pro" in result.stderr and billed == []
        return
    assert result.exit_code == 0, result.output
    manifest = eg.Manifest.model_validate_json((tmp_path / "out" / "manifest.json").read_text())
    ops = sum(entry.record.kind == "op" for entry in manifest.edits)
    assert manifest.provider == "bfl" and manifest.edits_run - ops == len(billed)
    assert manifest.estimated_cost == pytest.approx(sum(entry["cost"] for entry in billed) / 100)

"""Files editgraph 0.1.0 wrote (tests/fixtures/v0_1_0) still read, run and replay."""

from __future__ import annotations

import importlib.util
import json
import shutil
import types
from pathlib import Path

import pytest

import editgraph as eg
from editgraph.records import RECORD_VERSION, EditRecord
from editgraph.replay import replay
from editgraph.report import report_from_folder
from editgraph.saved import read_manifest
from editgraph.store import DiskStore

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1_0"


@pytest.fixture
def old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the 0.1.0 files (cache, run, sources), as the working directory."""
    copy = tmp_path / "v0_1_0"
    shutil.copytree(FIXTURES, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.chdir(copy)
    return copy


def recipe() -> types.ModuleType:
    """The script that made the fixtures: its graph() is the graph they record."""
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def saved_keys(folder: Path) -> dict[str, str]:
    """Node name -> key, as the 0.1.0 manifest.json lists them (read as plain JSON)."""
    manifest = json.loads((folder / "run" / "manifest.json").read_text())
    return {entry["node"]: entry["key"] for entry in manifest["edits"]}


def test_old_cache_records_are_migrated(old: Path) -> None:
    """Each 0.1.0 cache record reads as an EditRecord of the current schema, facts intact."""
    keys = saved_keys(old)
    store = DiskStore(old / "cache")
    try:
        records = {record.node: record for record in store.records()}
        assert set(records) == set(keys)
        blue = records["blue"]
        assert blue.schema_version == RECORD_VERSION and blue.editgraph_version == "0.1.0"
        assert blue.key == keys["blue"] and blue.model == "black-forest-labs/FLUX.2-pro"
        assert blue.prompt.startswith("Change the colour of the car in image 1")
        assert [reference.source for reference in blue.references] == [
            "sources/car.png", "sources/swatch.png"]
        assert blue.parameters["width"] == 256 and "seed" not in blue.parameters
        assert records["night"].seed == 7 and records["night"].media_type == "image/png"
        assert records["poster"].parameters["steps"] == 20
        assert store.get_record(keys["night"]) == records["night"]
    finally:
        store.close()


def test_the_same_graph_is_served_from_an_old_cache(old: Path) -> None:
    """Rebuilding the recorded graph against the 0.1.0 cache: same keys, all cached."""
    graph = recipe().graph()
    plan = graph.plan(provider=eg.providers.Preview(), cache_dir=old / "cache")
    assert plan.to_run == [] and sorted(plan.cached) == ["blue", "night", "poster"]
    run = graph.run(provider=eg.providers.Preview(), cache_dir=old / "cache")
    assert all(result.cached for result in run.values())
    assert {name: result.key for name, result in run.items()} == saved_keys(old)
    assert run["night"].image.size == (256, 256)


def test_old_plan_history_still_says_what_changed(old: Path) -> None:
    """plan's reasons read 0.1.0's history: a changed prompt is named as the change."""
    graph = eg.Graph(model="flux.2-pro", width=256, height=256)
    car = graph.image("sources/car.png")
    swatch = graph.image("sources/swatch.png")
    graph.edit(f"Change the colour of the car in {car} to the colour of {swatch} at dusk",
               name="blue")
    plan = graph.plan(provider=eg.providers.Preview(), cache_dir=old / "cache")
    assert plan.to_run == ["blue"]
    assert "prompt" in plan.reasons["blue"] and "dusk" in plan.reasons["blue"]


def test_old_manifest_is_read(old: Path) -> None:
    """A 0.1.0 manifest.json reads; each entry's record holds what the entry said."""
    manifest = read_manifest(old / "run")
    assert [entry.record.node for entry in manifest.edits] == ["blue", "night", "poster"]
    assert [entry.file for entry in manifest.edits] == ["blue.jpg", "night.png", "poster.jpg"]
    blue = manifest.edits[0]
    assert blue.record.cost == pytest.approx(0.03) and blue.estimated_cost == pytest.approx(0.03)
    assert blue.record.key == saved_keys(old)["blue"]
    again = type(manifest).model_validate_json(manifest.model_dump_json())
    assert again == manifest  # and it writes back in the current format


def test_old_provenance_is_read(old: Path) -> None:
    """Provenance embedded by 0.1.0 in a JPEG and a PNG reads as an EditRecord."""
    keys = saved_keys(old)
    for file, node in (("blue.jpg", "blue"), ("night.png", "night")):
        record = eg.provenance(old / "run" / file)
        assert isinstance(record, EditRecord)
        assert record.node == node and record.key == keys[node]
        assert record.editgraph_version == "0.1.0" and record.schema_version == RECORD_VERSION


def test_old_run_replays_and_verifies(old: Path, tmp_path: Path) -> None:
    """replay --verify of a 0.1.0 run: from its cache, and regenerated without one."""
    cached = replay(old / "run", cache_dir=old / "cache", verify=True)
    assert sorted(cached.cached) == ["blue", "night", "poster"] and cached.mismatches == {}
    fresh = replay(old / "run" / "manifest.json", cache_dir=tmp_path / "fresh", verify=True)
    assert sorted(fresh.generated) == ["blue", "night", "poster"] and fresh.mismatches == {}
    image = replay(old / "run" / "night.png", cache_dir=old / "cache", verify=True)
    assert image.cached == ["night"] and image.mismatches == {}


def test_old_run_folder_reports(old: Path) -> None:
    """editgraph report renders a folder 0.1.0 saved."""
    page = report_from_folder(old / "run").read_text(encoding="utf-8")
    assert "Make image 1 a night scene" in page and "poster" in page


def test_a_record_from_a_newer_version_is_refused(old: Path) -> None:
    """A record or manifest entry of a newer schema is refused, saying so."""
    record = recipe_record(old)
    newer = json.loads(record.model_dump_json()) | {"schema_version": RECORD_VERSION + 1}
    with pytest.raises(ValueError, match="newer editgraph"):
        EditRecord.from_json(json.dumps(newer))
    manifest = json.loads((old / "run" / "manifest.json").read_text())
    manifest["edits"][0]["schema_version"] = RECORD_VERSION + 1
    (old / "run" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(eg.GraphError, match="newer editgraph"):
        read_manifest(old / "run")


def recipe_record(folder: Path) -> EditRecord:
    """One record of the old cache."""
    store = DiskStore(folder / "cache")
    try:
        return next(iter(store.records()))
    finally:
        store.close()

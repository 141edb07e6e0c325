"""Tests for runs.py: Run as a mapping, NodeResult, run.save and the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from edit_providers import CountingProvider, png_bytes
from PIL import Image

import editgraph as eg
from editgraph.provenance import remove_provenance
from editgraph.testing import FakeTogether

RED = png_bytes((255, 0, 0))
BLUE = png_bytes((0, 0, 255))
SECRET = "tg-test-key-must-never-be-written-0123456789"


def diamond(cache: Path) -> eg.Graph:
    """Sources car and swatch; edits blue (both), night (blue), poster (night), sketch (car)."""
    graph = eg.Graph(cache_dir=cache)
    car = graph.image(RED, name="car")
    swatch = graph.image(BLUE, name="swatch")
    blue = graph.edit(f"Colour {car} like {swatch}", name="blue")
    night = graph.edit(f"Make {blue} a night scene", name="night", seed=7)
    graph.edit(f"A poster of {night}", name="poster", output_format="png")
    graph.edit(f"A sketch of {car}", name="sketch")
    return graph


@pytest.fixture
def run(tmp_path: Path) -> eg.Run:
    """A finished run of the diamond graph with a counting provider."""
    return diamond(tmp_path / "cache").run(provider=CountingProvider())


def test_run_is_a_mapping_of_edits_in_topological_order(run: eg.Run) -> None:
    """Iterating yields edit names (no sources) in topological order; len counts edits."""
    assert list(run) == ["blue", "night", "poster", "sketch"]
    assert len(run) == 4
    assert "car" not in run and "swatch" not in run
    assert isinstance(run["night"], eg.NodeResult)
    with pytest.raises(KeyError):
        run["car"]
    assert repr(run).startswith("<Run 4 edits: 4 run, 0 cached")


def test_node_result_fields(run: eg.Run) -> None:
    """A NodeResult carries its name, key, request, image, bytes, timing and cost."""
    night = run["night"]
    assert night.name == "night"
    assert len(night.key) == 64 and int(night.key, 16) >= 0
    assert night.cached is False
    assert night.request.prompt == "Make image 1 a night scene"
    assert night.request.seed == 7
    assert [reference.source for reference in night.request.references] == ["blue"]
    assert night.request.references[0].hash == run["blue"].output_hash
    assert night.media_type == "image/png"
    assert night.output_hash == hashlib.sha256(night.data).hexdigest()
    assert isinstance(night.image, Image.Image)
    assert night.image.size == (night.width, night.height)
    assert night.elapsed >= 0.0
    assert night.cost == pytest.approx(0.03)
    assert "night" in repr(night)


def test_cached_result_costs_nothing(tmp_path: Path) -> None:
    """A cached NodeResult has cost 0 and the same key and bytes as the first run."""
    graph = diamond(tmp_path / "cache")
    first = graph.run(provider=CountingProvider())
    second = graph.run(provider=CountingProvider())
    assert second["night"].cached and second["night"].cost == 0.0
    assert second["night"].key == first["night"].key
    assert second["night"].data == first["night"].data
    assert second.cost == 0.0 and first.cost == pytest.approx(0.12)


def test_save_writes_one_file_per_edit_and_a_manifest(run: eg.Run, tmp_path: Path) -> None:
    """save() writes one image per edit named after the node, and manifest.json; no temp files."""
    out = tmp_path / "out" / "nested"
    assert run.save(out) == out
    files = sorted(path.name for path in out.iterdir())
    assert files == ["blue.png", "manifest.json", "night.png", "poster.png", "sketch.png"]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
    for name in run:
        saved = (out / run[name].filename).read_bytes()
        assert remove_provenance(saved) == run[name].data  # the bytes plus their record
        assert eg.provenance(out / run[name].filename).key == run[name].key
    # Saving again over the same folder replaces the files in place.
    run.save(out)
    assert sorted(path.name for path in out.iterdir()) == files


def test_failed_save_leaves_no_temporary_file(run: eg.Run, tmp_path: Path) -> None:
    """When a file cannot be renamed into place, its temporary file is removed."""
    out = tmp_path / "out"
    (out / "night.png").mkdir(parents=True)  # a folder where the image should go
    with pytest.raises(OSError):
        run.save(out)
    assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")]
    assert (out / "night.png").is_dir()


def test_manifest_validates_and_records_everything(run: eg.Run, tmp_path: Path) -> None:
    """manifest.json validates as eg.Manifest with every key, seed, hash and cost."""
    run.save(tmp_path / "out")
    manifest = eg.Manifest.model_validate_json((tmp_path / "out" / "manifest.json").read_text())
    assert manifest == run.manifest
    assert manifest.provider == "counting"
    assert [entry.node for entry in manifest.edits] == list(run)
    for entry in manifest.edits:
        result = run[entry.node]
        assert entry.key == result.key
        assert entry.seed == result.request.seed
        assert entry.output_hash == result.output_hash
        assert entry.file == result.filename
        assert [ref.hash for ref in entry.references] == [
            ref.hash for ref in result.request.references
        ]
        assert entry.estimated_cost == pytest.approx(0.03)
    blue = manifest.edits[0]
    assert [ref.source for ref in blue.references] == ["<bytes>", "<bytes>"]
    assert [ref.hash for ref in blue.references] == [
        hashlib.sha256(RED).hexdigest(), hashlib.sha256(BLUE).hexdigest(),
    ]
    assert manifest.edits_run == 4 and manifest.edits_cached == 0
    assert manifest.estimated_cost == pytest.approx(0.12)
    assert manifest.failures == {} and manifest.possibly_billed_twice == []


def test_manifest_reports_unknown_outcomes(tmp_path: Path) -> None:
    """A result after an unknown outcome is listed as possibly billed twice."""
    graph = diamond(tmp_path / "cache")
    run = graph.run(provider=CountingProvider(unknown_outcomes={"night": 1}))
    manifest = run.manifest
    assert manifest.possibly_billed_twice == ["night"]
    entry = next(entry for entry in manifest.edits if entry.node == "night")
    assert entry.unknown_outcomes == 1
    # A later run serves it from the cache: nothing was re-sent, nothing billed twice.
    assert graph.run(provider=CountingProvider()).manifest.possibly_billed_twice == []


def test_manifest_lists_failures(tmp_path: Path) -> None:
    """A partial run's manifest records each failure by node."""
    graph = diamond(tmp_path / "cache")
    with pytest.raises(eg.RunError) as caught:
        graph.run(provider=CountingProvider(fail={"night"}))
    partial = caught.value.run
    assert isinstance(partial, eg.Run)
    manifest = partial.manifest
    assert set(manifest.failures) == {"night", "poster"}
    assert "refuses night" in manifest.failures["night"]
    assert "'night'" in manifest.failures["poster"]
    partial.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "blue.png", "manifest.json", "sketch.png",
    ]


def test_manifest_carries_no_secret(tmp_path: Path) -> None:
    """A run through Together (on the loopback fake) writes no API key anywhere in its output."""
    graph = diamond(tmp_path / "cache")
    with FakeTogether(api_key=SECRET) as fake:
        provider = eg.providers.Together(api_key=SECRET, base_url=fake.base_url)
        run = graph.run(provider=provider)
    out = run.save(tmp_path / "out")
    manifest_text = (out / "manifest.json").read_text()
    assert SECRET not in manifest_text
    assert SECRET not in repr(run.manifest) and SECRET not in repr(provider)
    for path in out.iterdir():
        assert SECRET.encode() not in path.read_bytes()
    assert json.loads(manifest_text)["provider"] == provider.name
    assert run["poster"].media_type == "image/png"
    assert run["night"].media_type == "image/jpeg"
    assert run["night"].filename == "night.jpg"


def test_preview_notice_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TOGETHER_API_KEY, the run uses Preview and its manifest says so."""
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    run = diamond(tmp_path / "cache").run()
    assert run.manifest.provider == "preview"
    assert run.manifest.notice is not None and "TOGETHER_API_KEY" in run.manifest.notice


def test_sweep_results_save_under_their_names(tmp_path: Path) -> None:
    """Sweep variants are saved as name[i] files."""
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    car = graph.image(RED, name="car")
    graph.edit(f"Paint {car}", name="paint", seed=[1, 2])
    out = graph.run(provider=CountingProvider()).save(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "paint[0].png", "paint[1].png",
    ]

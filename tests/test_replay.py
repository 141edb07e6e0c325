"""Tests for replay.py: re-running a saved run, or the edit one saved image came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from edit_providers import CountingProvider, png_bytes

import editgraph as eg
from editgraph.replay import replay
from editgraph.store import DiskStore
from editgraph.testing import FakeTogether

RED = png_bytes((255, 0, 0))
BLUE = png_bytes((0, 0, 255))


def build(folder: Path, cache: Path) -> eg.Graph:
    """car.png and swatch.png on disk; blue (both), night (blue), poster (night, PNG)."""
    (folder / "car.png").write_bytes(RED)
    (folder / "swatch.png").write_bytes(BLUE)
    graph = eg.Graph(cache_dir=cache, width=256, height=256)
    car = graph.image(folder / "car.png")
    swatch = graph.image(folder / "swatch.png")
    blue = graph.edit(f"Colour {car} like {swatch}", name="blue")
    night = graph.edit(f"Make {blue} a night scene", name="night", seed=7)
    graph.edit(f"A poster of {night} with {car}", name="poster", output_format="png")
    return graph


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A run of the graph with the Preview provider, saved to tmp_path/out."""
    run = build(tmp_path, tmp_path / "cache").run(provider=eg.providers.Preview())
    return run.save(tmp_path / "out")


def test_replay_of_a_cached_run(saved: Path, tmp_path: Path) -> None:
    """With the cache intact every edit is served from it, with the recorded key."""
    result = replay(saved / "manifest.json", cache_dir=str(tmp_path / "cache"), verify=True)
    assert result.edits == ["blue", "night", "poster"]
    assert result.cached == ["blue", "night", "poster"] and result.generated == []
    assert result.mismatches == {}
    manifest = json.loads((saved / "manifest.json").read_text())
    assert result.run is not None
    assert [result.run[e["node"]].key for e in manifest["edits"]] == [
        e["key"] for e in manifest["edits"]
    ]


def test_replay_regenerates_from_an_empty_cache(saved: Path, tmp_path: Path) -> None:
    """A fresh cache: each edit is generated again from the recorded sources, identically."""
    result = replay(saved, cache_dir=str(tmp_path / "fresh"), verify=True)
    assert result.generated == ["blue", "night", "poster"] and result.cached == []
    assert result.mismatches == {}


def test_replay_of_one_saved_image(saved: Path, tmp_path: Path) -> None:
    """An image replays just its own edit; its upstream input comes from the sibling file."""
    result = replay(saved / "poster.png", cache_dir=str(tmp_path / "fresh"), verify=True)
    assert result.edits == ["poster"] and result.generated == ["poster"]
    assert result.mismatches == {}
    assert result.run is not None
    assert result.run["poster"].key == eg.provenance(saved / "poster.png").key


def test_replay_reports_a_different_output(saved: Path, tmp_path: Path) -> None:
    """verify names each edit whose output does not match the recorded hash."""
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["edits"][1]["output_hash"] = "0" * 64
    (saved / "manifest.json").write_text(json.dumps(manifest))
    result = replay(saved, cache_dir=str(tmp_path / "cache"), verify=True)
    assert list(result.mismatches) == ["night"]
    assert "differs from the recorded 000000000000" in result.mismatches["night"]
    assert replay(saved, cache_dir=str(tmp_path / "cache")).mismatches == {}


def test_replay_with_another_provider_is_a_key_mismatch(saved: Path, tmp_path: Path) -> None:
    """Another provider makes other keys: verify says so for every edit."""
    result = replay(saved, provider=CountingProvider(), cache_dir=str(tmp_path / "c"),
                    verify=True)
    assert set(result.mismatches) == {"blue", "night", "poster"}
    assert "key" in result.mismatches["blue"]


def test_a_cached_run_replays_without_its_source_files(saved: Path, tmp_path: Path) -> None:
    """Sources only feed cached edits: their files may be gone."""
    (tmp_path / "car.png").unlink()
    (tmp_path / "swatch.png").unlink()
    result = replay(saved, cache_dir=str(tmp_path / "cache"), verify=True)
    assert result.cached == ["blue", "night", "poster"]


def test_a_missing_source_names_the_edit_and_the_reference(saved: Path, tmp_path: Path) -> None:
    """An input neither in the cache nor on disk is a GraphError naming edit and image N."""
    (tmp_path / "swatch.png").write_bytes(RED)  # same name, other bytes: not the source
    with pytest.raises(eg.GraphError, match=r"edit 'blue': image 2 \(.*swatch.png, sha256"):
        replay(saved, cache_dir=str(tmp_path / "fresh"))


def test_a_source_is_found_in_the_store_by_hash(tmp_path: Path) -> None:
    """A source given as bytes (nothing on disk) is read back from the store's blob."""
    cache = tmp_path / "cache"
    graph = eg.Graph(cache_dir=cache, width=256, height=256)
    graph.edit(f"Paint {graph.image(RED, name='car')} blue", name="blue")
    out = graph.run(provider=eg.providers.Preview()).save(tmp_path / "out")
    fresh = tmp_path / "fresh"
    with pytest.raises(eg.GraphError, match=r"image 1 \(<bytes>"):
        replay(out, cache_dir=str(fresh))
    DiskStore(fresh).put_blob(eg.provenance(out / "blue.jpg").references[0].hash, RED)
    assert replay(out, cache_dir=str(fresh), verify=True).generated == ["blue"]


def test_a_moved_run_folder_finds_sources_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative source paths are also looked for next to the saved run, wherever it is now."""
    work, share = tmp_path / "work", tmp_path / "share"
    work.mkdir()
    monkeypatch.chdir(work)
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    (work / "car.png").write_bytes(RED)
    graph.edit(f"Paint {graph.image('car.png')} blue", name="blue")
    graph.run(provider=eg.providers.Preview()).save(work / "out")
    shutil.copytree(work, share)  # the folder and its source, sent to a colleague
    shutil.rmtree(work)
    monkeypatch.chdir(tmp_path)
    result = replay(share / "out", cache_dir=str(tmp_path / "fresh"), verify=True)
    assert result.generated == ["blue"] and result.mismatches == {}


def test_an_unknown_recorded_provider_needs_one_given(tmp_path: Path) -> None:
    """A run made by a provider replay cannot create asks for provider=; given one, it runs."""
    run = build(tmp_path, tmp_path / "cache").run(provider=CountingProvider())
    out = run.save(tmp_path / "out")
    with pytest.raises(eg.GraphError, match="provider 'counting'.*pass provider="):
        replay(out, cache_dir=str(tmp_path / "cache"))
    result = replay(out, provider=CountingProvider(), cache_dir=str(tmp_path / "cache"),
                    verify=True)
    assert result.cached == ["blue", "night", "poster"] and result.mismatches == {}


def test_replay_through_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run recorded with 'together' replays through Together (here the loopback fake)."""
    with FakeTogether() as fake:
        monkeypatch.setenv("TOGETHER_API_KEY", "test-key")
        monkeypatch.setenv("TOGETHER_BASE_URL", fake.base_url)
        graph = build(tmp_path, tmp_path / "cache")
        out = graph.run(provider=eg.providers.Together()).save(tmp_path / "out")
        before = len(fake.requests)
        result = replay(out, cache_dir=str(tmp_path / "fresh"), verify=True)
    assert result.generated == ["blue", "night", "poster"] and result.mismatches == {}
    assert len(fake.requests) == before + 3


def test_replay_of_what_is_not_a_record(tmp_path: Path) -> None:
    """A plain image, JSON that is not a manifest and a missing file are GraphErrors."""
    (tmp_path / "plain.png").write_bytes(RED)
    with pytest.raises(eg.GraphError, match="without an editgraph record"):
        replay(tmp_path / "plain.png", cache_dir=str(tmp_path / "cache"))
    (tmp_path / "notes.json").write_text('{"hello": "world"}')
    with pytest.raises(eg.GraphError, match="not a manifest editgraph wrote"):
        replay(tmp_path / "notes.json", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(eg.GraphError, match="cannot read"):
        replay(tmp_path / "gone.json", cache_dir=str(tmp_path / "cache"))

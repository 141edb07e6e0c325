"""Tests for saved.py: writing a run to a folder, and reading it back (edges from hashes,
source names, bytes)."""

from __future__ import annotations

from pathlib import Path

from edit_providers import png_bytes

import editgraph as eg
from editgraph.keys import content_hash
from editgraph.saved import (
    find_image_bytes,
    read_manifest,
    saved_inputs,
    source_names,
    write_atomically,
)
from editgraph.store import DiskStore

RED = png_bytes((255, 0, 0))
BLUE = png_bytes((0, 0, 255))


def saved_run(tmp_path: Path) -> Path:
    """car.png on disk and a bytes swatch; blue (both), night (blue, car); saved."""
    (tmp_path / "car.png").write_bytes(RED)
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(tmp_path / "car.png")
    swatch = graph.image(BLUE, name="swatch")
    blue = graph.edit(f"Colour {car} like {swatch}", name="blue")
    graph.edit(f"Make {blue} night, keep {car}", name="night")
    return graph.run(provider=eg.providers.Preview()).save(tmp_path / "out")


def test_inputs_made_by_an_edit_are_edges(tmp_path: Path) -> None:
    """An input whose hash is an earlier edit's output comes from that edit; others are sources."""
    manifest = read_manifest(saved_run(tmp_path))
    inputs = saved_inputs(manifest)
    assert [(i.index, i.upstream) for i in inputs["blue"]] == [(1, None), (2, None)]
    assert [(i.index, i.upstream) for i in inputs["night"]] == [(1, "blue"), (2, None)]


def test_sources_get_unique_names_from_their_files(tmp_path: Path) -> None:
    """Sources are named after their file stem; bytes without one are called image."""
    manifest = read_manifest(saved_run(tmp_path))
    assert source_names(manifest) == {content_hash(RED): "car", content_hash(BLUE): "image"}


def test_find_image_bytes_in_the_store_beside_the_run_or_at_the_path(tmp_path: Path) -> None:
    """Bytes come from the store, a saved image (record removed) or the recorded path."""
    out = saved_run(tmp_path)
    blue = eg.provenance(out / "blue.jpg")
    assert find_image_bytes(blue.output_hash, "blue", folder=out) is not None
    assert find_image_bytes(content_hash(RED), str(tmp_path / "car.png"), folder=out) == RED
    assert find_image_bytes(content_hash(BLUE), "<bytes>", folder=out) is None
    store = DiskStore(tmp_path / "other")
    store.put_blob(content_hash(BLUE), BLUE)
    assert find_image_bytes(content_hash(BLUE), "<bytes>", folder=out, store=store) == BLUE
    (tmp_path / "car.png").write_bytes(BLUE)  # same path, other bytes: not the source
    assert find_image_bytes(content_hash(RED), str(tmp_path / "car.png"), folder=out) is None


def test_a_saved_folder_holds_the_images_and_the_manifest(tmp_path: Path) -> None:
    """save writes one image per edit (its record embedded) and manifest.json, nothing else."""
    out = saved_run(tmp_path)
    assert sorted(path.name for path in out.iterdir()) == ["blue.jpg", "manifest.json", "night.jpg"]
    manifest = read_manifest(out)
    for entry in manifest.edits:
        assert eg.provenance(out / entry.file) == entry.record.model_copy(
            update={"url": None, "url_expires_at": None})


def test_write_atomically_replaces_a_planted_link(tmp_path: Path) -> None:
    """A symlink planted at the target is replaced, never written through; no temp file stays."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "manifest.json").symlink_to(victim)
    write_atomically(folder / "manifest.json", b"{}")
    assert victim.read_text() == "keep me"
    assert (folder / "manifest.json").read_bytes() == b"{}"
    assert not (folder / "manifest.json").is_symlink()
    assert [path.name for path in folder.iterdir()] == ["manifest.json"]

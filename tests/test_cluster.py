"""Batches on Dask (editgraph/cluster.py): a LocalCluster of worker processes, moto's S3 on
loopback as the shared cache, FakeTogether in this process reached over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from edit_providers import png_bytes

import editgraph as eg
from editgraph.batch import BatchItem
from editgraph.cli import main
from editgraph.cluster import (
    ItemTask,
    Limits,
    ProviderSpec,
    open_pool,
    parse_cluster,
    provider_spec,
)
from editgraph.errors import ConfigurationError, GraphError
from editgraph.recipe import Recipe
from editgraph.testing import FakeTogether

pytest.importorskip("distributed")
pytest.importorskip("obstore")
pytest.importorskip("moto")

from editgraph.testing.s3 import MotoS3

ONE_EDIT = '''
from pathlib import Path
import editgraph as eg

def recipe(photo: Path) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=256, height=256)
    product = g.image(photo, name="product")
    g.edit(f"Put {product} on a plain studio backdrop", name="studio")
    return g
'''

KEY = "k-cluster"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoS3]:
    """moto on loopback; the AWS variables point at it (workers inherit them); a private
    local cache per test. moto keeps one backend per process, so each test uses its own
    prefix (``team(tmp_path)``)."""
    with MotoS3() as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        monkeypatch.setenv("TOGETHER_API_KEY", KEY)  # workers read the key from their environment
        yield server


def team(s3: MotoS3, tmp_path: Path) -> str:
    """This test's own prefix in the bucket."""
    return s3.url(f"team-{tmp_path.name}")


def write_recipe(folder: Path, text: str = ONE_EDIT) -> Path:
    """A recipe file in ``folder``."""
    path = folder / "studio.py"
    path.write_text(text)
    return path


def inputs_with_duplicates(folder: Path, unique: int, copies: int) -> Path:
    """``unique`` distinct small PNGs, each saved ``copies`` times under different names."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(unique):
        data = png_bytes((10 + 7 * number % 240, 40 + 3 * number % 200, 90), (48, 40))
        for copy in range(copies):
            (folder / f"p{number:03d}-{copy}.png").write_bytes(data)
    return folder


def together(fake: FakeTogether) -> eg.providers.Together:
    """Together pointed at the fake."""
    return eg.providers.Together(api_key=KEY, base_url=fake.base_url)


def comparable(out: Path) -> list[dict[str, Any]]:
    """batch.jsonl without its timings or who-paid-first (cost, cached), sorted by id."""
    lines = [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()]
    for line in lines:
        for field in ("elapsed", "finished_at", "cost", "cached"):
            line.pop(field)
    return sorted(lines, key=lambda line: line["id"])


def output_hashes(out: Path) -> dict[str, dict[str, str]]:
    """Item id -> node -> output hash, from each item's manifest.json."""
    hashes = {}
    for manifest in sorted(out.glob("*/manifest.json")):
        edits = json.loads(manifest.read_text())["edits"]
        hashes[manifest.parent.name] = {edit["node"]: edit["output_hash"] for edit in edits}
    return hashes


# ---------------------------------------------------------------------------- arguments


def test_cluster_addresses_are_parsed() -> None:
    """local:N and scheduler addresses are read; anything else is refused with an example."""
    assert parse_cluster("local:3") == ("local", 3)
    assert parse_cluster("tcp://10.0.0.5:8786") == ("remote", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:two", "10.0.0.5:8786"):
        with pytest.raises(ConfigurationError, match="--cluster"):
            parse_cluster(bad)


def test_a_remote_cluster_refuses_a_local_cache_folder(tmp_path: Path) -> None:
    """--cluster tcp://… with a cache folder exits 2 with a message naming --cache s3://."""
    result = CliRunner().invoke(main, [
        "batch", str(write_recipe(tmp_path)), "--over", str(tmp_path), "--provider", "preview",
        "--cluster", "tcp://127.0.0.1:1", "--cache", str(tmp_path / "cache"),
        "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "--cache s3://BUCKET/PREFIX" in result.output
    assert not (tmp_path / "out").exists()


def test_a_bad_cluster_address_exits_2(tmp_path: Path) -> None:
    """An unreadable --cluster exits 2 before anything runs."""
    result = CliRunner().invoke(main, [
        "batch", str(write_recipe(tmp_path)), "--over", str(tmp_path), "--provider", "preview",
        "--cluster", "local:none", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "local:N" in result.output


def test_a_recipe_function_cannot_go_to_a_cluster(tmp_path: Path) -> None:
    """A cluster needs the recipe's source: a callable is refused before anything runs."""
    def recipe(photo: Path) -> eg.Graph:
        return eg.Graph()

    with pytest.raises(GraphError, match="recipe file"):
        eg.batch(recipe, [{"photo": "a.png"}], cluster="local:1", out=tmp_path / "out",
                 provider=eg.providers.Preview())


def test_a_recipe_built_from_its_source_matches_the_file(tmp_path: Path) -> None:
    """Recipe.from_source (what a worker does) builds the same graph as Recipe.load."""
    file = write_recipe(tmp_path)
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes((1, 2, 3)))
    loaded = Recipe.load(file)
    assert loaded.source == file.read_text()
    again = Recipe.from_source(loaded.source, label=loaded.label, root=loaded.root)
    provider = eg.providers.Preview()
    first = loaded.build({"photo": image}).plan(provider=provider, cache_dir=tmp_path / "c")
    second = again.build({"photo": str(image)}).plan(provider=provider, cache_dir=tmp_path / "c")
    assert [step.key for step in first.steps] == [step.key for step in second.steps]
    assert first.steps[0].key is not None


def test_providers_travel_as_name_and_settings_never_the_key() -> None:
    """A worker rebuilds the provider from its registered name and base URL; no key."""
    spec = provider_spec(eg.providers.Together(api_key="sk-secret", base_url="http://h:1"))
    assert spec == ProviderSpec(name="together", base_url="http://h:1")
    assert "sk-secret" not in spec.model_dump_json()


def test_an_s3_image_host_travels_with_the_provider(s3: MotoS3) -> None:
    """--image-host reaches the workers as its s3:// address and expiry."""
    host = eg.hosts.S3ImageHost(s3.url("refs"), expires=600)
    spec = provider_spec(eg.providers.Together(api_key=KEY, base_url="http://h:1",
                                               image_host=host))
    assert (spec.image_host, spec.image_host_expires) == (s3.url("refs"), 600)


# ---------------------------------------------------------------------------- on a cluster


@pytest.mark.slow
def test_a_batch_on_two_workers_pays_each_request_once_and_matches_a_local_batch(
    s3: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 inputs (10 unique) on local:2: 10 paid, peak ≤ the cap, same results as a local batch."""
    recipe = write_recipe(tmp_path)
    inputs = inputs_with_duplicates(tmp_path / "in", unique=10, copies=3)
    with FakeTogether(latency=0.05) as fake:
        result = eg.batch(recipe, inputs, out=tmp_path / "out", provider=together(fake),
                          cache=team(s3, tmp_path), cluster="local:2", concurrency=6,
                          max_inflight=3)
        cluster_billed = len(fake.billed)
        peak = fake.peak_in_flight
    assert result.summary.done == 30 and result.summary.exit_code == 0
    assert cluster_billed == 10
    assert 1 <= peak <= 3
    items = list(result)
    assert {item.status for item in items} == {"done"}

    with FakeTogether() as fake:
        local = eg.batch(recipe, inputs, out=tmp_path / "local", provider=together(fake),
                         cache=tmp_path / "local-cache")
        assert len(fake.billed) == 10
    assert local.summary.cost == pytest.approx(result.summary.cost)
    assert comparable(tmp_path / "out") == comparable(tmp_path / "local")
    assert output_hashes(tmp_path / "out") == output_hashes(tmp_path / "local")
    for item in items:  # the same image bytes, provenance block apart
        for node, file in item.outputs.items():
            ours = eg.provenance(tmp_path / "out" / file)
            theirs = eg.provenance(tmp_path / "local" / file)
            assert ours.output_hash == theirs.output_hash, (item.id, node)
    links = re.compile(r'(?:src|href)="([^"]+)"')
    page = (tmp_path / "out" / "batch.html").read_text()
    local_page = (tmp_path / "local" / "batch.html").read_text()
    assert set(links.findall(page)) == set(links.findall(local_page))
    assert page.count('class="item') == local_page.count('class="item') > 0

    # A second machine (its own local cache) pays nothing for the same batch.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-2"))
    with FakeTogether() as fake:
        again = eg.batch(recipe, inputs, out=tmp_path / "again", provider=together(fake),
                         cache=team(s3, tmp_path), cluster="local:2")
        assert fake.billed == []
    assert again.summary.cached == 30


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing_and_pays_nothing_twice(
    s3: MotoS3, tmp_path: Path
) -> None:
    """SIGKILL one worker while items run: every item finishes; no finished edit is paid again."""
    import psutil

    recipe = write_recipe(tmp_path)
    inputs = inputs_with_duplicates(tmp_path / "in", unique=12, copies=1)
    killed: list[int] = []

    with FakeTogether(latency=0.4) as fake:

        class KillOnFirst:
            """Kills one worker process when the first item finishes."""

            def started(self, item_id: str) -> None:
                pass

            def finished(self, item: BatchItem, failed: int, spend: float) -> None:
                if killed:
                    return
                workers = [
                    child for child in psutil.Process().children()
                    if "spawn_main" in " ".join(child.cmdline())
                ]
                assert workers, "no worker process found"
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(workers[0].pid)

        result = eg.batch(recipe, inputs, out=tmp_path / "out", provider=together(fake),
                          cache=team(s3, tmp_path), cluster="local:2", concurrency=6,
                          max_inflight=4, progress=KillOnFirst())
        billed = fake.billed
    assert killed
    assert result.summary.done == 12, [item.error for item in result if item.status != "done"]
    requests = [json.dumps(record["request"], sort_keys=True) for record in billed]
    paid_twice = len(requests) - len(set(requests))
    assert len(set(requests)) == 12
    # Only calls the killed worker had going can have been paid again: at most the cap.
    assert paid_twice <= 4
    for item in result:
        for file in item.outputs.values():
            assert (tmp_path / "out" / file).stat().st_size > 0


@pytest.mark.slow
def test_the_rate_holds_across_workers(s3: MotoS3, tmp_path: Path) -> None:
    """rate=2 per 1.5 s window across two workers: no 3 requests reach the service in one window."""
    recipe = write_recipe(tmp_path)
    loaded = Recipe.load(recipe)
    images = inputs_with_duplicates(tmp_path / "in", unique=6, copies=1)
    period = 1.5

    async def go(fake: FakeTogether) -> list[str]:
        spec = ProviderSpec(name="together", base_url=fake.base_url)
        template = ItemTask(
            recipe_source=loaded.source or "", recipe_label=loaded.label,
            recipe_root=str(loaded.root), id="", values={}, cache=team(s3, tmp_path),
            provider=spec, limits=Limits(name="rate-test", max_inflight=4, rate=2,
                                         period=period),
            concurrency=4,
        )
        async with open_pool("local:2", team(s3, tmp_path)) as pool:
            outcomes = await asyncio.gather(*(
                pool.run(template.model_copy(update={"id": image.stem,
                                                     "values": {"photo": str(image)}}))
                for image in sorted(images.iterdir())))
        return [outcome.status for outcome in outcomes]

    with FakeTogether() as fake:
        statuses = asyncio.run(go(fake))
        arrivals = sorted(fake.arrivals)
    assert statuses == ["done"] * 6
    assert len(arrivals) == 6
    for first, third in zip(arrivals, arrivals[2:]):
        assert third - first >= period

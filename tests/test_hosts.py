"""Image hosts (editgraph/hosts.py): local references reach the service as presigned S3 URLs."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import editgraph as eg
from editgraph.cli import main
from editgraph.testing import FakeTogether
from editgraph.testing.s3 import MotoS3
from edit_providers import png_bytes

pytest.importorskip("obstore")
pytest.importorskip("moto")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoS3]:
    """moto on loopback with one bucket; the AWS variables point at it."""
    with MotoS3() as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        yield server


def graph_with_local_images(tmp_path: Path) -> eg.Graph:
    """Two edits that both send the same local image, the second also the first's output."""
    (tmp_path / "car.png").write_bytes(png_bytes((200, 30, 30)))
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(tmp_path / "car.png")
    blue = graph.edit(f"Make {car} blue", name="blue")
    graph.edit(f"Put {car} next to {blue}", name="pair")
    return graph


def uploads(s3: MotoS3) -> list[str]:
    """Keys of the objects PUT so far."""
    return [request.path for request in s3.requests if request.method == "PUT"]


def test_local_images_reach_the_service_as_presigned_urls(s3: MotoS3, tmp_path: Path) -> None:
    """A run through S3ImageHost succeeds; the fake fetched presigned URLs on 127.0.0.1, and a
    reference used twice is uploaded once."""
    host = eg.hosts.S3ImageHost(s3.url("refs"), expires=600)
    with FakeTogether() as fake:
        provider = eg.providers.Together(api_key="k", base_url=fake.base_url, image_host=host)
        run = graph_with_local_images(tmp_path).run(provider=provider)
        sent = [url for body in fake.requests for url in body.get("reference_images", [])]
    assert run["pair"].image.size == (256, 256)
    car = run["blue"].request.references[0].hash
    assert uploads(s3) == [f"refs/{car}.png"]  # blue's car; pair sends car again: no upload
    fetched = [r for r in s3.requests if r.method == "GET" and r.path == f"refs/{car}.png"]
    assert len(fetched) >= 2 and all("X-Amz-Signature=" in r.query for r in fetched)
    assert sent and not any(url.startswith("data:") for url in sent)
    assert s3.objects("refs/")[f"refs/{car}.png"] == (tmp_path / "car.png").read_bytes()


def test_a_second_host_finds_the_upload_and_sends_nothing(s3: MotoS3, tmp_path: Path) -> None:
    """Another host object (another run or machine) checks the bucket and uploads nothing."""
    reference = eg.Reference(hash="ab" * 32, media_type="image/png", source="x.png",
                             data=png_bytes((1, 2, 3)))
    first = eg.hosts.S3ImageHost(s3.url("refs"))
    url = asyncio.run(first.url_for(reference))
    assert url.startswith(s3.endpoint) and "X-Amz-Expires=3600" in url
    s3.clear_log()
    again = asyncio.run(eg.hosts.S3ImageHost(s3.url("refs")).url_for(reference))
    assert uploads(s3) == [] and again.split("?")[0] == url.split("?")[0]


def test_the_host_refuses_a_bad_location_and_hides_the_secret(s3: MotoS3) -> None:
    """Not s3://: a StoreError; the repr names the bucket and never the secret key."""
    with pytest.raises(eg.StoreError, match="s3://BUCKET"):
        eg.hosts.S3ImageHost("https://example.com/x")
    host = eg.hosts.S3ImageHost(s3.url("refs"), expires=60)
    assert repr(host) == "S3ImageHost('s3://editgraph/refs', expires=60)"
    assert s3.environment()["AWS_SECRET_ACCESS_KEY"] not in repr(host)


def test_run_takes_image_host(s3: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`editgraph run --image-host s3://...` sends local images as presigned URLs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "car.png").write_bytes(png_bytes((10, 120, 30)))
    (tmp_path / "recipe.py").write_text(textwrap.dedent("""
        import editgraph as eg

        def recipe() -> eg.Graph:
            graph = eg.Graph(width=256, height=256)
            car = graph.image("car.png")
            graph.edit(f"Make {car} blue", name="blue")
            return graph
    """))
    with FakeTogether() as fake:
        monkeypatch.setenv("TOGETHER_API_KEY", "k")
        monkeypatch.setenv("TOGETHER_BASE_URL", fake.base_url)
        result = CliRunner().invoke(
            main, ["run", "recipe.py", "--image-host", s3.url("refs")])
        assert result.exit_code == 0, result.output
        assert len(fake.billed) == 1
    assert [key for key in uploads(s3) if key.startswith("refs/")]


def test_a_service_that_refuses_data_uris_is_served_through_the_host(s3: MotoS3, tmp_path: Path) -> None:
    """FakeTogether(accept_data_uris=False): without a host nothing is paid and the message
    names the host; with S3ImageHost the same graph runs."""
    with FakeTogether(accept_data_uris=False) as fake:
        inline = eg.providers.Together(api_key="k", base_url=fake.base_url)
        with pytest.raises(eg.RunError) as caught:
            graph_with_local_images(tmp_path).run(provider=inline, concurrency=1)
        assert fake.billed == []
        assert "S3ImageHost" in str(caught.value.failures["blue"])
        host = eg.hosts.S3ImageHost(s3.url("refs"))
        hosted = eg.providers.Together(api_key="k", base_url=fake.base_url, image_host=host)
        run = graph_with_local_images(tmp_path).run(provider=hosted)
        assert run["pair"].image.size == (256, 256) and len(fake.billed) == 2

"""The shared S3 store (editgraph/stores/s3.py) against moto's real S3 API on loopback."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import editgraph as eg
from editgraph.cli import main
from editgraph.store import DiskStore
from editgraph.stores import open_store
from editgraph.stores.s3 import S3Store, parse_s3_url
from editgraph.testing import FakeTogether
from editgraph.testing.s3 import MotoS3
from edit_providers import png_bytes

pytest.importorskip("obstore")
pytest.importorskip("moto")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoS3]:
    """moto on loopback with one bucket; the AWS variables point at it; a private local cache."""
    with MotoS3() as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        yield server


def together(fake: FakeTogether, **options: object) -> eg.providers.Together:
    """Together pointed at the fake."""
    return eg.providers.Together(api_key="k-test", base_url=fake.base_url, **options)  # type: ignore[arg-type]


def two_edit_graph(cache: object) -> eg.Graph:
    """A source and a chain of two edits."""
    graph = eg.Graph(cache_dir=cache, width=256, height=256)  # type: ignore[arg-type]
    car = graph.image(png_bytes((200, 30, 30)), name="car")
    blue = graph.edit(f"Make {car} blue", name="blue")
    graph.edit(f"Make {blue} a night scene", name="night")
    return graph


def test_moto_honours_conditional_puts(s3: MotoS3, tmp_path: Path) -> None:
    """moto answers 412 to If-None-Match: * on an existing key and to a stale If-Match."""
    import obstore
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    from editgraph.stores.s3 import connect

    objects = connect(parse_s3_url(s3.url("check")))
    first = obstore.put(objects, "a", b"1", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(objects, "a", b"2", mode="create")
    with pytest.raises(PreconditionError):
        obstore.put(objects, "a", b"2", mode={"e_tag": '"stale"'})
    obstore.put(objects, "a", b"3", mode={"e_tag": first["e_tag"]})
    assert s3.objects("check/") == {"check/a": b"3"}


def test_layout_under_the_prefix(s3: MotoS3, tmp_path: Path) -> None:
    """A run writes blobs/sha256/<2 hex>/<hash>, records/<key>.json, history/<graph>/<node>.json."""
    run = two_edit_graph(S3Store(s3.url("team/a"), local_dir=tmp_path / "local")).run(
        provider=eg.providers.Preview())
    keys = set(s3.objects("team/a/"))
    output = run["night"].output_hash
    assert f"team/a/blobs/sha256/{output[:2]}/{output}" in keys
    assert f"team/a/records/{run['night'].key}.json" in keys
    assert "team/a/history/__main__/night.json" in keys
    assert not any("/leases/" in key or "/probe/" in key for key in keys)
    record = json.loads(s3.objects(f"team/a/records/{run['night'].key}.json").popitem()[1])
    assert record["output_hash"] == output


def test_a_bucket_without_conditional_writes_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A store ignoring If-None-Match / If-Match is refused on first use, naming the need."""
    with MotoS3(conditional_writes=False) as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        with pytest.raises(eg.StoreError, match="If-None-Match: \\* and If-Match"):
            S3Store(server.url("p"), local_dir=tmp_path / "local")
        graph = two_edit_graph(server.url("p"))
        with pytest.raises(eg.StoreError, match="conditional writes"):
            graph.run(provider=eg.providers.Preview())


def test_second_pass_makes_no_s3_request(s3: MotoS3, tmp_path: Path) -> None:
    """A second pass on one machine (a new store object, same local cache) sends nothing to S3."""
    two_edit_graph(S3Store(s3.url("t"), local_dir=tmp_path / "local")).run(
        provider=eg.providers.Preview())
    s3.clear_log()
    run = two_edit_graph(S3Store(s3.url("t"), local_dir=tmp_path / "local")).run(
        provider=eg.providers.Preview())
    assert all(result.cached for result in run.values())
    assert run["night"].image.size == (256, 256)
    assert s3.requests == []


def test_another_machine_is_served_from_the_bucket(s3: MotoS3, tmp_path: Path) -> None:
    """A store with an empty local cache serves every edit from the bucket, byte for byte."""
    first = two_edit_graph(S3Store(s3.url("t"), local_dir=tmp_path / "one")).run(
        provider=eg.providers.Preview())
    second = two_edit_graph(S3Store(s3.url("t"), local_dir=tmp_path / "two")).run(
        provider=eg.providers.Preview())
    assert all(result.cached for result in second.values())
    assert second["night"].data == first["night"].data


def test_a_corrupted_blob_in_the_bucket_is_repaired(s3: MotoS3, tmp_path: Path) -> None:
    """Damaged bytes in S3 are a miss: removed, the edit made again once, then served."""
    with FakeTogether() as fake:
        first = two_edit_graph(S3Store(s3.url("t"), local_dir=tmp_path / "one")).run(
            provider=together(fake))
        blue = first["blue"].output_hash
        s3.write(f"t/blobs/sha256/{blue[:2]}/{blue}", b"not the image")
        store = S3Store(s3.url("t"), local_dir=tmp_path / "two")
        again = two_edit_graph(store).run(provider=together(fake))
        assert not again["blue"].cached and again["night"].cached
        assert store.repaired >= 1
        assert len(fake.billed) == 3  # two edits, then blue once more
        assert again["blue"].data == first["blue"].data
        stored = s3.objects(f"t/blobs/sha256/{blue[:2]}/{blue}").popitem()[1]
        assert hashlib.sha256(stored).hexdigest() == blue
        third = two_edit_graph(S3Store(s3.url("t"), local_dir=tmp_path / "three")).run(
            provider=together(fake))
        assert all(result.cached for result in third.values()) and len(fake.billed) == 3


def test_leases_are_exclusive_and_taken_over_after_expiry(s3: MotoS3, tmp_path: Path) -> None:
    """One holder per key across stores; an expired lease is taken with If-Match, and the old
    holder's renewal cannot take it back."""
    now = [1000.0]
    first = S3Store(s3.url("l"), local_dir=tmp_path / "a", clock=lambda: now[0])
    second = S3Store(s3.url("l"), local_dir=tmp_path / "b", clock=lambda: now[0])
    assert first.acquire_lease("k") and not second.acquire_lease("k")
    assert not first.acquire_lease("k")  # another run of this process holds it
    now[0] += 10
    first.renew_lease("k")
    now[0] += 25  # 35 s after the first write, 25 s after the renewal: still held
    assert not second.acquire_lease("k")
    now[0] += 6
    assert second.acquire_lease("k")
    first.renew_lease("k")  # its etag is stale: the lease stays the second's
    holder = json.loads(s3.objects("l/leases/k.json")["l/leases/k.json"])
    assert holder["owner"] == second._identity["owner"]
    second.release_lease("k")
    assert "l/leases/k.json" not in s3.objects("l/")


@pytest.mark.parametrize("field", ["host", "boot_id", "pid_ns"])
def test_a_lease_held_elsewhere_waits_for_its_expiry_on_the_clock(
    s3: MotoS3, tmp_path: Path, field: str
) -> None:
    """A holder on another host, boot or pid namespace (its pid means nothing here, even
    a dead one) keeps its lease until LEASE_SECONDS pass without renewal on the clock."""
    now = [1000.0]
    here = S3Store(s3.url(field), local_dir=tmp_path / "a", clock=lambda: now[0])
    elsewhere = S3Store(s3.url(field), local_dir=tmp_path / "b", clock=lambda: now[0])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    elsewhere._identity = {**elsewhere._identity, field: "other", "pid": int(dead)}
    assert elsewhere.acquire_lease("k")
    now[0] += 29
    assert not here.acquire_lease("k")
    elsewhere.renew_lease("k")
    now[0] += 29
    assert not here.acquire_lease("k")
    now[0] += 2
    assert here.acquire_lease("k")


def test_one_lease_among_threads_of_one_process(s3: MotoS3, tmp_path: Path) -> None:
    """Eight threads sharing one store ask for one key at once: exactly one gets it."""
    store = S3Store(s3.url("l"), local_dir=tmp_path / "a")
    start = threading.Barrier(8)

    def take() -> bool:
        start.wait(timeout=30)
        return store.acquire_lease("k")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda _: take(), range(8)))
    assert taken.count(True) == 1


def test_an_unreadable_record_in_the_bucket_is_replaced(s3: MotoS3, tmp_path: Path) -> None:
    """A record that is not JSON is a miss: the edit runs again and its record is readable."""
    first = two_edit_graph(S3Store(s3.url("t"), local_dir=tmp_path / "one")).run(
        provider=eg.providers.Preview())
    path = f"t/records/{first['night'].key}.json"
    s3.write(path, b"{not json")
    store = S3Store(s3.url("t"), local_dir=tmp_path / "two")
    again = two_edit_graph(store).run(provider=eg.providers.Preview())
    assert not again["night"].cached and again["blue"].cached
    assert store.repaired == 1
    assert json.loads(s3.objects(path)[path])["key"] == first["night"].key


def test_history_is_kept_per_graph(s3: MotoS3, tmp_path: Path) -> None:
    """history/<graph>/<node>.json: one graph's node history is not another's."""
    run = two_edit_graph(tmp_path / "plain").run(provider=eg.providers.Preview())
    history = run["night"].record
    S3Store(s3.url("h"), local_dir=tmp_path / "a").put_history("night", history, graph="cat/a.py")
    assert "h/history/cat%2Fa.py/night.json" in s3.objects("h/")
    other = S3Store(s3.url("h"), local_dir=tmp_path / "b")
    assert other.get_history("night") is None
    assert other.get_history("night", graph="cat/a.py") == history


def test_verify_finds_and_repairs_damage(s3: MotoS3, tmp_path: Path) -> None:
    """verify() names a damaged image and the record that uses it; repair removes both."""
    store = S3Store(s3.url("v"), local_dir=tmp_path / "a")
    run = two_edit_graph(store).run(provider=eg.providers.Preview())
    assert store.verify() == []
    blue = run["blue"].output_hash
    s3.write(f"v/blobs/sha256/{blue[:2]}/{blue}", b"rot")
    found = store.verify(repair=True)
    assert {entry.entry for entry in found} == {f"image {blue[:12]}", f"record {run['blue'].key[:12]}"}
    assert store.verify() == []


def test_open_store_takes_a_folder_a_bucket_or_a_store(
    s3: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_store: a folder → DiskStore, s3:// → S3Store, a store as is; EDITGRAPH_CACHE_DIR too."""
    assert isinstance(open_store(tmp_path / "folder"), DiskStore)
    bucket = open_store(s3.url("x"))
    assert isinstance(bucket, S3Store) and open_store(bucket) is bucket
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", s3.url("env"))
    assert isinstance(open_store(), S3Store)
    local = Path(os.environ["XDG_CACHE_HOME"]) / "editgraph" / "s3" / "editgraph" / "env"
    assert local.is_dir()
    with pytest.raises(eg.StoreError, match="s3://BUCKET"):
        S3Store("s3:///nothing")


def test_secrets_stay_out_of_reprs_and_errors(
    s3: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither the key id's secret nor the session token shows in a repr or an error."""
    secret = s3.environment()["AWS_SECRET_ACCESS_KEY"]
    store = S3Store(s3.url("x"), local_dir=tmp_path / "a")
    assert secret not in repr(store) and "s3://editgraph/x" in repr(store)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(eg.StoreError) as caught:
        S3Store(s3.url("y"), local_dir=tmp_path / "b")
    assert secret not in str(caught.value) and "s3://editgraph/y" in str(caught.value)


def test_the_command_takes_an_s3_cache(
    s3: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run, plan, cache info and clear take --cache s3://...; EDITGRAPH_CACHE_DIR=s3://... too."""
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
    runner = CliRunner()
    url = s3.url("cli")
    ran = runner.invoke(main, ["run", "recipe.py", "--provider", "preview", "--cache", url])
    assert ran.exit_code == 0, ran.output
    assert any(key.startswith("cli/records/") for key in s3.objects("cli/"))
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", url)
    planned = runner.invoke(main, ["plan", "recipe.py", "--provider", "preview"])
    assert planned.exit_code == 0 and "cached" in planned.output
    info = runner.invoke(main, ["cache", "info", "--cache", url])
    assert info.exit_code == 0 and url in info.output and "1 (one per" in info.output
    cleared = runner.invoke(main, ["cache", "clear", "--yes", "--cache", url])
    assert cleared.exit_code == 0 and s3.objects("cli/") == {}


def test_read_only_commands_make_no_local_folder(
    s3: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan, cache info and cache verify on an S3 cache read the bucket and create nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.py").write_text(textwrap.dedent("""
        import editgraph as eg
        from edit_providers import png_bytes

        def recipe() -> eg.Graph:
            graph = eg.Graph(width=256, height=256)
            car = graph.image(png_bytes((200, 30, 30)), name="car")
            graph.edit(f"Make {car} blue", name="blue")
            return graph
    """))
    url = s3.url("ro")
    runner = CliRunner()
    ran = runner.invoke(main, ["run", "recipe.py", "--provider", "preview", "--cache", url])
    assert ran.exit_code == 0, ran.output
    bucket = s3.objects("ro/")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))  # another machine's
    for args in (["plan", "recipe.py", "--provider", "preview"], ["cache", "info"],
                 ["cache", "verify"]):
        result = runner.invoke(main, [*args, "--cache", url])
        assert result.exit_code == 0, result.output
        assert not (tmp_path / "fresh").exists(), args
    assert "cached" in runner.invoke(
        main, ["plan", "recipe.py", "--provider", "preview", "--cache", url]).output
    assert s3.objects("ro/") == bucket
    store = open_store(url, create=False)
    assert isinstance(store, S3Store) and len(list(store.records())) == 1
    assert not (tmp_path / "fresh").exists()
    assert isinstance(open_store(url), S3Store) and (tmp_path / "fresh").is_dir()


@pytest.mark.slow
def test_two_processes_sharing_a_bucket_pay_once_per_edit(s3: MotoS3, tmp_path: Path) -> None:
    """Two processes, each with its own local cache, run one graph at once: each edit is paid once."""
    script = textwrap.dedent("""
        import sys
        import editgraph as eg
        from edit_providers import png_bytes

        graph = eg.Graph(cache_dir=sys.argv[2], width=256, height=256)
        car = graph.image(png_bytes((200, 30, 30)), name="car")
        for i in range(6):
            graph.edit(f"Paint {car} shade {i}", name=f"paint{i}")
        graph.run(provider=eg.providers.Together(api_key="k", base_url=sys.argv[1]),
                  progress=False)
    """)
    with FakeTogether(latency=0.2) as fake:
        children = []
        for name in ("one", "two"):
            env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / name),
                   "PYTHONPATH": str(Path(__file__).resolve().parent)}
            children.append(subprocess.Popen(
                [sys.executable, "-c", script, fake.base_url, s3.url("shared")], env=env,
                stderr=subprocess.PIPE, text=True))
        outcomes = [(child.communicate(timeout=240)[1], child.returncode) for child in children]
        for errors, returncode in outcomes:
            assert returncode == 0, errors
        assert len(fake.billed) == 6


def test_the_bfl_journal_lives_in_the_bucket(s3: MotoS3, tmp_path: Path) -> None:
    """A BFL task journaled by one machine (journal/<key>.json) is collected by another,
    which submits nothing new."""
    from editgraph.testing import FakeBFL

    class Clock:
        now = 1_000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    with FakeBFL(api_key="bfl_S9v4Hn6Xq2", latency=30.0, clock=clock) as fake:
        def bfl(**options: object) -> eg.providers.BFL:
            return eg.providers.BFL(api_key="bfl_S9v4Hn6Xq2", base_url=fake.base_url, **options)  # type: ignore[arg-type]

        first = S3Store(s3.url("team/j"), local_dir=tmp_path / "one")
        with pytest.raises(eg.RunError):
            two_edit_graph(first).run(provider=bfl(poll_interval=0.01, timeout=0.05))
        keys = [key for key in s3.objects("team/j/") if "/journal/" in key]
        assert len(keys) == 1 and len(fake.billed) == 1
        clock.now += 30.0
        fake.latency = 0.0
        other = S3Store(s3.url("team/j"), local_dir=tmp_path / "two")
        run = two_edit_graph(other).run(provider=bfl(poll_interval=0.0))
        assert run.resumed == {"blue"} and len(fake.billed) == 2
    assert not any("/journal/" in key for key in s3.objects("team/j/"))

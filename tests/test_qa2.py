"""Second outside-in QA pass over Part 2: local operations and region edits, the S3 store
and image host, Dask, and the BFL provider. Each test is one defect (Q1, Q2, ...) seen
from the outside: real files, real loopback HTTP (FakeTogether, FakeBFL, moto or a
small hand-written server), real processes; nothing of editgraph's own is mocked."""

from __future__ import annotations

import contextlib
import http.server
import io
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_checks import assert_bad_input, invoke, write_recipe
from PIL import Image, ImageOps

import editgraph as eg
from editgraph.store import DiskStore
from editgraph.testing import FakeTogether

# -- local operations and region edits -----------------------------------------------


def exif_rotated_jpeg(path: Path) -> Path:
    """A JPEG stored 200 x 100 whose EXIF orientation (6) shows it 100 x 200, upright."""
    image = Image.new("RGB", (200, 100), "red")
    image.paste((0, 0, 255), (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    image.save(path, exif=exif.tobytes())
    return path


def test_q1_an_op_over_an_exif_rotated_photo_keeps_it_upright(tmp_path: Path) -> None:
    """A composite over a phone photo shot upright (EXIF orientation 6) is upright too."""
    photo = exif_rotated_jpeg(tmp_path / "phone.jpg")
    with Image.open(photo) as shown:
        upright_size = ImageOps.exif_transpose(shown).size  # what a viewer shows
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    source = graph.image(photo, name="phone")
    patch = graph.image(Image.new("RGB", (10, 10), "green"), name="patch")
    graph.op(eg.ops.composite, source, patch, box=(0, 0, 10, 10), name="stamped")
    run = graph.run(provider=eg.providers.Preview())
    assert upright_size == (100, 200)
    assert run["stamped"].image.size == upright_size


def sixteen_bit_grey(path: Path, value: int) -> Path:
    """A 16-bit greyscale PNG, 32 x 32, every pixel ``value`` (0..65535)."""
    image = Image.new("I;16", (32, 32))
    image.putdata([value] * (32 * 32))
    image.save(path, format="PNG")
    with Image.open(path) as check:
        assert check.mode.startswith("I;16") or check.mode == "I", check.mode
    return path


def test_q2_a_16_bit_greyscale_source_is_scaled_not_clipped_by_ops(tmp_path: Path) -> None:
    """Mid-grey in a 16-bit PNG (32896 = 128 x 257) is mid-grey after a crop, not white."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    scan = graph.image(sixteen_bit_grey(tmp_path / "scan.png", 128 * 257), name="scan")
    graph.op(eg.ops.crop, scan, box=(0, 0, 16, 16), name="corner")
    run = graph.run(provider=eg.providers.Preview())
    grey = run["corner"].image.convert("L").getpixel((5, 5))
    assert grey == 128, grey


def test_q2_a_16_bit_mask_is_read_by_its_value_not_clipped() -> None:
    """A 16-bit mask that is nearly black (1000 of 65535) lets nothing of the overlay in."""
    base = Image.new("RGB", (20, 20), "red")
    overlay = Image.new("RGB", (20, 20), "blue")
    mask = Image.new("I;16", (20, 20))
    mask.putdata([1000] * 400)
    out = eg.ops.composite([base, overlay, mask], feather=2)
    assert out.getpixel((10, 10)) == (255, 0, 0)


@eg.operation(version="1", inputs=1)
def poster_wall(images: list[Image.Image]) -> Image.Image:
    """A test op that makes an 8000 x 6000 (48 MP) image from anything."""
    return Image.new("L", (8000, 6000), 128)


def test_q3_an_op_size_past_the_source_limit_is_refused_when_declared(tmp_path: Path) -> None:
    """resize to 12000 x 12000 (144 MP) is a GraphError naming the node and width."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(Image.new("RGB", (64, 48), "red"), name="car")
    with pytest.raises(eg.GraphError, match=r"node 'big': width: 12000 x 12000"):
        graph.op(eg.ops.resize, car, width=12000, height=12000, fit="fill", name="big")


def test_q3_an_op_output_past_the_limit_fails_the_op_and_nothing_is_paid(
    tmp_path: Path,
) -> None:
    """A 48 MP op output fails that op (OperationError); the edit that would have sent it
    as a reference is never sent or billed (it was, before: 144 MP went out)."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(Image.new("RGB", (64, 48), "red"), name="car")
    wall = graph.op(poster_wall, car, name="wall")
    graph.edit(f"Make {wall} green", name="green")
    with FakeTogether() as fake:
        provider = eg.providers.Together(api_key="k", base_url=fake.base_url)
        with pytest.raises(eg.RunError) as caught:
            graph.run(provider=provider)
        billed = fake.billed
    assert billed == []
    assert isinstance(caught.value.failures["wall"], eg.OperationError)
    assert "8000 x 6000" in str(caught.value.failures["wall"])


def test_q3_a_grid_too_large_is_refused_before_it_is_allocated() -> None:
    """A grid whose sheet would pass the limit is an OperationError naming its size."""
    tile = Image.new("RGB", (2000, 2000), "white")
    with pytest.raises(eg.OperationError, match="grid: its output would be"):
        eg.ops.grid([tile] * 11, gap=0)


@eg.operation(version="1", inputs=1)
def in_mode(images: list[Image.Image], mode: str) -> Image.Image:
    """A test op: the input converted to ``mode`` (CMYK for print, F for float maths...)."""
    return images[0].convert("RGB").convert(mode)


@pytest.mark.parametrize("mode, stored", [("CMYK", "RGB"), ("YCbCr", "RGB"), ("LAB", "RGB"),
                                          ("F", "L"), ("PA", "RGBA")])
def test_q11_an_op_result_in_a_mode_png_cannot_hold_is_converted_and_kept(
    tmp_path: Path, mode: str, stored: str
) -> None:
    """A user op that returns a CMYK (or YCbCr, LAB, float, PA) image finishes and is
    stored as PNG in the nearest mode PNG holds (it failed with "cannot write mode CMYK
    as PNG", and its descendants with it)."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(Image.new("RGB", (64, 48), (200, 30, 30)), name="car")
    converted = graph.op(in_mode, car, mode=mode, name="converted")
    graph.op(eg.ops.crop, converted, box=(0, 0, 10, 10), name="corner")
    run = graph.run(provider=eg.providers.Preview())
    assert run["converted"].image.mode == stored
    assert run["corner"].image.size == (10, 10)


def test_q8_a_crop_box_outside_a_source_is_refused_when_declared(tmp_path: Path) -> None:
    """g.op(crop, source, box=...) past the source's 64 x 48 pixels is a GraphError naming
    the node and box when declared, before anything in the graph is paid."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(Image.new("RGB", (64, 48), "red"), name="car")
    graph.edit(f"Make {car} blue", name="blue")
    with pytest.raises(eg.GraphError, match=r"node 'wide': box"):
        graph.op(eg.ops.crop, car, box=(0, 0, 400, 40), name="wide")


def test_q8_a_box_is_checked_against_the_upright_photo(tmp_path: Path) -> None:
    """On a photo stored 200 x 100 and shown 100 x 200 (EXIF 6), a crop box and a
    composite box are checked against what a viewer shows, as the op will cut it."""
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    photo = graph.image(exif_rotated_jpeg(tmp_path / "phone.jpg"), name="phone")
    patch = graph.image(Image.new("RGB", (10, 10), "green"), name="patch")
    graph.op(eg.ops.crop, photo, box=(0, 0, 100, 200), name="tall")
    with pytest.raises(eg.GraphError, match=r"node 'wide': box: .* 100x200 pixels"):
        graph.op(eg.ops.crop, photo, box=(0, 0, 200, 100), name="wide")
    with pytest.raises(eg.GraphError, match=r"node 'stamp': box"):
        graph.op(eg.ops.composite, photo, patch, box=(150, 0, 160, 10), name="stamp")
    run = graph.run(provider=eg.providers.Preview())
    assert run["tall"].image.size == (100, 200)


# -- S3 store and image host ---------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """moto on loopback with one bucket; the AWS variables point at it; an empty cache home."""
    pytest.importorskip("obstore")
    from editgraph.testing.s3 import MotoS3

    with MotoS3() as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        yield server


def test_q4_a_missing_bucket_is_a_one_line_error_exit_2(s3: Any, tmp_path: Path) -> None:
    """--cache s3://no-such-bucket/... says the bucket does not exist (was a traceback
    ending in obstore's multi-line FileNotFoundError, exit 1)."""
    recipe = write_recipe(tmp_path, """
        import editgraph as eg
        def recipe():
            g = eg.Graph(width=256, height=256)
            red = g.image("red.png")
            g.edit(f"Make {red} blue", name="blue")
            return g
    """)
    result = invoke("run", str(recipe), "--cache", "s3://no-such-bucket/team",
                    "--out", str(tmp_path / "out"), "--provider", "preview")
    assert_bad_input(result, "s3://no-such-bucket/team", "'no-such-bucket' does not exist")
    assert "editgraph-test-secret" not in result.output


@pytest.mark.parametrize("expires", [float("inf"), float("nan"), 8 * 24 * 3600, 0, True])
def test_q5_image_host_refuses_an_expiry_no_presigned_url_can_have(
    s3: Any, expires: float
) -> None:
    """expires past 7 days (SigV4's limit), infinite, nan, zero or a bool is refused when
    the host is made (inf was an OverflowError at signing time, 8 days a URL S3 refuses)."""
    with pytest.raises(eg.StoreError, match="expires must be"):
        eg.hosts.S3ImageHost(s3.url("refs"), expires=expires)


def test_q5_image_host_on_a_missing_bucket_says_so_in_one_line(s3: Any, tmp_path: Path) -> None:
    """An upload to a bucket that does not exist fails the edit, unpaid, with one line
    naming the bucket (was obstore's multi-line text with the XML error body)."""
    host = eg.hosts.S3ImageHost("s3://no-such-bucket/refs")
    graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
    car = graph.image(Image.new("RGB", (64, 48), "red"), name="car")
    graph.edit(f"Make {car} blue", name="blue")
    with FakeTogether(accept_data_uris=False) as fake:
        provider = eg.providers.Together(api_key="k", base_url=fake.base_url, image_host=host)
        with pytest.raises(eg.RunError) as caught:
            graph.run(provider=provider)
        billed = fake.billed
    message = str(caught.value.failures["blue"])
    assert billed == []
    assert "'no-such-bucket' does not exist" in message
    assert len(message.splitlines()) == 1, message
    assert "<Error>" not in message


# -- BFL -----------------------------------------------------------------------------


@pytest.mark.parametrize("setting, value", [
    ("max_active", float("nan")), ("max_active", 2.5), ("max_active", "3"),
    ("unknown_outcome_retries", float("inf")), ("max_retries", 1.5),
    ("moderation_retries", True), ("safety_tolerance", 2.5),
    ("timeout", float("inf")), ("poll_interval", float("inf")), ("poll_interval", "1"),
    ("result_ttl", float("nan")),
])
def test_q6_bfl_refuses_counts_and_times_that_are_not_numbers_it_can_use(
    setting: str, value: object
) -> None:
    """A nan/fractional/str count, or an infinite time, is refused naming the setting
    (nan max_active was no cap at all, inf unknown_outcome_retries a bill without bound,
    a str a TypeError)."""
    with pytest.raises(eg.ConfigurationError, match=f"BFL: {setting} must be"):
        settings: dict[str, Any] = {setting: value}
        eg.providers.BFL(api_key="k", **settings)


class _LookalikeBFL(http.server.BaseHTTPRequestHandler):
    """A small BFL look-alike on loopback: each submission answers with ``server.cost``
    (JSON text, so NaN and Infinity can be sent as Python's json writes them), and each
    poll with ``server.status``; a Ready task's result is a 256 x 256 PNG."""

    submissions = itertools.count(1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(self, data: bytes, media_type: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        task = f"task-{next(self.submissions)}"
        self.server.submitted.append(task)  # type: ignore[attr-defined]
        polling_url = f"http://{self.headers['Host']}/v1/get_result?id={task}"
        self._answer(f'{{"id": "{task}", "polling_url": "{polling_url}", '
                     f'"cost": {self.server.cost}}}'.encode())  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        if self.path == "/result.png":
            buffer = io.BytesIO()
            Image.new("RGB", (256, 256), "blue").save(buffer, format="PNG")
            self._answer(buffer.getvalue(), "image/png")
            return
        status = self.server.status  # type: ignore[attr-defined]
        body: dict[str, Any] = {"id": "x", "status": status}
        if status == "Ready":
            body["result"] = {"sample": f"http://{self.headers['Host']}/result.png"}
        else:
            body["details"] = {"error": "generation failed"}
        self._answer(json.dumps(body).encode())


@contextlib.contextmanager
def lookalike_bfl(status: str, cost: str = "3.0") -> Iterator[http.server.ThreadingHTTPServer]:
    """A ``_LookalikeBFL`` serving in a thread; ``.submitted`` lists the tasks made."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LookalikeBFL)
    server.submitted = []  # type: ignore[attr-defined]
    server.status = status  # type: ignore[attr-defined]
    server.cost = cost  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def one_edit_graph(cache: Path) -> eg.Graph:
    """One pro edit of a small red source, 256 x 256."""
    graph = eg.Graph(cache_dir=cache, width=256, height=256, model="flux.2-pro")
    car = graph.image(Image.new("RGB", (64, 48), "red"), name="car")
    graph.edit(f"Make {car} blue", name="blue")
    return graph


def test_q7_a_bfl_task_that_ended_in_error_is_not_polled_again_by_the_next_run(
    tmp_path: Path,
) -> None:
    """A task whose status is "Error" is over: the next run submits anew (it re-polled the
    dead task, failing the same way on every run until result_ttl had passed)."""
    with lookalike_bfl("Error") as server:
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        for _ in range(2):
            with pytest.raises(eg.RunError, match="ended with status 'Error'") as caught:
                one_edit_graph(tmp_path / "cache").run(
                    provider=eg.providers.BFL(api_key="k", base_url=base_url, poll_interval=0.0))
            assert caught.value.failures["blue"].possibly_billed  # type: ignore[attr-defined]
        submitted = list(server.submitted)  # type: ignore[attr-defined]
    assert len(submitted) == 2
    assert list(DiskStore(tmp_path / "cache").journal_entries()) == []


@pytest.mark.parametrize("cost", ["NaN", "Infinity", "-500", "true", '"300"'])
def test_q10_a_cost_bfl_answers_that_is_no_number_of_credits_counts_as_the_estimate(
    tmp_path: Path, cost: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A submit answer whose cost is NaN, Infinity, negative, a bool or a string leaves the
    edit at its estimate ($0.045 for pro at 256 x 256 with a small reference), logged; the
    run's spend and the manifest stay numbers (NaN or -$5 went into the run's cost, the
    budget and the manifest; a missing cost counted $0)."""
    with lookalike_bfl("Ready", cost=cost) as server:
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        run = one_edit_graph(tmp_path / "cache").run(
            provider=eg.providers.BFL(api_key="k", base_url=base_url, poll_interval=0.0))
    run.save(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert run["blue"].cost == pytest.approx(0.045)
    assert [edit["cost"] for edit in manifest["edits"] if edit["node"] == "blue"] == [
        pytest.approx(0.045)]
    assert "not a number of credits" in caplog.text



def test_q9_a_record_under_another_keys_name_in_the_bucket_is_a_miss(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """records/<green>.json holding blue's record (copied or restored to the wrong name)
    is damage: green runs again and gets its own image (it was served blue's image), and
    `verify` names it."""
    from editgraph.stores.s3 import S3Store

    def graph() -> eg.Graph:
        built = eg.Graph(cache_dir=s3.url("team"), width=256, height=256)
        car = built.image(Image.new("RGB", (64, 48), "red"), name="car")
        built.edit(f"Make {car} blue", name="blue")
        built.edit(f"Make {car} green", name="green")
        return built

    with FakeTogether() as fake:
        provider = eg.providers.Together(api_key="k", base_url=fake.base_url)
        first = graph().run(provider=provider)
        blue, green = first["blue"].record, first["green"].record
        objects = s3.objects()
        blue_path = next(path for path in objects if path.endswith(f"records/{blue.key}.json"))
        green_path = next(path for path in objects if path.endswith(f"records/{green.key}.json"))
        s3.write(green_path, objects[blue_path])
        damage = S3Store(s3.url("team"), local_dir=tmp_path / "verify").verify()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "another-machine"))
        again = graph().run(provider=provider)
        paid = len(fake.billed)
    assert [item.problem for item in damage if green.key[:12] in item.entry] == [
        f"it is the record of another key ({blue.key[:12]})"]
    assert not again["green"].cached and paid == 3
    assert again["green"].record.output_hash == green.output_hash
    assert again.repaired == 1


# -- the fakes from the shell ----------------------------------------------------------


@pytest.mark.parametrize("fake, option, value", [
    ("together", "--latency", "nan"), ("together", "--url-ttl", "nan"),
    ("together", "--fault-rate", "nan"), ("bfl", "--latency", "inf"),
    ("bfl", "--url-ttl", "nan"), ("bfl", "--fault-rate", "nan"),
])
def test_q12_serve_refuses_nan_and_infinity_in_its_number_options(
    fake: str, option: str, value: str, tmp_path: Path
) -> None:
    """`python -m editgraph.testing serve FAKE --latency nan` (or --url-ttl, --fault-rate;
    nan or inf) is click's usage error, exit 2, at once: nan passed click's range check,
    so the fake served (tasks that never became ready, results never fetchable), or
    --fault-rate nan ended in a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "editgraph.testing", "serve", fake, option, value],
        capture_output=True, text=True, cwd=tmp_path, check=False, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "is not a finite number" in result.stderr and option in result.stderr
    assert "Traceback" not in result.stderr

"""Sources as a viewer shows them: a photo turned by its EXIF orientation is sent upright,
an animated image as its first frame; every other still is sent byte for byte. Checked on
the bytes sent and through FakeTogether and FakeBFL reading references both ways (with
or without the tag; taking or refusing animations)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_checks import invoke, write_recipe
from PIL import Image, ImageChops, ImageCms, ImageOps, ImageStat

import editgraph as eg
from editgraph.testing import FakeBFL, FakeTogether

ORIENTATION = 0x0112
TILE = 64  # the fakes show each reference as a 64 x 64 tile along a result's bottom


def upright_photo() -> Image.Image:
    """A portrait picture as a viewer should show it: red above, blue below."""
    image = Image.new("RGB", (60, 120), (220, 20, 20))
    image.paste((20, 20, 220), (0, 60, 60, 120))
    return image


def stored(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` stored as a camera would store it under EXIF ``orientation`` (the
    inverse of what a viewer does to show it)."""
    inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_270}
    return image.transpose(inverse[orientation]) if orientation in inverse else image.copy()


def tagged(
    orientation: int | None, image_format: str = "JPEG", image: Image.Image | None = None,
    **options: Any,
) -> bytes:
    """The upright photo stored under ``orientation`` (None: no EXIF at all)."""
    picture = stored(image or upright_photo(), orientation or 1)
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        exif[0x010F] = "Phone"  # Make
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def sideways_jpeg() -> bytes:
    """A phone photo shot upright and stored on its side (orientation 6)."""
    return tagged(6, quality=95)


def assert_close(a: Image.Image, b: Image.Image, limit: float = 4.0) -> None:
    """Same size, and on average within ``limit`` levels per channel (JPEG's loss)."""
    assert a.size == b.size
    mean = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean
    assert max(mean) < limit, mean


def how_read(result: bytes) -> str:
    """How the fake read reference 1, from the tile it drew on ``result``: "upright"
    (portrait, red above blue), "sideways" (landscape, red left of blue) or "other"."""
    with Image.open(io.BytesIO(result)) as image:
        tile = image.convert("RGB").crop((0, image.height - TILE, TILE, image.height))
    bright = tile.convert("L").point(lambda level: 255 if level > 40 else 0)
    box = bright.getbbox()
    assert box is not None, "no reference tile on the result"
    left, top, right, bottom = box
    picture = tile.crop(box)
    first = picture.crop((0, 0, picture.width // 3, picture.height // 3)).resize((1, 1))
    last = picture.crop((2 * picture.width // 3, 2 * picture.height // 3,
                         picture.width, picture.height)).resize((1, 1))
    red_then_blue = first.getpixel((0, 0))[0] > 150 and last.getpixel((0, 0))[2] > 150  # type: ignore[index]
    if bottom - top > right - left and red_then_blue:
        return "upright"
    if right - left > bottom - top and red_then_blue:
        return "sideways"
    return "other"


# -- the bytes sent --------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_a_turned_jpeg_is_sent_upright_as_jpeg_with_no_tag(
    orientation: int, tmp_path: Path
) -> None:
    """Orientation 2-8: the bytes sent are a JPEG of what a viewer shows, with no EXIF
    (nothing left to turn it twice), hashed as sent."""
    path = tmp_path / "phone.jpg"
    path.write_bytes(tagged(orientation, quality=95))
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    graph.image(path, name="phone")
    node = graph.sources["phone"]
    assert node.media_type == "image/jpeg" and node.hash == hashlib.sha256(node.data).hexdigest()
    with Image.open(io.BytesIO(node.data)) as sent, Image.open(path) as original:
        assert sent.format == "JPEG" and "exif" not in sent.info
        assert ORIENTATION not in sent.getexif()
        assert_close(sent, ImageOps.exif_transpose(original))
        assert_close(sent, upright_photo(), limit=6.0)


@pytest.mark.parametrize("image_format", ["PNG", "WEBP", "TIFF"])
def test_a_turned_image_of_another_format_is_sent_upright_as_lossless_png(
    image_format: str, tmp_path: Path
) -> None:
    """A PNG, a lossless WebP or a TIFF on its side becomes a PNG of the upright pixels,
    exactly; its colour profile is kept."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    options: dict[str, Any] = {"icc_profile": profile}
    if image_format == "WEBP":
        options["lossless"] = True
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    graph.image(tagged(8, image_format, **options), name="scan")
    node = graph.sources["scan"]
    assert node.media_type == "image/png"
    with Image.open(io.BytesIO(node.data)) as sent:
        assert sent.getexif().get(ORIENTATION) is None
        assert sent.info.get("icc_profile") == profile
        assert ImageChops.difference(sent.convert("RGB"), upright_photo()).getbbox() is None


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", [None, 1])
def test_untagged_and_orientation_1_stills_are_sent_byte_for_byte(
    image_format: str, orientation: int | None, tmp_path: Path
) -> None:
    """No tag, or orientation 1: the file's own bytes, hash and URL (keys unchanged)."""
    data = tagged(orientation, image_format)
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    graph.image(data, name="still")
    node = graph.sources["still"]
    assert node.data == data and node.hash == hashlib.sha256(data).hexdigest()


def test_a_turned_photo_gives_the_same_bytes_every_time(tmp_path: Path) -> None:
    """Two graphs (and a batch's memo) declaring the same turned file send the same
    bytes: its key is stable from run to run."""
    path = tmp_path / "phone.jpg"
    path.write_bytes(sideways_jpeg())
    hashes = set()
    for _ in range(2):
        graph = eg.Graph(cache_dir=tmp_path / "cache")
        graph.image(path, name="phone")
        hashes.add(graph.sources["phone"].hash)
    assert len(hashes) == 1


@pytest.fixture
def photo_server() -> Iterator[str]:
    """A loopback HTTP server answering every GET with the sideways JPEG; yields a URL."""

    class Photo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = sideways_jpeg()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Photo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/phone.jpg"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_turned_url_source_is_sent_as_bytes_not_as_its_url(
    tmp_path: Path, photo_server: str
) -> None:
    """A turned photo behind a URL is sent as the upright bytes: its URL would hand the
    service the file on its side."""
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    graph.image(photo_server, name="phone")
    node = graph.sources["phone"]
    assert node.url is None and node.data != sideways_jpeg()
    with Image.open(io.BytesIO(node.data)) as sent:
        assert sent.size == (60, 120)


# -- what the model sees ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must never go through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def together_result(fake: FakeTogether, reference: bytes, media_type: str = "image/jpeg") -> bytes:
    """What FakeTogether answers to an edit with ``reference`` sent as it is."""
    uri = f"data:{media_type};base64," + base64.b64encode(reference).decode()
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        answer = client.post(fake.base_url + "/v1/images/generations", json={
            "model": "black-forest-labs/FLUX.2-pro", "prompt": "Make image 1 brighter",
            "width": 256, "height": 256, "seed": 1, "reference_images": [uri]})
        assert answer.status_code == 200, answer.text
        return client.get(answer.json()["data"][0]["url"]).content


def bfl_result(fake: FakeBFL, reference: bytes) -> tuple[bytes, dict[str, Any]]:
    """What FakeBFL delivers (and its submit answer) for an edit with ``reference`` sent
    as it is (raw base64)."""
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        answer = client.post(fake.base_url + "/v1/flux-2-pro", json={
            "prompt": "Make image 1 brighter", "width": 256, "height": 256, "seed": 1,
            "input_image": base64.b64encode(reference).decode()})
        assert answer.status_code == 200, answer.text
        poll = client.get(answer.json()["polling_url"]).json()
        assert poll["status"] == "Ready", poll
        return client.get(poll["result"]["sample"]).content, answer.json()


@pytest.mark.parametrize("reading", ["ignore", "honour"])
def test_the_fakes_read_a_tagged_reference_as_their_setting_says(reading: str) -> None:
    """The file on its side, sent as it is: read sideways when the tag is ignored,
    upright when honoured (the two ways the services might read it)."""
    expected = "upright" if reading == "honour" else "sideways"
    with FakeTogether(exif_orientation=reading) as fake:  # type: ignore[arg-type]
        assert how_read(together_result(fake, sideways_jpeg())) == expected
    with FakeBFL(exif_orientation=reading) as bfl:  # type: ignore[arg-type]
        result, _ = bfl_result(bfl, sideways_jpeg())
        assert how_read(result) == expected


def test_the_fakes_refuse_an_unknown_reading() -> None:
    """A reading setting the fakes do not know is a ValueError naming it."""
    with pytest.raises(ValueError, match="exif_orientation"):
        FakeTogether(exif_orientation="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="animated_references"):
        FakeBFL(animated_references="last_frame")  # type: ignore[arg-type]


@pytest.mark.parametrize("reading", ["ignore", "honour"])
def test_the_model_sees_a_phone_photo_upright_whether_or_not_together_reads_the_tag(
    reading: str, tmp_path: Path
) -> None:
    """An edit of a photo stored on its side (EXIF 6) shows it upright on Together under
    both readings: editgraph sends upright pixels with no tag."""
    path = tmp_path / "phone.jpg"
    path.write_bytes(sideways_jpeg())
    with FakeTogether(exif_orientation=reading) as fake:  # type: ignore[arg-type]
        graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
        phone = graph.image(path, name="phone")
        graph.edit(f"Make {phone} brighter", name="bright", seed=1)
        run = graph.run(provider=eg.providers.Together(api_key="k", base_url=fake.base_url))
        assert how_read(_encoded(run["bright"].image)) == "upright"


@pytest.mark.parametrize("reading", ["ignore", "honour"])
def test_the_model_sees_a_phone_photo_upright_whether_or_not_bfl_reads_the_tag(
    reading: str, tmp_path: Path
) -> None:
    """The same on BFL (references as raw base64), input megapixels unchanged."""
    path = tmp_path / "phone.jpg"
    path.write_bytes(sideways_jpeg())
    with FakeBFL(exif_orientation=reading) as fake:  # type: ignore[arg-type]
        graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
        phone = graph.image(path, name="phone")
        graph.edit(f"Make {phone} brighter", name="bright", seed=1)
        provider = eg.providers.BFL(api_key="k", base_url=fake.base_url, poll_interval=0.0)
        run = graph.run(provider=provider)
        assert how_read(_encoded(run["bright"].image)) == "upright"


def _encoded(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- animated sources ------------------------------------------------------------------


def animation(image_format: str) -> bytes:
    """Three frames, red, green and blue, 32 x 24, as an animated WebP, APNG or GIF."""
    frames = [Image.new("RGB", (32, 24), colour) for colour in ("red", "lime", "blue")]
    buffer = io.BytesIO()
    options: dict[str, Any] = {"lossless": True} if image_format == "WEBP" else {}
    frames[0].save(buffer, format=image_format, save_all=True, append_images=frames[1:],
                   duration=100, loop=0, **options)
    with Image.open(io.BytesIO(buffer.getvalue())) as check:
        assert getattr(check, "n_frames", 1) == 3
    return buffer.getvalue()


class Notices(logging.Handler):
    """Collects the ``editgraph.sources`` notices (whatever the command set up)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def notices() -> Iterator[Notices]:
    collected = Notices()
    log = logging.getLogger("editgraph.sources")
    log.addHandler(collected)
    try:
        yield collected
    finally:
        log.removeHandler(collected)


@pytest.mark.parametrize("image_format", ["WEBP", "PNG", "GIF"])
def test_an_animated_source_is_sent_as_its_first_frame_with_a_warning(
    image_format: str, tmp_path: Path, notices: Notices
) -> None:
    """An animated WebP, APNG or GIF is sent as a PNG of its first frame (what ops and
    Preview use), hashed as sent, and one warning line names the source."""
    path = tmp_path / f"loop.{image_format.lower()}"
    path.write_bytes(animation(image_format))
    graph = eg.Graph(cache_dir=tmp_path / "cache")
    graph.image(path, name="loop")
    node = graph.sources["loop"]
    assert node.media_type == "image/png" and node.hash == hashlib.sha256(node.data).hexdigest()
    with Image.open(io.BytesIO(node.data)) as sent:
        assert getattr(sent, "n_frames", 1) == 1
        assert sent.convert("RGB").getpixel((3, 3)) == (255, 0, 0)
    assert notices.lines == [(f"source 'loop': {path} is animated (3 frames); its first "
                             "frame is sent, as ops and Preview use it")]


def test_an_animated_source_works_with_a_service_that_refuses_animations(
    tmp_path: Path, notices: Notices
) -> None:
    """Against a service that takes only stills (a 400 for an animated reference), an
    edit of an animated WebP succeeds: a still is sent."""
    with FakeTogether(animated_references="refuse") as fake:
        refused = httpx.post(fake.base_url + "/v1/images/generations", trust_env=False, json={
            "model": "black-forest-labs/FLUX.2-pro", "prompt": "Make image 1 brighter",
            "reference_images": ["data:image/webp;base64,"
                                 + base64.b64encode(animation("WEBP")).decode()]})
        assert refused.status_code == 400 and "animated" in refused.text
        graph = eg.Graph(cache_dir=tmp_path / "cache", width=256, height=256)
        loop = graph.image(animation("WEBP"), name="loop")
        graph.edit(f"Make {loop} brighter", name="bright", seed=1)
        run = graph.run(provider=eg.providers.Together(api_key="k", base_url=fake.base_url))
        assert run["bright"].image.size == (256, 256)
    assert len(notices.lines) == 1


def test_a_batch_warns_for_each_item_with_an_animated_input(
    tmp_path: Path, notices: Notices
) -> None:
    """Items sharing one animated input each say so (the pass decodes it once)."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for stem in ("a", "b"):
        (inputs / f"{stem}.webp").write_bytes(animation("WEBP"))

    def recipe(photo: Path) -> eg.Graph:
        graph = eg.Graph(width=256, height=256)
        source = graph.image(photo, name="photo")
        graph.op(eg.ops.crop, source, box=(0, 0, 16, 16), name="corner")
        return graph

    done = eg.batch(recipe, inputs, out=tmp_path / "out", cache=tmp_path / "cache",
                    provider=eg.providers.Preview())
    assert [item.status for item in done] == ["done", "done"]
    assert len(notices.lines) == 2 and all("'photo'" in line for line in notices.lines)


def test_the_command_prints_the_animation_warning_as_one_line(tmp_path: Path) -> None:
    """`editgraph run` shows the warning on stderr, one line, naming the source."""
    (tmp_path / "loop.webp").write_bytes(animation("WEBP"))
    recipe = write_recipe(tmp_path, """
        import editgraph as eg
        def recipe():
            g = eg.Graph(width=256, height=256)
            loop = g.image("loop.webp", name="loop")
            g.op(eg.ops.crop, loop, box=(0, 0, 16, 16), name="corner")
            return g
    """)
    result = invoke("run", str(recipe), "--provider", "preview", "--out", str(tmp_path / "out"),
                    "--cache", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "animated" in line]
    assert lines == [("source 'loop': loop.webp is animated (3 frames); its first frame is "
                     "sent, as ops and Preview use it")], result.stderr

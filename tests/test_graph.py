"""Tests for graph.py: sources, handles, names, parameter validation, sweeps and chains."""

from __future__ import annotations

import http.server
import io
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edit_providers import png_bytes
from PIL import Image

import editgraph as eg
from editgraph.sources import source_root

RED = png_bytes((255, 0, 0))
BLUE = png_bytes((0, 0, 255))


class _Images(http.server.BaseHTTPRequestHandler):
    """Serves a PNG, bytes that are not an image, and 404 for anything else."""

    def do_GET(self) -> None:
        if self.path.startswith("/assets/red-car.png"):
            self._answer(200, RED, "image/png")
        elif self.path == "/notes.png":
            self._answer(200, b"these are not pixels", "image/png")
        else:
            self._answer(404, b"not found", "text/plain")

    def _answer(self, status: int, body: bytes, media_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests go straight to the test server, whatever the environment says."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.lower(), raising=False)


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A real HTTP server on loopback; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def graph(tmp_path: Path) -> eg.Graph:
    """An empty graph with its own cache directory."""
    return eg.Graph(cache_dir=tmp_path / "cache")


def _huge_png() -> bytes:
    """A valid PNG header claiming 40000 x 40000 pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------- sources


def test_source_from_path_takes_the_file_stem_as_name(graph: eg.Graph, tmp_path: Path) -> None:
    """A path source is named after its file stem and keeps its bytes and media type."""
    path = tmp_path / "car.png"
    path.write_bytes(RED)
    handle = graph.image(path)
    assert handle.name == "car"
    source = graph.sources["car"]
    assert source.data == RED
    assert source.media_type == "image/png"
    assert source.source == str(path)


def test_source_from_str_path_and_explicit_name(graph: eg.Graph, tmp_path: Path) -> None:
    """A str path works too, and name= overrides the stem."""
    path = tmp_path / "car.png"
    path.write_bytes(RED)
    assert graph.image(str(path), name="vehicle").name == "vehicle"


def test_source_stem_is_made_a_safe_name(graph: eg.Graph, tmp_path: Path) -> None:
    """A stem with spaces becomes a valid node name; a second one with it gets a suffix."""
    path = tmp_path / "red car.png"
    path.write_bytes(RED)
    first = graph.image(path)
    second = graph.image(path)
    assert first.name == "red_car"
    assert second.name != first.name and second.name.startswith("red_car")


def test_relative_path_resolves_against_source_root(graph: eg.Graph, tmp_path: Path) -> None:
    """Recipes set source_root so relative paths resolve against the recipe's folder."""
    (tmp_path / "car.png").write_bytes(RED)
    token = source_root.set(tmp_path)
    try:
        assert graph.image("car.png").name == "car"
    finally:
        source_root.reset(token)


def test_source_from_bytes(graph: eg.Graph) -> None:
    """Bytes are a source; without a name it is called 'image', then 'image_N'."""
    first = graph.image(RED)
    second = graph.image(BLUE)
    assert first.name == "image"
    assert second.name.startswith("image_")
    assert graph.sources[second.name].data == BLUE


def test_source_from_pil_image_is_its_default_png_bytes(graph: eg.Graph) -> None:
    """A PIL image becomes the PNG bytes Pillow writes with its default settings."""
    picture = Image.new("RGB", (20, 10), (0, 128, 0))
    handle = graph.image(picture, name="green")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    assert graph.sources[handle.name].data == buffer.getvalue()
    assert graph.sources[handle.name].media_type == "image/png"


def test_source_from_http_url(graph: eg.Graph, image_server: str) -> None:
    """An http URL is fetched now, named after its path's stem, and kept as the URL."""
    url = f"{image_server}/assets/red-car.png?size=small"
    handle = graph.image(url)
    source = graph.sources[handle.name]
    assert handle.name == "red-car"
    assert source.data == RED
    assert source.url == url  # sent as given
    assert source.source == f"{image_server}/assets/red-car.png"  # recorded without the query


def test_a_presigned_token_in_a_source_url_is_never_recorded(
    graph: eg.Graph, image_server: str
) -> None:
    """The query string (a presigned URL's token) reaches neither the plan nor the manifest."""
    token = "X-Amz-Signature=PLANTEDTOKEN1234567890"
    car = graph.image(f"{image_server}/assets/red-car.png?{token}")
    graph.edit(f"Paint {car} blue", name="blue")
    run = graph.run(provider=eg.providers.Preview(), progress=False)
    assert "PLANTEDTOKEN" not in run.manifest.model_dump_json()
    assert "PLANTEDTOKEN" not in str(graph.plan(provider=eg.providers.Preview()))


def test_http_404_is_a_graph_error_naming_the_source(graph: eg.Graph, image_server: str) -> None:
    """A URL answering 404 is a one-line GraphError naming the source and the status."""
    with pytest.raises(eg.GraphError) as caught:
        graph.image(f"{image_server}/missing/tyre.png")
    message = str(caught.value)
    assert "'tyre'" in message and "404" in message
    assert "\n" not in message


def test_http_bytes_that_are_not_an_image(graph: eg.Graph, image_server: str) -> None:
    """A URL serving bytes that do not decode is a GraphError naming the source."""
    with pytest.raises(eg.GraphError, match=r"source 'notes'.*not a readable image"):
        graph.image(f"{image_server}/notes.png")


def test_unreachable_url_is_a_graph_error(graph: eg.Graph, image_server: str) -> None:
    """A URL that cannot be connected to is a GraphError, not an httpx error."""
    port = int(image_server.rsplit(":", 1)[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    closed_port = server.server_address[1]
    server.server_close()  # the port is now closed: connecting is refused
    assert closed_port != port
    with pytest.raises(eg.GraphError, match="cannot fetch"):
        graph.image(f"http://127.0.0.1:{closed_port}/car.png", name="car")


def test_other_url_schemes_are_refused(graph: eg.Graph) -> None:
    """Only http(s) URLs are fetched; ftp:// is not mistaken for a path."""
    with pytest.raises(eg.GraphError, match="http"):
        graph.image("ftp://example.com/car.png")


def test_missing_file_names_the_source(graph: eg.Graph, tmp_path: Path) -> None:
    """A missing file is a GraphError naming the source by its stem and path."""
    with pytest.raises(eg.GraphError) as caught:
        graph.image(tmp_path / "nope.png")
    assert "'nope'" in str(caught.value)
    assert "no such file" in str(caught.value)


def test_directory_is_not_a_source(graph: eg.Graph, tmp_path: Path) -> None:
    """A directory is a GraphError, not an OSError."""
    with pytest.raises(eg.GraphError, match="cannot read"):
        graph.image(tmp_path, name="folder")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"plain text, not pixels", "not a readable image"),
        (RED[: len(RED) // 2], "not a readable image"),
    ],
    ids=["empty", "not-an-image", "truncated"],
)
def test_unreadable_file_sources(
    graph: eg.Graph, tmp_path: Path, content: bytes, expected: str
) -> None:
    """Empty, non-image and truncated files are GraphErrors naming the source."""
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(eg.GraphError, match=rf"source 'broken'.*{expected}"):
        graph.image(path)
    assert "broken" not in graph


def test_truncated_jpeg_bytes_are_refused(graph: eg.Graph) -> None:
    """A JPEG cut in half is refused when declared, not when a provider reads it."""
    buffer = io.BytesIO()
    Image.new("RGB", (128, 128), (10, 200, 30)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    with pytest.raises(eg.GraphError, match="source 'half'.*not a readable image"):
        graph.image(data[: len(data) // 2], name="half")


def test_empty_bytes_source(graph: eg.Graph) -> None:
    """Empty bytes are a GraphError naming the source."""
    with pytest.raises(eg.GraphError, match="source 'blank'.*empty"):
        graph.image(b"", name="blank")


def test_decompression_bomb_is_a_graph_error(graph: eg.Graph) -> None:
    """An image claiming billions of pixels is a GraphError, not a Pillow error."""
    with pytest.raises(eg.GraphError, match="source 'bomb'"):
        graph.image(_huge_png(), name="bomb")


def test_unsupported_source_type(graph: eg.Graph) -> None:
    """A source that is not a path, URL, bytes or PIL image is a GraphError."""
    with pytest.raises(eg.GraphError, match="expected a path"):
        graph.image(42, name="answer")  # type: ignore[arg-type]


def test_identical_sources_are_one_reference(graph: eg.Graph) -> None:
    """Two sources with the same bytes are one reference of an edit."""
    first = graph.image(RED, name="first")
    second = graph.image(RED, name="second")
    blue = graph.image(BLUE, name="blue")
    graph.edit(f"Combine {first}, {second} and {blue}", name="combo")
    node = graph.edits["combo"]
    assert node.references == ("first", "blue")
    assert node.prompt == "Combine image 1, image 1 and image 2"


# ---------------------------------------------------------------------- names


def test_duplicate_names_are_refused(graph: eg.Graph) -> None:
    """A second node with an existing name is a GraphError naming it."""
    car = graph.image(RED, name="car")
    graph.edit(f"Paint {car} blue", name="blue")
    with pytest.raises(eg.GraphError, match=r"node 'car': name: .*already exists"):
        graph.image(BLUE, name="car")
    with pytest.raises(eg.GraphError, match=r"node 'blue': name: .*already exists"):
        graph.edit(f"Paint {car} green", name="blue")


@pytest.mark.parametrize(
    "name", ["../x", "/abs", "a/b", "a\\b", ".", "..", ".hidden", "two words", "x" * 200]
)
def test_names_that_would_escape_the_output_folder(graph: eg.Graph, name: str) -> None:
    """A name that is not a plain file name is refused, naming the node and the field."""
    with pytest.raises(eg.GraphError, match="name: "):
        graph.image(RED, name=name)
    car = graph.image(RED, name="car")
    with pytest.raises(eg.GraphError, match="name: "):
        graph.edit(f"Paint {car} blue", name=name)


def test_empty_name_is_refused(graph: eg.Graph) -> None:
    """An empty name is a GraphError, not a silent default."""
    with pytest.raises(eg.GraphError, match="name: must be a non-empty str"):
        graph.image(RED, name="")


def test_non_str_name_is_refused(graph: eg.Graph) -> None:
    """A name that is not a str is a GraphError."""
    car = graph.image(RED, name="car")
    with pytest.raises(eg.GraphError, match="name: "):
        graph.edit(f"Paint {car}", name=5)  # type: ignore[arg-type]


def test_edit_names_default_to_edit_n(graph: eg.Graph) -> None:
    """Unnamed edits are named edit_1, edit_2, … in declaration order."""
    car = graph.image(RED, name="car")
    first = graph.edit(f"Paint {car} blue")
    second = graph.edit(f"Paint {car} red")
    assert isinstance(first, eg.Handle) and isinstance(second, eg.Handle)
    assert [first.name, second.name] == ["edit_1", "edit_2"]


# ---------------------------------------------------------------------- references


def test_references_are_inferred_in_order_and_rewritten(graph: eg.Graph) -> None:
    """Handles and @names become "image N" in first-appearance order; @@ is a literal @."""
    car = graph.image(RED, name="car")
    graph.image(BLUE, name="swatch")
    graph.edit(f"Colour {car} like @swatch, then @car again, mail @@studio", name="blue")
    node = graph.edits["blue"]
    assert node.references == ("car", "swatch")
    assert node.prompt == "Colour image 1 like image 2, then image 1 again, mail @studio"
    assert list(graph.dag.predecessors("blue")) == ["car", "swatch"]
    assert graph.dag.edges["swatch", "blue"]["index"] == 2


def test_unknown_at_name(graph: eg.Graph) -> None:
    """An unknown @name is a GraphError naming the node and the reference."""
    graph.image(RED, name="car")
    with pytest.raises(eg.GraphError, match=r"node 'x'.*@lorry"):
        graph.edit("Paint @lorry blue", name="x")


def test_handle_from_another_graph(graph: eg.Graph) -> None:
    """A handle of another graph, in a prompt or in refs, is a GraphError naming the node."""
    other = eg.Graph()
    stranger = other.image(RED, name="stranger")
    graph.image(BLUE, name="car")
    with pytest.raises(eg.GraphError, match=r"node 'mix'.*another graph"):
        graph.edit(f"Put {stranger} next to @car", name="mix")
    with pytest.raises(eg.GraphError, match=r"node 'mix': refs: .*another graph"):
        graph.edit("Put image 1 in the scene", refs=[stranger], name="mix")
    assert "mix" not in graph


def test_refs_must_be_a_list_not_a_str(graph: eg.Graph) -> None:
    """refs='car' (a str, not a list) is refused rather than read letter by letter."""
    graph.image(RED, name="car")
    with pytest.raises(eg.GraphError, match=r"node 'x': refs: expected a list"):
        graph.edit("Paint image 1", refs="car", name="x")  # type: ignore[arg-type]


def test_refs_by_name_and_unknown_name(graph: eg.Graph) -> None:
    """refs may name nodes; an unknown one is a GraphError naming the node and field."""
    graph.image(RED, name="car")
    graph.edit("Paint image 1 blue", refs=["car"], name="blue")
    assert graph.edits["blue"].references == ("car",)
    with pytest.raises(eg.GraphError, match=r"node 'x': refs: no node named 'bus'"):
        graph.edit("Paint image 1 blue", refs=["bus"], name="x")


def test_literal_image_number_beyond_the_list(graph: eg.Graph) -> None:
    """"image 3" with two references is a GraphError naming the node."""
    car = graph.image(RED, name="car")
    blue = graph.image(BLUE, name="blue")
    with pytest.raises(eg.GraphError, match=r"node 'x'.*image 3"):
        graph.edit("Blend image 1 and image 3", refs=[car, blue], name="x")


def test_too_many_references_on_pro(graph: eg.Graph) -> None:
    """Nine references exceed pro's eight: a GraphError naming the node and refs."""
    handles = [graph.image(png_bytes((i, 0, 0)), name=f"s{i}") for i in range(9)]
    graph.edit(" ".join(str(h) for h in handles[:8]), name="eight")
    with pytest.raises(eg.GraphError, match=r"node 'nine': refs: 9 references.*at most 8"):
        graph.edit(" ".join(str(h) for h in handles), name="nine")


def test_too_many_references_on_dev(graph: eg.Graph) -> None:
    """Seven references exceed dev's six."""
    handles = [graph.image(png_bytes((0, i, 0)), name=f"s{i}") for i in range(7)]
    graph.edit(" ".join(str(h) for h in handles[:6]), name="six", model="flux.2-dev")
    with pytest.raises(eg.GraphError, match=r"node 'seven': refs: 7 references.*at most 6"):
        graph.edit(" ".join(str(h) for h in handles), name="seven", model="flux.2-dev")


def test_empty_prompt_is_refused(graph: eg.Graph) -> None:
    """An empty or blank prompt is a GraphError naming the node and the field."""
    with pytest.raises(eg.GraphError, match=r"node 'blank': prompt: "):
        graph.edit("   ", name="blank")


def test_edit_without_references_is_text_to_image(graph: eg.Graph) -> None:
    """An edit mentioning no input has no references (text to image)."""
    handle = graph.edit("A red bicycle on a beach", name="bike")
    assert isinstance(handle, eg.Handle)
    assert graph.edits["bike"].references == ()


def test_handle_renders_only_as_a_reference(graph: eg.Graph) -> None:
    """A handle takes no format spec and repr shows its name."""
    car = graph.image(RED, name="car")
    assert repr(car) == "<Handle 'car'>"
    with pytest.raises(ValueError, match="format spec"):
        f"{car:>10}"
    assert graph["car"].name == "car"
    with pytest.raises(KeyError):
        graph["bus"]


# ---------------------------------------------------------------------- parameters


def test_unknown_model(graph: eg.Graph) -> None:
    """An unknown model is a GraphError naming the node, the field and the value."""
    with pytest.raises(eg.GraphError, match=r"node 'x': model: unknown model 'flux.3-ultra'"):
        graph.edit("A cat", name="x", model="flux.3-ultra")
    with pytest.raises(eg.GraphError, match="model: unknown model 'nope'"):
        eg.Graph(model="nope")


def test_model_aliases_resolve(graph: eg.Graph) -> None:
    """Aliases and full ids both resolve to the catalogue's full id."""
    graph.edit("A cat", name="a", model="flux.2-max")
    graph.edit("A dog", name="b", model="black-forest-labs/FLUX.2-dev")
    assert graph.edits["a"].model.id == "black-forest-labs/FLUX.2-max"
    assert graph.edits["b"].model.id == "black-forest-labs/FLUX.2-dev"


@pytest.mark.parametrize(
    ("field", "value"),
    [("width", 240), ("width", 1936), ("height", 1000), ("height", 17)],
)
def test_sizes_out_of_range_or_not_multiple_of_16(
    graph: eg.Graph, field: str, value: int
) -> None:
    """Sizes outside 256–1920 or not multiples of 16 name the node, field and value."""
    with pytest.raises(eg.GraphError, match=rf"node 'x': {field}: {value} is not allowed"):
        graph.edit("A cat", name="x", **{field: value})


def test_size_limits_are_inclusive(graph: eg.Graph) -> None:
    """256 and 1920 are both accepted."""
    graph.edit("A cat", name="small", width=256, height=256)
    graph.edit("A cat", name="large", width=1920, height=1920)
    assert graph.edits["large"].parameters["width"] == 1920


@pytest.mark.parametrize("model", ["flux.2-pro", "flux.2-max"])
@pytest.mark.parametrize(("field", "value"), [("steps", 28), ("guidance", 4.5)])
def test_steps_and_guidance_refused_on_pro_and_max(
    graph: eg.Graph, model: str, field: str, value: object
) -> None:
    """steps/guidance on pro and max are refused with a message saying where they work."""
    with pytest.raises(eg.GraphError) as caught:
        graph.edit("A cat", name="x", model=model, **{field: value})
    message = str(caught.value)
    assert message.startswith(f"node 'x': {field}: ")
    assert "not documented" in message and "flex" in message


@pytest.mark.parametrize("model", ["flux.2-flex", "flux.2-dev"])
def test_steps_and_guidance_accepted_on_flex_and_dev(graph: eg.Graph, model: str) -> None:
    """flex and dev take steps and guidance; an int guidance becomes a float."""
    graph.edit("A cat", name="x", model=model, steps=28, guidance=7)
    parameters = graph.edits["x"].parameters
    assert parameters["steps"] == 28
    assert parameters["guidance"] == 7.0 and isinstance(parameters["guidance"], float)


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("flux.2-flex", "steps", 51),
        ("flux.2-flex", "guidance", 1.4),
        ("flux.2-flex", "guidance", 10.5),
        ("flux.2-dev", "steps", 60),
    ],
)
def test_steps_and_guidance_outside_the_catalogue_ranges_are_refused(
    graph: eg.Graph, model: str, field: str, value: float
) -> None:
    """flex takes steps 1-50 and guidance 1.5-10 (dev steps 1-50): beyond is a GraphError."""
    with pytest.raises(eg.GraphError, match=rf"node 'x': {field}: {value!r} is outside .* range"):
        graph.edit("A cat", name="x", model=model, **{field: value})
    graph.edit("A cat", name="ok", model="flux.2-flex", steps=50, guidance=10)
    graph.edit("A cat", name="low", model="flux.2-flex", steps=1, guidance=1.5)


def test_graph_default_steps_apply_only_where_accepted(graph: eg.Graph) -> None:
    """A graph-wide steps default reaches flex edits and is not sent to pro edits."""
    g = eg.Graph(model="flux.2-flex", steps=30)
    g.edit("A cat", name="pro", model="flux.2-pro")
    g.edit("A dog", name="flex")
    assert g.edits["pro"].parameters["steps"] is None
    assert g.edits["flex"].parameters["steps"] == 30


@pytest.mark.parametrize("field", ["negative_prompt", "image_loras"])
def test_negative_prompt_and_loras_are_refused(graph: eg.Graph, field: str) -> None:
    """negative_prompt and image_loras are refused with a message, on edits and graphs."""
    with pytest.raises(eg.GraphError, match=rf"node 'x': {field}: "):
        graph.edit("A cat", name="x", **{field: "blurry"})
    with pytest.raises(eg.GraphError, match=rf"{field}: "):
        eg.Graph(**{field: "blurry"})


def test_unknown_parameter(graph: eg.Graph) -> None:
    """An unknown parameter names the node and the field, and lists the known ones."""
    with pytest.raises(eg.GraphError, match=r"node 'x': strength: unknown parameter, got 0.5; known: "):
        graph.edit("A cat", name="x", strength=0.5)
    with pytest.raises(eg.GraphError, match=r"unknown parameter.*strength"):
        eg.Graph(strength=0.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", "seven"),
        ("seed", True),
        ("seed", 7.0),
        ("seed", -1),
        ("width", "1024"),
        ("output_format", "gif"),
        ("prompt_upsampling", "yes"),
    ],
)
def test_wrong_types_name_node_field_and_value(graph: eg.Graph, field: str, value: object) -> None:
    """Ill-typed parameters are GraphErrors naming the node, the field and the value."""
    with pytest.raises(eg.GraphError) as caught:
        graph.edit("A cat", name="x", **{field: value})
    message = str(caught.value)
    assert message.startswith(f"node 'x': {field}: ")
    assert repr(value) in message


def test_wrong_types_on_flex_only_params(graph: eg.Graph) -> None:
    """steps='20' and guidance=True are refused on flex, naming the field."""
    with pytest.raises(eg.GraphError, match=r"node 'x': steps: .*'20'"):
        graph.edit("A cat", name="x", model="flux.2-flex", steps="20")
    with pytest.raises(eg.GraphError, match=r"node 'x': guidance: .*True"):
        graph.edit("A cat", name="x", model="flux.2-flex", guidance=True)


def test_invalid_edit_leaves_the_graph_unchanged(graph: eg.Graph) -> None:
    """A refused edit adds no node, so the name stays free."""
    with pytest.raises(eg.GraphError):
        graph.edit("A cat", name="x", seed="seven")
    assert "x" not in graph and len(graph) == 0
    graph.edit("A cat", name="x", seed=7)
    assert graph.edits["x"].parameters["seed"] == 7


def test_prompt_of_wrong_type(graph: eg.Graph) -> None:
    """A prompt that is not a str, dict or StructuredPrompt names the node and field."""
    with pytest.raises(eg.GraphError, match=r"node 'x': prompt: "):
        graph.edit(42, name="x")  # type: ignore[call-overload]


def test_graph_defaults_are_checked(tmp_path: Path) -> None:
    """Graph-wide defaults are validated like edit parameters."""
    with pytest.raises(eg.GraphError, match="width: 17 is not allowed"):
        eg.Graph(width=17)
    with pytest.raises(eg.GraphError, match="seed: .*'x'"):
        eg.Graph(seed="x")
    g = eg.Graph(width=512, height=512, seed=3, output_format="png")
    g.edit("A cat", name="cat")
    assert g.edits["cat"].parameters["width"] == 512
    assert g.edits["cat"].parameters["seed"] == 3
    assert g.edits["cat"].parameters["output_format"] == "png"


def test_run_concurrency_must_be_positive(graph: eg.Graph) -> None:
    """concurrency=0 is a GraphError, not silently the default."""
    with pytest.raises(eg.GraphError, match="concurrency"):
        eg.Graph(concurrency=0)
    with pytest.raises(eg.GraphError, match="concurrency: must be a positive int, got 0"):
        graph.run(concurrency=0)


# ---------------------------------------------------------------------- sweeps and chains


def test_seed_sweep(graph: eg.Graph) -> None:
    """seed=[1, 2, 3] makes a Sweep named name[0..2], one seed each."""
    car = graph.image(RED, name="car")
    sweep = graph.edit(f"Paint {car} blue", name="blue", seed=[1, 2, 3])
    assert isinstance(sweep, eg.Sweep)
    assert [handle.name for handle in sweep] == ["blue[0]", "blue[1]", "blue[2]"]
    assert len(sweep) == 3
    assert [graph.edits[f"blue[{i}]"].parameters["seed"] for i in range(3)] == [1, 2, 3]
    assert sweep.pick(1).name == "blue[1]"


def test_prompt_sweep_and_continuing_from_a_pick(graph: eg.Graph) -> None:
    """A list of prompts makes one variant per prompt; pick(i) is a handle to continue from."""
    car = graph.image(RED, name="car")
    sweep = graph.edit([f"Paint {car} blue", f"Paint {car} red"], name="paint")
    assert isinstance(sweep, eg.Sweep)
    assert graph.edits["paint[1]"].prompt == "Paint image 1 red"
    graph.edit(f"Make {sweep.pick(1)} a night scene", name="night")
    assert graph.edits["night"].references == ("paint[1]",)
    graph.edit("Make @paint[0] a day scene", name="day")
    assert graph.edits["day"].references == ("paint[0]",)


def test_sweep_cannot_be_a_reference(graph: eg.Graph) -> None:
    """A whole sweep in an f-string is a GraphError telling to pick one."""
    car = graph.image(RED, name="car")
    sweep = graph.edit(f"Paint {car}", name="paint", seed=[1, 2])
    with pytest.raises(eg.GraphError, match="pick"):
        graph.edit(f"Make {sweep} darker", name="dark")


def test_sweep_pick_out_of_range_names_the_sweep(graph: eg.Graph) -> None:
    """pick(5) on two variants is a GraphError naming the sweep."""
    car = graph.image(RED, name="car")
    sweep = graph.edit(f"Paint {car}", name="paint", seed=[1, 2])
    assert isinstance(sweep, eg.Sweep)
    with pytest.raises(eg.GraphError, match=r"'paint'.*0\.\.1.*5"):
        sweep.pick(5)


def test_sweep_mismatched_lengths_and_empty(graph: eg.Graph) -> None:
    """Lists of different lengths, or no variants, are GraphErrors naming the node."""
    car = graph.image(RED, name="car")
    with pytest.raises(eg.GraphError, match=r"node 'paint': seed: 3 seeds for 2 prompts"):
        graph.edit([f"Paint {car} blue", f"Paint {car} red"], name="paint", seed=[1, 2, 3])
    with pytest.raises(eg.GraphError, match=r"node 'paint': .*at least one"):
        graph.edit(f"Paint {car}", name="paint", seed=[])


def test_invalid_sweep_variant_adds_no_variant(graph: eg.Graph) -> None:
    """A sweep whose second seed is invalid adds none of its variants."""
    car = graph.image(RED, name="car")
    with pytest.raises(eg.GraphError, match=r"node 'paint\[1\]': seed: .*'x'"):
        graph.edit(f"Paint {car}", name="paint", seed=[1, "x"])
    assert set(graph) == {"car"}
    sweep = graph.edit(f"Paint {car}", name="paint", seed=[1, 2])
    assert [handle.name for handle in sweep] == ["paint[0]", "paint[1]"]


def test_sweep_name_collisions(graph: eg.Graph) -> None:
    """A sweep reusing a sweep's name is refused; unnamed sweeps get fresh names."""
    car = graph.image(RED, name="car")
    graph.edit(f"Paint {car}", name="paint", seed=[1, 2])
    with pytest.raises(eg.GraphError, match="already exists"):
        graph.edit(f"Paint {car}", name="paint", seed=[3, 4])
    first = graph.edit(f"Paint {car}", seed=[5, 6])
    second = graph.edit(f"Paint {car}", seed=[7, 8])
    assert isinstance(first, eg.Sweep) and isinstance(second, eg.Sweep)
    assert first[0].name != second[0].name


def test_chain(graph: eg.Graph) -> None:
    """chain appends one edit per prompt, each taking the previous as image 1."""
    car = graph.image(RED, name="car")
    last = eg.chain(car, ["Paint image 1 blue", "Make image 1 a night scene", "Add rain"],
                    seed=4)
    names = list(graph.edits)
    assert last.name == names[-1] and len(names) == 3
    assert graph.edits[names[0]].references == ("car",)
    assert graph.edits[names[1]].references == (names[0],)
    assert graph.edits[names[2]].references == (names[1],)
    assert graph.edits[names[1]].prompt == "Make image 1 a night scene"
    assert all(node.parameters["seed"] == 4 for node in graph.edits.values())


def test_chain_refuses_a_single_str(graph: eg.Graph) -> None:
    """chain(handle, 'one prompt') is refused rather than run letter by letter."""
    car = graph.image(RED, name="car")
    with pytest.raises(eg.GraphError, match="chain: prompts must be a list"):
        eg.chain(car, "Paint image 1 blue")  # type: ignore[arg-type]


def test_chain_refuses_refs(graph: eg.Graph) -> None:
    """chain sets refs for each edit: passing them is a GraphError naming the field."""
    car = graph.image(RED, name="car")
    with pytest.raises(eg.GraphError, match="chain: refs: "):
        eg.chain(car, ["Paint image 1 blue"], refs=[car])
    assert list(graph.edits) == []


def test_chain_names_its_steps_from_a_prefix(graph: eg.Graph) -> None:
    """chain(name='look') names the edits look-1, look-2, each taking the previous."""
    car = graph.image(RED, name="car")
    last = eg.chain(car, ["Paint image 1 blue", "Add rain to image 1"], name="look")
    assert last.name == "look-2"
    assert list(graph.edits) == ["look-1", "look-2"]
    assert graph.edits["look-2"].references == ("look-1",)


def test_invalid_chain_adds_no_edit(graph: eg.Graph) -> None:
    """A chain whose second prompt is invalid adds none of its edits."""
    car = graph.image(RED, name="car")
    with pytest.raises(eg.GraphError, match="image 2"):
        eg.chain(car, ["Paint image 1 blue", "Blend image 1 with image 2"])
    assert list(graph.edits) == []


def test_chain_from_a_sweep_needs_a_pick(graph: eg.Graph) -> None:
    """chain(sweep, ...) says to pick a variant."""
    car = graph.image(RED, name="car")
    sweep = graph.edit(f"Paint {car}", name="paint", seed=[1, 2])
    with pytest.raises(eg.GraphError, match="pick"):
        eg.chain(sweep, ["Add rain"])  # type: ignore[arg-type]
    assert eg.chain(sweep.pick(0), ["Add rain"]).name in graph.edits


def test_graph_repr_len_contains_iter(graph: eg.Graph) -> None:
    """A graph reports its size, membership and node names in declaration order."""
    car = graph.image(RED, name="car")
    graph.edit(f"Paint {car}", name="blue")
    assert len(graph) == 2 and "blue" in graph and "bus" not in graph
    assert list(graph) == ["car", "blue"]
    assert repr(graph) == "<Graph 1 sources, 1 edits>"


def test_a_failed_edit_uses_up_no_automatic_name(graph: eg.Graph) -> None:
    """Automatic names do not depend on earlier failed edit() calls (notebook re-runs)."""
    car = graph.image(RED, name="car")
    with pytest.raises(eg.GraphError):
        graph.edit(f"Paint {car} blue", width=100)
    assert graph.edit(f"Paint {car} blue").name == "edit_1"


def test_graph_default_steps_on_pro_is_refused() -> None:
    """Graph-wide steps/guidance on a model that takes none is a GraphError, not dropped."""
    with pytest.raises(eg.GraphError, match=r"graph defaults: steps: .*FLUX.2 \[pro\].*got 28"):
        eg.Graph(model="flux.2-pro", steps=28)
    with pytest.raises(eg.GraphError, match="graph defaults: guidance: "):
        eg.Graph(model="flux.2-max", guidance=7.5)
    assert eg.Graph(model="flux.2-flex", steps=28, guidance=7.5).defaults["steps"] == 28

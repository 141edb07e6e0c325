"""The exception hierarchy, how a failed run reads, and that only editgraph errors cross
the public boundary."""

from __future__ import annotations

import ast
import io
import json
import struct
import zlib
from pathlib import Path

import pydantic
import pytest
from PIL import Image

import editgraph as eg
from editgraph.replay import replay
from editgraph.report import report_from_folder
from editgraph.saved import read_manifest


def test_the_tree_is_rooted_at_editgraph_error() -> None:
    """Every error class derives from EditGraphError; RecipeError is a GraphError."""
    from editgraph.errors import RecipeError

    for error in (eg.GraphError, eg.ProviderError, eg.InputFailedError, eg.BudgetError,
                  eg.StoreError, eg.RunError, RecipeError):
        assert issubclass(error, eg.EditGraphError)
    assert issubclass(RecipeError, eg.GraphError)


def test_run_error_has_one_line_per_failed_node() -> None:
    """str(RunError) is one 'name: message' line per failure; .failures keeps them all."""
    failures = {
        "bad": eg.ProviderError("node 'bad': refused", node="bad", status=400),
        "child": eg.InputFailedError("child", "bad"),
    }
    error = eg.RunError(failures)
    assert str(error).splitlines() == [
        "bad: node 'bad': refused",
        "child: node 'child': not run because its input 'bad' failed",
    ]
    assert error.failures == failures


def test_provider_error_carries_node_status_and_billing() -> None:
    """ProviderError says which node, which status, and whether it may have been billed."""
    error = eg.ProviderError("lost", node="n", status=None, possibly_billed=True)
    assert (error.node, error.status, error.possibly_billed) == ("n", None, True)


# ---------------------------------------------------------------------------- the boundary
# As httpx's tests/test_exceptions.py does for its transports: feed each public entry point
# what the libraries underneath choke on, and check that only a specific editgraph error
# comes out (never pydantic's ValidationError, zlib.error, IndexError, struct.error or a
# bare EditGraphError).

LOWER_LIBRARY_ERRORS = (pydantic.ValidationError, zlib.error, IndexError, struct.error, KeyError)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_chunk(chunk: bytes) -> bytes:
    """A real 4x4 PNG with ``chunk`` inserted after its header."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[:33] + chunk + data[33:]  # 8-byte signature + 25-byte IHDR chunk


def jpeg_with_app1(body: bytes) -> bytes:
    """A real 4x4 JPEG with an APP1 segment holding ``body`` right after SOI."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + data[2:]


XMP = b"http://ns.adobe.com/xap/1.0/\x00"
NAMESPACE = b"https://pypi.org/project/editgraph/ns/provenance/1.0/"
MALFORMED_IMAGES = {
    "compressed record that is not zlib": png_with_chunk(
        png_chunk(b"iTXt", b"editgraph\x00\x01\x00\x00\x00not zlib at all")),
    "record chunk without separators": png_with_chunk(png_chunk(b"iTXt", b"editgraph\x00")),
    "record that is not JSON": png_with_chunk(
        png_chunk(b"iTXt", b"editgraph\x00\x00\x00\x00\x00{not json")),
    "record missing its fields": png_with_chunk(
        png_chunk(b"iTXt", b'editgraph\x00\x00\x00\x00\x00{"node": "x"}')),
    "record that is not UTF-8": png_with_chunk(
        png_chunk(b"iTXt", b"editgraph\x00\x00\x00\x00\x00\xff\xfe")),
    "truncated PNG chunk": png_with_chunk(struct.pack(">I", 10_000) + b"iTXt" + b"x" * 10),
    "XMP that is not XML": jpeg_with_app1(XMP + b"<x " + NAMESPACE + b" <<"),
    "truncated extended XMP": jpeg_with_app1(b"http://ns.adobe.com/xmp/extension/\x00" + b"A" * 8),
    "image with no record": png_with_chunk(b""),
}


@pytest.mark.parametrize("data", MALFORMED_IMAGES.values(), ids=MALFORMED_IMAGES.keys())
def test_malformed_provenance_is_a_provenance_error(tmp_path: Path, data: bytes) -> None:
    """eg.provenance and replay of an image with a broken record raise ProvenanceError only."""
    path = tmp_path / "image.png"
    path.write_bytes(data)
    for call in (lambda: eg.provenance(path),
                 lambda: replay(path, cache_dir=str(tmp_path / "cache"))):
        with pytest.raises(eg.EditGraphError) as caught:
            call()
        assert_specific(caught.value)
    with pytest.raises(eg.ProvenanceError):
        eg.provenance(path)


MALFORMED_MANIFESTS = {
    "not JSON": "{",
    "not an object": "[1, 2]",
    "missing fields": '{"provider": "preview"}',
    "an entry missing fields": json.dumps({
        "editgraph_version": "0.1.0", "provider": "preview", "created_at": 0, "edits": [{}],
        "failures": {}, "edits_run": 0, "edits_cached": 0, "estimated_cost": 0,
        "possibly_billed_twice": []}),
    "a newer schema": json.dumps({"schema_version": 99}),
}


@pytest.mark.parametrize("text", MALFORMED_MANIFESTS.values(), ids=MALFORMED_MANIFESTS.keys())
def test_malformed_manifest_is_a_graph_error(tmp_path: Path, text: str) -> None:
    """Reading, reporting or replaying a broken manifest.json raises GraphError only."""
    (tmp_path / "manifest.json").write_text(text)
    calls = (lambda: read_manifest(tmp_path), lambda: report_from_folder(tmp_path),
             lambda: replay(tmp_path, cache_dir=str(tmp_path / "cache")))
    for call in calls:
        with pytest.raises(eg.GraphError) as caught:
            call()
        assert_specific(caught.value)


def test_provider_settings_are_configuration_errors() -> None:
    """An unknown provider, a missing key and a bad setting are ConfigurationErrors."""
    calls = (lambda: eg.providers.by_name("nope"), lambda: eg.providers.Together(),
             lambda: eg.providers.Together(api_key="k" * 20, max_retries=-1),
             lambda: eg.providers.Together(api_key="k" * 20, rate_limit=0))
    for call in calls:
        with pytest.raises(eg.ConfigurationError) as caught:
            call()
        assert_specific(caught.value)


def test_run_error_carries_the_run(tmp_path: Path) -> None:
    """RunError.run is the eg.Run of what finished."""

    class Failing:
        name = "failing"

        async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
            raise RuntimeError("no")

    graph = eg.Graph(cache_dir=tmp_path, width=256, height=256)
    graph.edit("A red square", name="square")
    with pytest.raises(eg.RunError) as caught:
        graph.run(provider=Failing(), progress=False)
    assert isinstance(caught.value.run, eg.Run)
    assert list(caught.value.failures) == ["square"]


def test_no_bare_editgraph_error_is_raised() -> None:
    """No module raises the base class itself: each error is a specific subclass."""
    package = Path(eg.__file__).parent
    bare = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(raised, ast.Name) and raised.id == "EditGraphError":
                    bare.append(f"{path.name}:{node.lineno}")
    assert bare == []


def assert_specific(error: BaseException) -> None:
    """A specific editgraph error, chained to nothing from the list of lower-level ones
    in its own type."""
    assert type(error) is not eg.EditGraphError, error
    assert isinstance(error, eg.EditGraphError), error
    assert not isinstance(error, LOWER_LIBRARY_ERRORS), type(error)
    assert "\n" not in str(error), str(error)

"""Canonical JSON, content hashes, edit keys and derived seeds."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import editgraph as eg
from editgraph.keys import (
    SCHEMA_VERSION,
    canonical_json,
    content_hash,
    derive_seed,
    edit_key,
    request_key,
)
from editgraph.models import resolve_model
from editgraph.nodes import EditNode


def png(colour: tuple[int, int, int]) -> bytes:
    """A small solid-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


RED = png((220, 30, 30))
GREEN = png((30, 200, 30))
BLUE = png((30, 30, 220))


class CountingProvider:
    """A provider that counts calls; its image depends only on what reaches the API."""

    def __init__(self, name: str = "counting") -> None:
        self.name = name
        self.calls: list[eg.EditRequest] = []

    async def generate(self, request: eg.EditRequest) -> eg.GeneratedImage:
        """A solid PNG whose colour comes from the prompt, seed and reference hashes."""
        self.calls.append(request)
        material = "|".join([request.prompt, str(request.seed),
                             *(reference.hash for reference in request.references)])
        digest = hashlib.sha256(material.encode()).digest()
        # A fresh URL every call: keys must not depend on it.
        return eg.GeneratedImage(data=png((digest[0], digest[1], digest[2])),
                                 media_type="image/png",
                                 url=f"https://results.example/{self.name}/{len(self.calls)}")


# --------------------------------------------------------------------------- canonical JSON


def test_canonical_json_sorts_keys_without_spaces_and_keeps_unicode() -> None:
    """Keys sorted at every level, no spaces, non-ASCII kept as UTF-8."""
    value = {"b": 1, "a": [1, 2.5, None, True, {"z": "caf\u00e9", "y": "\u96e8"}], "\u00e9": ""}
    expected = '{"a":[1,2.5,null,true,{"y":"\u96e8","z":"caf\u00e9"}],"b":1,"\u00e9":""}'
    assert canonical_json(value) == expected.encode("utf-8")


def test_canonical_json_is_independent_of_insertion_order() -> None:
    """Two equal dicts built in different orders give the same bytes."""
    assert canonical_json({"x": 1, "y": {"p": 1, "q": 2}}) == canonical_json(
        {"y": {"q": 2, "p": 1}, "x": 1}
    )


def test_canonical_json_treats_tuples_as_lists() -> None:
    """A tuple and a list with the same items are the same JSON array."""
    assert canonical_json({"r": ("a", "b")}) == b'{"r":["a","b"]}'
    assert canonical_json({"r": ["a", "b"]}) == b'{"r":["a","b"]}'


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset({"a"}),
        object(),
        float("nan"),
        float("inf"),
        -float("inf"),
        b"bytes",
        bytearray(b"x"),
        {1: "int key"},
        {"nested": [{"deep": {1, 2}}]},
        {"guidance": float("nan")},
        decimal.Decimal("1.5"),
        datetime.date(2024, 1, 1),
        Path("car.png"),
    ],
    ids=repr,
)
def test_non_canonical_values_raise_type_error(value: Any) -> None:
    """Anything without one canonical JSON form is a TypeError, never a weaker key."""
    with pytest.raises(TypeError, match="canonical JSON|not a str"):
        canonical_json(value)


def test_type_error_names_the_offending_path() -> None:
    """The error says where in the value the bad item is."""
    with pytest.raises(TypeError, match=r"value\.parameters\.tags\[1\]"):
        canonical_json({"parameters": {"tags": ["ok", {1}]}})


def test_edit_key_refuses_non_canonical_parameters() -> None:
    """A parameter that cannot be hashed canonically fails the key, not weakens it."""
    with pytest.raises(TypeError):
        edit_key(provider="p", model="m", prompt="x", parameters={"guidance": float("nan")},
                 seed=1, reference_hashes=[])
    with pytest.raises(TypeError):
        edit_key(provider="p", model="m", prompt="x", parameters={"extra": {1, 2}},
                 seed=1, reference_hashes=[])


def test_content_hash_is_sha256_hex() -> None:
    """content_hash is the sha256 hex digest of the bytes."""
    assert content_hash(RED) == hashlib.sha256(RED).hexdigest()
    assert len(content_hash(b"")) == 64


# --------------------------------------------------------------------------- edit_key


BASE: dict[str, Any] = {
    "provider": "together",
    "model": "black-forest-labs/FLUX.2-flex",
    "prompt": "Make image 1 blue",
    "parameters": {"width": 1024, "height": 768, "steps": 28, "guidance": 7.5,
                   "prompt_upsampling": False, "output_format": "jpeg"},
    "seed": 7,
    "reference_hashes": [content_hash(RED), content_hash(GREEN)],
}


def _with(**changes: Any) -> dict[str, Any]:
    fields = {**BASE, "parameters": dict(BASE["parameters"])}
    for name, value in changes.items():
        if name in fields["parameters"]:
            fields["parameters"][name] = value
        else:
            fields[name] = value
    return fields


@pytest.mark.parametrize(
    "changes",
    [
        {"provider": "preview"},
        {"model": "black-forest-labs/FLUX.2-dev"},
        {"prompt": "Make image 1 green"},
        {"prompt": "Make image 1 blue "},
        {"width": 512},
        {"height": 512},
        {"steps": 29},
        {"guidance": 7.0},
        {"prompt_upsampling": True},
        {"output_format": "png"},
        {"seed": 8},
        {"seed": None},
        {"reference_hashes": [content_hash(GREEN), content_hash(RED)]},
        {"reference_hashes": [content_hash(RED), content_hash(BLUE)]},
        {"reference_hashes": [content_hash(RED)]},
    ],
    ids=repr,
)
def test_edit_key_changes_with_every_input(changes: dict[str, Any]) -> None:
    """Each input that decides the output changes the key."""
    assert edit_key(**_with(**changes)) != edit_key(**BASE)


def test_edit_key_is_stable() -> None:
    """The same inputs give the same 64-hex-digit key, parameter order aside."""
    reordered = {**BASE, "parameters": dict(reversed(list(BASE["parameters"].items())))}
    assert edit_key(**BASE) == edit_key(**reordered)
    assert len(edit_key(**BASE)) == 64
    int(edit_key(**BASE), 16)


def test_schema_version_is_part_of_the_key() -> None:
    """The key is sha256 over canonical JSON that includes the schema version."""
    material = {
        "provider": BASE["provider"], "model": BASE["model"], "prompt": BASE["prompt"],
        "parameters": BASE["parameters"], "seed": BASE["seed"],
        "references": BASE["reference_hashes"],
    }
    key = edit_key(**BASE)
    assert key == content_hash(canonical_json({**material, "schema": SCHEMA_VERSION}))
    assert key != content_hash(canonical_json({**material, "schema": SCHEMA_VERSION + 1}))
    assert isinstance(SCHEMA_VERSION, int) and SCHEMA_VERSION >= 1


# --------------------------------------------------------------------------- derived seeds


def test_derived_seed_is_stable_and_in_range() -> None:
    """derive_seed gives the same seed for the same key, within 0..2**31-1."""
    key = edit_key(**_with(seed=None))
    assert derive_seed(key) == derive_seed(key)
    assert 0 <= derive_seed(key) < 2**31


@given(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
def test_property_derived_seed_always_in_range(key: str) -> None:
    """Every key gives a seed every FLUX.2 endpoint accepts."""
    assert 0 <= derive_seed(key) < 2**31


def test_extreme_keys_give_extreme_but_valid_seeds() -> None:
    """The all-zero and all-f keys still give seeds in range."""
    assert derive_seed("0" * 64) == 0
    assert 0 <= derive_seed("f" * 64) < 2**31


# --------------------------------------------------------------------------- through the graph


def two_source_graph(tmp_path: Path, **edit_params: Any) -> eg.Graph:
    """Sources a (red) and b (green) and one edit 'x' of both, on FLUX.2 [flex]."""
    g = eg.Graph(model="flux.2-flex", cache_dir=tmp_path / "cache")
    prompt = edit_params.pop("prompt", "Put image 1 next to image 2")
    refs = edit_params.pop("refs", ["a", "b"])
    g.image(edit_params.pop("a", RED), name="a")
    g.image(edit_params.pop("b", GREEN), name="b")
    model = edit_params.pop("model", None)
    g.edit(prompt, refs=refs, name="x", model=model, **edit_params)
    return g


def plan_key(graph: eg.Graph, provider: str = "counting") -> str:
    """The key plan() computes for the graph's only edit."""
    (step,) = graph.plan(provider=CountingProvider(provider)).steps
    assert step.key is not None
    return step.key


@pytest.mark.parametrize(
    ("changes", "provider"),
    [
        ({"prompt": "Put image 2 next to image 1"}, "counting"),
        ({"width": 512}, "counting"),
        ({"height": 512}, "counting"),
        ({"steps": 20}, "counting"),
        ({"guidance": 3.5}, "counting"),
        ({"prompt_upsampling": True}, "counting"),
        ({"output_format": "png"}, "counting"),
        ({"seed": 3}, "counting"),
        ({"model": "flux.2-dev"}, "counting"),
        ({}, "another-provider"),
        ({"refs": ["b", "a"]}, "counting"),
        ({"b": BLUE}, "counting"),
    ],
    ids=repr,
)
def test_graph_key_changes_with_each_input(
    tmp_path: Path, changes: dict[str, Any], provider: str
) -> None:
    """Through the graph: prompt, each parameter, seed, model, provider, reference order
    and reference bytes each change the edit's key."""
    assert plan_key(two_source_graph(tmp_path / "1", **changes), provider) != plan_key(
        two_source_graph(tmp_path / "2")
    )


def test_graph_key_ignores_node_names_and_source_paths(tmp_path: Path) -> None:
    """Same bytes at other paths, under other names, give the same key."""
    first_dir, second_dir = tmp_path / "one", tmp_path / "two" / "deeper"
    second_dir.mkdir(parents=True)
    first_dir.mkdir()
    (first_dir / "car.png").write_bytes(RED)
    (second_dir / "auto.png").write_bytes(RED)

    one = eg.Graph(cache_dir=tmp_path / "cache1")
    car = one.image(first_dir / "car.png")
    one.edit(f"Make {car} blue", name="blue")
    two = eg.Graph(cache_dir=tmp_path / "cache2")
    auto = two.image(str(second_dir / "auto.png"), name="vehicle")
    two.edit(f"Make {auto} blue", name="recoloured")

    assert plan_key(one) == plan_key(two)


def test_chained_keys_ignore_names_and_result_urls(tmp_path: Path) -> None:
    """A chain under other names, whose upstream results came back at other URLs, has
    the same keys all the way down."""
    def build(names: tuple[str, str, str], cache: Path) -> eg.Graph:
        g = eg.Graph(cache_dir=cache)
        source = g.image(RED, name=names[0])
        first = g.edit(f"Make {source} blue", name=names[1])
        g.edit(f"Make {first} a night scene", name=names[2])
        return g

    provider = CountingProvider()
    one = build(("car", "blue", "night"), tmp_path / "c1")
    two = build(("auto", "azure", "dark"), tmp_path / "c2")
    run_one = one.run(provider=provider, progress=False)
    run_two = two.run(provider=provider, progress=False)
    assert len(provider.calls) == 4
    assert run_one["blue"].url != run_two["azure"].url
    assert run_one["blue"].key == run_two["azure"].key
    assert run_one["night"].key == run_two["dark"].key


def test_renamed_graph_is_served_from_the_cache(tmp_path: Path) -> None:
    """Renaming every node of a graph costs no provider call."""
    cache = tmp_path / "cache"
    provider = CountingProvider()
    g = eg.Graph(cache_dir=cache)
    g.edit(f"Make {g.image(RED, name='car')} blue", name="blue")
    g.run(provider=provider, progress=False)
    renamed = eg.Graph(cache_dir=cache)
    renamed.edit(f"Make {renamed.image(RED, name='auto')} blue", name="azure")
    run = renamed.run(provider=provider, progress=False)
    assert len(provider.calls) == 1
    assert run["azure"].cached


def test_graph_derives_a_stable_seed_from_the_key(tmp_path: Path) -> None:
    """An edit without a seed gets derive_seed(its unseeded key), the same every time."""
    provider = CountingProvider()
    runs = []
    for index in range(2):
        g = eg.Graph(cache_dir=tmp_path / f"c{index}")
        g.edit(f"Make {g.image(RED, name='car')} blue", name="blue")
        runs.append(g.run(provider=provider, progress=False))
    request = runs[0]["blue"].request
    assert request.seed == runs[1]["blue"].request.seed
    assert 0 <= request.seed < 2**31
    unseeded = edit_key(
        provider="counting", model=request.model, prompt=request.prompt,
        parameters=request.model_dump(exclude={"node", "model", "prompt", "references", "seed"}),
        seed=None, reference_hashes=[content_hash(RED)],
    )
    assert request.seed == derive_seed(unseeded)
    assert runs[0]["blue"].key == edit_key(
        provider="counting", model=request.model, prompt=request.prompt,
        parameters=request.model_dump(exclude={"node", "model", "prompt", "references", "seed"}),
        seed=request.seed, reference_hashes=[content_hash(RED)],
    )


def test_a_given_seed_is_used_as_is(tmp_path: Path) -> None:
    """seed=7 reaches the provider unchanged."""
    provider = CountingProvider()
    g = eg.Graph(cache_dir=tmp_path)
    g.edit(f"Make {g.image(RED, name='car')} blue", name="blue", seed=7)
    run = g.run(provider=provider, progress=False)
    assert run["blue"].request.seed == 7 == provider.calls[0].seed


def test_request_references_carry_content_hashes(tmp_path: Path) -> None:
    """Each reference's hash is the sha256 of its bytes, in order."""
    provider = CountingProvider()
    g = eg.Graph(cache_dir=tmp_path)
    g.image(RED, name="red")
    g.image(GREEN, name="green")
    g.edit("Put @green beside @red", name="pair")
    run = g.run(provider=provider, progress=False)
    assert [r.hash for r in run["pair"].request.references] == [
        hashlib.sha256(GREEN).hexdigest(), hashlib.sha256(RED).hexdigest()
    ]


@given(
    st.text(),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(), st.booleans(),
                                                   st.none(), st.floats(allow_nan=False,
                                                                        allow_infinity=False))),
    st.lists(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), max_size=3),
    st.text(),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**31 - 1)),
)
def test_request_key_matches_the_key_of_its_material(
    prompt: str, parameters: dict[str, Any], hashes: list[str], provider: str,
    given_seed: int | None,
) -> None:
    """request_key (its canonical JSON written member by member, the seed spliced into
    it) gives the key and seed that edit_key gives for the material written out in full,
    unseeded then seeded, whatever the prompt and provider hold (quotes, controls,
    non-ASCII) and whether a seed was given."""
    spec = resolve_model("flux.2-pro")
    chosen = {k: v for k, v in parameters.items() if k != "seed"}
    if given_seed is not None:
        chosen["seed"] = given_seed
    node = EditNode(name="n", model=spec, prompt=prompt, references=(), parameters=chosen)
    material = {k: v for k, v in chosen.items() if k != "seed"}
    seed = given_seed
    if seed is None:
        seed = derive_seed(edit_key(provider=provider, model=spec.id, prompt=prompt,
                                    parameters=material, seed=None, reference_hashes=hashes))
    assert request_key(node, hashes, provider) == (
        edit_key(provider=provider, model=spec.id, prompt=prompt, parameters=material,
                 seed=seed, reference_hashes=hashes),
        seed,
    )


def test_request_key_of_a_str_subclass_is_the_key_of_its_text() -> None:
    """A prompt that is a str subclass takes the long way and gets the same key as its
    plain text."""

    class Marked(str):
        pass

    spec = resolve_model("flux.2-pro")
    plain = EditNode(name="n", model=spec, prompt="make it blue", references=(),
                     parameters={"width": 64})
    marked = EditNode(name="n", model=spec, prompt=Marked("make it blue"), references=(),
                      parameters={"width": 64})
    assert request_key(marked, ["a" * 64], "p") == request_key(plain, ["a" * 64], "p")


@pytest.mark.parametrize(("parameters", "hashes", "message"), [
    ({"x": {"y": [1, float("nan")]}}, [], r"value\.parameters\.x\.y\[1\]: nan"),
    ({"x": {1: "a"}}, [], r"value\.parameters\.x: key 1 is not a str"),
    ({"x": object()}, [], r"value\.parameters\.x: object has no canonical JSON form"),
    ({}, ["a" * 64, b"raw"], r"value\.references\[1\]: bytes has no canonical JSON form"),
])
def test_request_key_refuses_what_has_no_canonical_form(
    parameters: dict[Any, Any], hashes: list[Any], message: str
) -> None:
    """request_key checks every member it hashes, nested parameters and references too,
    and names the path of what has no canonical JSON form."""
    node = EditNode(name="n", model=resolve_model("flux.2-pro"), prompt="p", references=(),
                    parameters=parameters)
    with pytest.raises(TypeError, match=message):
        request_key(node, hashes, "p")

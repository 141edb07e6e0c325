"""Index-aware prompt rewriting, quoted text, hex colours and structured prompts."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import editgraph as eg
from editgraph.prompts import Camera, reference_token, rewrite_prompt

RED = (220, 30, 30)
GREEN = (30, 200, 30)
BLUE = (30, 30, 220)
GREY = (128, 128, 128)


def png(colour: tuple[int, int, int]) -> bytes:
    """A small solid-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def graph(tmp_path: Path) -> eg.Graph:
    """A graph with sources a, b, c, d (distinct) and a_twin (same bytes as a)."""
    g = eg.Graph(cache_dir=tmp_path)
    g.image(png(RED), name="a")
    g.image(png(GREEN), name="b")
    g.image(png(BLUE), name="c")
    g.image(png(GREY), name="d")
    g.image(png(RED), name="a_twin")
    return g


def edit(graph: eg.Graph, prompt: Any, **kwargs: Any) -> tuple[str, tuple[str, ...]]:
    """Add an edit and return its rewritten prompt and reference names."""
    handle = graph.edit(prompt, **kwargs)
    assert isinstance(handle, eg.Handle)
    node = graph.edits[handle.name]
    return node.prompt, node.references


# Direct calls to rewrite_prompt: names are nodes; "a_twin" has a's bytes.
GRAPH_ID = "g-test"
NODES = ("a", "b", "c", "d", "e", "a_twin")


def canonical(name: str) -> str:
    """What the graph does: the first node with the same content, or GraphError."""
    if name not in NODES:
        raise eg.GraphError(f"node 'x': prompt: unknown reference @{name}")
    return "a" if name == "a_twin" else name


def token(name: str) -> str:
    """The text a handle of ``name`` renders as in an f-string."""
    return reference_token(GRAPH_ID, name)


def rewrite(prompt: Any, refs: list[str] | None = None) -> tuple[str, tuple[str, ...]]:
    """rewrite_prompt for node 'x' of the test graph."""
    result = rewrite_prompt(prompt, node="x", refs=refs, graph_id=GRAPH_ID, canonical=canonical)
    return result.text, result.references


# --------------------------------------------------------------------------- mentions


def test_fstring_handles_become_image_n_in_first_mention_order(graph: eg.Graph) -> None:
    """Handles in an f-string become "image N" numbered by first mention."""
    a, b = graph["a"], graph["b"]
    prompt, refs = edit(graph, f"Put the hat from {b} on the person in {a}")
    assert prompt == "Put the hat from image 1 on the person in image 2"
    assert refs == ("b", "a")


def test_at_names_become_image_n_in_first_mention_order(graph: eg.Graph) -> None:
    """@name in a plain string works like a handle."""
    prompt, refs = edit(graph, "Recolour @c with the colour of @a, keep @c's shadow")
    assert prompt == "Recolour image 1 with the colour of image 2, keep image 1's shadow"
    assert refs == ("c", "a")


def test_handles_and_at_names_share_one_numbering(graph: eg.Graph) -> None:
    """A handle and an @name of the same node are the same reference."""
    prompt, refs = edit(graph, f"Blend {graph['b']} and @a, then @b again")
    assert prompt == "Blend image 1 and image 2, then image 1 again"
    assert refs == ("b", "a")


def test_at_names_reach_edits_and_sweep_variants(graph: eg.Graph) -> None:
    """@name refers to edits too, including a sweep variant such as name[1]."""
    graph.edit("Make @a blue", name="blue")
    graph.edit("Make @a green", name="tone", seed=[1, 2])
    prompt, refs = edit(graph, "Put @tone[1] next to @blue.")
    assert prompt == "Put image 1 next to image 2."
    assert refs == ("tone[1]", "blue")


def test_at_names_with_dots_reach_file_stem_names(graph: eg.Graph, tmp_path: Path) -> None:
    """A source named after car.v2.png is @car.v2; a sentence's final '.' is not a name."""
    (tmp_path / "car.v2.png").write_bytes(png((1, 2, 3)))
    graph.image(tmp_path / "car.v2.png")
    graph.image(png((4, 5, 6)), name="car")
    prompt, refs = edit(graph, "Paint @car.v2 like @car. Then @a.")
    assert prompt == "Paint image 1 like image 2. Then image 3."
    assert refs == ("car.v2", "car", "a")


def test_double_at_escapes_a_literal_at(graph: eg.Graph) -> None:
    """`@@` becomes a literal '@' and is not a reference."""
    prompt, refs = edit(graph, "Write @@a on the wall of @b")
    assert prompt == "Write @a on the wall of image 1"
    assert refs == ("b",)


def test_at_inside_a_word_is_not_a_mention(graph: eg.Graph) -> None:
    """An e-mail address is text, not a reference."""
    prompt, refs = edit(graph, "Print hello@a.com on the shirt in @b")
    assert prompt == "Print hello@a.com on the shirt in image 1"
    assert refs == ("b",)


def test_explicit_refs_set_the_numbering(graph: eg.Graph) -> None:
    """With refs=, handles are numbered by their place in refs, not in the text."""
    a, b = graph["a"], graph["b"]
    prompt, refs = edit(graph, f"Put {a} beside {b}", refs=[b, "a"])
    assert prompt == "Put image 2 beside image 1"
    assert refs == ("b", "a")


def test_explicit_refs_may_include_unmentioned_images(graph: eg.Graph) -> None:
    """A reference in refs that the prompt never names is still sent."""
    prompt, refs = edit(graph, "The person from image 1 is petting the cat from image 2",
                        refs=["c", "d"])
    assert prompt == "The person from image 1 is petting the cat from image 2"
    assert refs == ("c", "d")


def test_node_mentioned_twice_is_one_reference(graph: eg.Graph) -> None:
    """Mentioning a node again reuses its number."""
    a = graph["a"]
    prompt, refs = edit(graph, f"{a} left, {graph['b']} right, {a} again")
    assert prompt == "image 1 left, image 2 right, image 1 again"
    assert refs == ("a", "b")


def test_sources_with_identical_bytes_are_one_reference(graph: eg.Graph) -> None:
    """Two sources with the same content are sent once, under the first one's name."""
    prompt, refs = edit(graph, f"{graph['a_twin']} next to {graph['a']} and {graph['b']}")
    assert prompt == "image 1 next to image 1 and image 2"
    assert refs == ("a", "b")


def test_explicit_refs_with_twins_renumber_literals(graph: eg.Graph) -> None:
    """A template written for refs=[a, a_twin, b] is renumbered for the deduplicated list."""
    prompt, refs = edit(graph, "Image 3 wears the hat from image 2", refs=["a", "a_twin", "b"])
    assert prompt == "Image 2 wears the hat from image 1"
    assert refs == ("a", "b")


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("image 2", "image 2"),
        ("image 4", "image 3"),
        ("image 3", "image 1"),
        ("Image #4", "Image #3"),
        ("IMAGE #3", "IMAGE #1"),
        ("image#4", "image#3"),
        ("images 1 and 3", "images 1 and 1"),
        ("images 2 and 4", "images 2 and 3"),
        ("images 1, 2 and 4", "images 1, 2 and 3"),
        ("images 2, 3, and 4", "images 2, 1, and 3"),
        ("Images #2 & #4", "Images #2 & #3"),
        ("images 2 or 4", "images 2 or 3"),
    ],
)
def test_literal_references_are_renumbered_keeping_the_wording(
    graph: eg.Graph, literal: str, expected: str
) -> None:
    """Literal "image N" wording is read against refs and renumbered, case and form kept."""
    prompt, refs = edit(graph, f"Use {literal} here.", refs=["a", "b", "a", "c"])
    assert prompt == f"Use {expected} here."
    assert refs == ("a", "b", "c")


def test_literals_are_unchanged_when_refs_need_no_renumbering(graph: eg.Graph) -> None:
    """With distinct refs the final list equals refs and every literal stays as typed."""
    text = "Image #3 and images 1, 2 and 4 and image 2"
    prompt, _ = edit(graph, text, refs=["a", "b", "c", "d"])
    assert prompt == text


def test_literals_with_inferred_refs_use_the_inferred_numbering(graph: eg.Graph) -> None:
    """Without refs, "image N" refers to the Nth mentioned node."""
    prompt, refs = edit(graph, f"Put the hat from image 2 on {graph['a']}, see {graph['b']}")
    assert prompt == "Put the hat from image 2 on image 1, see image 2"
    assert refs == ("a", "b")


def test_a_number_glued_to_a_word_is_not_a_literal(graph: eg.Graph) -> None:
    """"subimage 9" and "image 12" beyond a digit boundary are not misread."""
    prompt, _ = edit(graph, "The subimage 9 of image 1", refs=["a"])
    assert prompt == "The subimage 9 of image 1"


# --------------------------------------------------------------------------- quotes


@pytest.mark.parametrize(
    ("opening", "closing"),
    [('"', '"'), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("'", "'")],
)
def test_quoted_text_is_left_as_typed(graph: eg.Graph, opening: str, closing: str) -> None:
    """Inside any of the four quote styles, "image N" and @name are typography."""
    quoted = f"{opening}image 4 by @studio, #2E405{closing}"
    prompt, refs = edit(
        graph, f"A sign on image 4 reads {quoted} in image 3", refs=["a", "b", "a", "c"]
    )
    assert prompt == f"A sign on image 3 reads {quoted} in image 1"
    assert refs == ("a", "b", "c")


def test_at_name_inside_quotes_is_not_a_reference(graph: eg.Graph) -> None:
    """A quoted @name of a real node is text, not an input."""
    prompt, refs = edit(graph, 'A mug reading "@a" on @b')
    assert prompt == 'A mug reading "@a" on image 1'
    assert refs == ("b",)


def test_handles_inside_quotes_are_still_references(graph: eg.Graph) -> None:
    """An f-string handle is a reference wherever it stands, quotes included."""
    prompt, refs = edit(graph, f"Put '{graph['a']}' and \u201c{graph['b']}\u201d in a frame")
    assert prompt == "Put 'image 1' and \u201cimage 2\u201d in a frame"
    assert refs == ("a", "b")


def test_possessive_at_name_is_not_a_quote(graph: eg.Graph) -> None:
    """`@a's` is a possessive: the apostrophe opens no quote."""
    prompt, refs = edit(graph, "Put @a's hat on @b's head, keep 'x' as typed")
    assert prompt == "Put image 1's hat on image 2's head, keep 'x' as typed"
    assert refs == ("a", "b")


def test_possessive_handle_is_not_a_quote(graph: eg.Graph) -> None:
    """`{handle}'s` is a possessive too."""
    prompt, refs = edit(graph, f"Put {graph['a']}'s hat on {graph['b']}'s head")
    assert prompt == "Put image 1's hat on image 2's head"
    assert refs == ("a", "b")


def test_possessive_after_image_number_is_not_a_quote(graph: eg.Graph) -> None:
    """"image 1's" opens no quote, so later literals are still renumbered."""
    prompt, _ = edit(graph, "Keep image 1's hat and image 4's scarf, leave 'x' alone",
                     refs=["a", "b", "a", "c"])
    assert prompt == "Keep image 1's hat and image 3's scarf, leave 'x' alone"


def test_apostrophes_inside_words_open_no_quote(graph: eg.Graph) -> None:
    """"rock'n'roll" has no quoted span."""
    prompt, _ = edit(graph, "A rock'n'roll poster in image 4", refs=["a", "b", "a", "c"])
    assert prompt == "A rock'n'roll poster in image 3"


def test_a_single_quote_closes_only_before_a_non_letter(graph: eg.Graph) -> None:
    """In 'it's image 4', the apostrophe of "it's" does not close the quote."""
    text = "A banner 'it's image 4' over image 4"
    prompt, _ = edit(graph, text, refs=["a", "b", "a", "c"])
    assert prompt == "A banner 'it's image 4' over image 3"


def test_an_unclosed_quote_is_not_a_quote(graph: eg.Graph) -> None:
    """A lone double quote (12" pizza) does not hide the rest of the prompt."""
    prompt, _ = edit(graph, 'A 12" pizza beside image 4', refs=["a", "b", "a", "c"])
    assert prompt == 'A 12" pizza beside image 3'


# --------------------------------------------------------------------------- errors


def test_unknown_at_name_is_a_graph_error(graph: eg.Graph) -> None:
    """An @name that is no node is refused, naming the edit and the name."""
    with pytest.raises(eg.GraphError, match=r"node 'x'.*prompt.*@nope"):
        graph.edit("Make @nope blue", name="x")
    assert "x" not in graph


def test_handle_not_in_refs_is_a_graph_error(graph: eg.Graph) -> None:
    """A handle the prompt uses must be in explicit refs."""
    with pytest.raises(eg.GraphError, match=r"node 'x': refs: 'c' is mentioned"):
        graph.edit(f"Put {graph['c']} on image 1", refs=[graph["a"]], name="x")


def test_at_name_not_in_refs_is_a_graph_error(graph: eg.Graph) -> None:
    """An @name the prompt uses must be in explicit refs."""
    with pytest.raises(eg.GraphError, match=r"node 'x': refs: 'b'"):
        graph.edit("Put @b on image 1", refs=["a"], name="x")


def test_handle_of_another_graph_is_a_graph_error(graph: eg.Graph, tmp_path: Path) -> None:
    """A handle from another graph cannot be an input."""
    other = eg.Graph(cache_dir=tmp_path / "other")
    stranger = other.image(png(RED), name="stranger")
    with pytest.raises(eg.GraphError, match=r"node 'x'.*another graph"):
        graph.edit(f"Put {stranger} here", name="x")


def test_an_edit_cannot_mention_itself(graph: eg.Graph) -> None:
    """@name of the edit being declared is refused."""
    with pytest.raises(eg.GraphError, match=r"node 'x'.*itself"):
        graph.edit("Make @x brighter", name="x")


@pytest.mark.parametrize("literal", ["image 0", "image 9", "Image #5", "images 1 and 7"])
def test_literal_out_of_range_is_a_graph_error(graph: eg.Graph, literal: str) -> None:
    """"image N" with N outside 1..len(refs) is refused, naming node, field and value."""
    with pytest.raises(eg.GraphError, match=rf"node 'x': prompt: '{literal}'") as caught:
        graph.edit(f"Use {literal}", refs=["a", "b", "c", "d"], name="x")
    assert "1..4" in str(caught.value)


@pytest.mark.parametrize(
    "text", ["an image 1024 px wide", "image 100", "Image #123 of the series", "images 250"]
)
def test_literal_with_three_or_more_digits_is_text(graph: eg.Graph, text: str) -> None:
    """"image N" with three or more digits is wording, not a reference, and stays as typed."""
    assert edit(graph, text, name="x") == (text, ())


def test_long_literal_list_in_an_error_is_cut_short(graph: eg.Graph) -> None:
    """An out-of-range literal thousands of characters long is quoted in at most a line."""
    literal = "images 1" + ", 9" * 5000
    with pytest.raises(eg.GraphError, match=r"node 'x': prompt: 'images 1, 9") as caught:
        graph.edit(literal, refs=["a"], name="x")
    assert len(str(caught.value)) < 300


# Inputs that once made rewriting quadratic (the 30,000-character quote prompt took 15-21
# s); benchmarks/rewriting.py times them, these tests pin what they rewrite to.
LONG_HOSTILE_PROMPTS = {
    "apostrophe quotes": " 'a" * 10_000,
    "unclosed curly quotes": "\u201ca " * 10_000,
    "unclosed single curly quotes": "\u2018a" * 15_000,
    "spaces after image": "image" + " " * 30_000 + "x",
    "hash tokens glued to underscores": "#" + "a" * 30_000 + "_",
    "quoted bad hex tokens between escapes": "@@ '#zz' " * 3_000,
}


@pytest.mark.parametrize("name", sorted(LONG_HOSTILE_PROMPTS))
def test_long_hostile_prompts_rewrite_to_what_they_say(name: str) -> None:
    """Each 30,000-character hostile prompt rewrites: a handle in front becomes image 1."""
    text = LONG_HOSTILE_PROMPTS[name]
    prompt, refs = rewrite(token("a") + text)
    assert prompt == "image 1" + text.replace("@@", "@")
    assert refs == ("a",)


def test_a_literal_list_with_a_long_run_of_spaces_is_still_one_list() -> None:
    """"images 2 ,<30,000 spaces>1" is one literal list, renumbered as a whole."""
    text = "images 2 ," + " " * 30_000 + "1"
    prompt, refs = rewrite(text, refs=["b", "a"])
    assert (prompt, refs) == (text, ("b", "a"))
    prompt, refs = rewrite(text, refs=["a", "a_twin", "b"])
    assert (prompt, refs) == ("images 1 ," + " " * 30_000 + "1", ("a", "b"))


def test_literal_without_any_reference_is_a_graph_error(graph: eg.Graph) -> None:
    """"image 1" in an edit with no inputs is refused."""
    with pytest.raises(eg.GraphError, match=r"node 'x'.*0 reference"):
        graph.edit("Draw image 1", name="x")


def test_bad_hex_colour_in_text_is_a_graph_error(graph: eg.Graph) -> None:
    """`#2E405` (five digits) is refused, naming node, field and the token."""
    with pytest.raises(eg.GraphError, match=r"node 'x': prompt: '#2E405' is not a valid hex"):
        graph.edit("Paint @a #2E405", name="x")


@pytest.mark.parametrize("colour", ["#2E4057", "#abc", "#FFF", "'#1'", '"#12"', "C#"])
def test_valid_hex_colours_and_quoted_numbers_pass(graph: eg.Graph, colour: str) -> None:
    """3- and 6-digit hex colours pass, and so do a quoted '#1' and a mid-word '#'."""
    prompt, _ = edit(graph, f"Paint @a {colour}")
    assert prompt == f"Paint image 1 {colour}"


@pytest.mark.parametrize("token", ["#1", "#12", "#sale", "#2E405"])
def test_every_unquoted_hash_token_must_be_a_colour(graph: eg.Graph, token: str) -> None:
    """Any unquoted #token that is not a 3- or 6-digit hex colour is refused."""
    with pytest.raises(eg.GraphError, match=rf"prompt: '{token}' is not a valid hex colour"):
        graph.edit(f"Paint @a {token}", name="x")
    with pytest.raises(eg.GraphError, match=r"prompt.color_palette\[0\]: .* not a valid hex"):
        graph.edit({"color_palette": [token]}, name="y")


def test_non_prompt_type_is_a_graph_error(graph: eg.Graph) -> None:
    """A prompt that is neither text nor a structured prompt is refused."""
    with pytest.raises(eg.GraphError, match=r"node 'x': prompt: expected a str"):
        graph.edit(42, name="x")  # type: ignore[call-overload]


# --------------------------------------------------------------------------- structured


def test_structured_prompt_model_and_dict_send_the_same_compact_json(graph: eg.Graph) -> None:
    """eg.StructuredPrompt and the equivalent dict become the same compact JSON text."""
    document = {
        "scene": "A caf\u00e9 terrace at dusk with @a",
        "subjects": [{"type": "car", "description": "@b, parked", "color_palette": ["#2E4057"]}],
        "camera": {"angle": "low", "lens": "35mm"},
        "effects": ["film grain"],
    }
    from_dict, refs = edit(graph, document)
    from_model, _ = edit(graph, eg.StructuredPrompt.model_validate(document))
    assert from_dict == from_model
    assert refs == ("a", "b")
    expected = json.loads(json.dumps(document).replace("@a", "image 1").replace("@b", "image 2"))
    assert json.loads(from_dict) == expected
    assert from_dict == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
    assert "caf\u00e9" in from_dict


def test_structured_prompt_references_follow_document_order(graph: eg.Graph) -> None:
    """Handles and @names in a structured prompt are numbered in the sent document's order."""
    prompt, refs = edit(graph, {
        "scene": f"{graph['c']} at night",
        "subjects": [{"description": "@a"}, {"description": f"{graph['b']} and @c"}],
        "background": "@d",
    })
    assert refs == ("c", "a", "b", "d")
    sent = json.loads(prompt)
    assert sent["scene"] == "image 1 at night"
    assert [s["description"] for s in sent["subjects"]] == ["image 2", "image 3 and image 1"]
    assert sent["background"] == "image 4"


def test_structured_image_hash_n_is_a_reference_not_a_colour(graph: eg.Graph) -> None:
    """`image #3` in a structured prompt is renumbered, not checked as a hex colour."""
    prompt, refs = edit(graph, {"scene": "image #3 in front of image #1"},
                        refs=["a", "a_twin", "b"])
    assert json.loads(prompt) == {"scene": "image #2 in front of image #1"}
    assert refs == ("a", "b")


def test_structured_image_hash_n_out_of_range_is_a_graph_error(graph: eg.Graph) -> None:
    """`image #12` in a structured prompt is a reference, so out of range is an error."""
    with pytest.raises(eg.GraphError, match=r"node 'x': prompt.scene: 'image #12'"):
        graph.edit({"scene": "image #12"}, refs=["a"], name="x")


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"color_palette": ["#2E4057", "#2E405"]}, r"prompt\.color_palette\[1\]"),
        ({"subjects": [{"description": "in #2E405"}]}, r"prompt\.subjects\[0\]\.description"),
        ({"scene": "walls #12345G"}, r"prompt\.scene"),
    ],
)
def test_structured_bad_hex_colour_names_the_field(
    graph: eg.Graph, document: dict[str, Any], path: str
) -> None:
    """A bad hex colour anywhere in a structured prompt is refused with its path."""
    with pytest.raises(eg.GraphError, match=rf"node 'x': {path}: '#"):
        graph.edit(document, name="x")


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"colour_palette": ["red"]}, r"prompt\.colour_palette"),
        ({"subjects": [{"colour": "red"}]}, r"prompt\.subjects\[0\]\.colour"),
        ({"camera": {"fnumber": 2.8}}, r"prompt\.camera\.fnumber"),
    ],
)
def test_structured_unknown_field_is_refused_with_its_path(
    graph: eg.Graph, document: dict[str, Any], path: str
) -> None:
    """A misspelt field is refused, not silently sent."""
    with pytest.raises(eg.GraphError, match=rf"node 'x': {path}: unknown field"):
        graph.edit(document, name="x")


@pytest.mark.parametrize(
    ("document", "path", "value"),
    [
        ({"effects": "glow"}, r"prompt\.effects", "'glow'"),
        ({"scene": 3}, r"prompt\.scene", "3"),
        ({"subjects": [{"pose": ["x"]}]}, r"prompt\.subjects\[0\]\.pose", r"\['x'\]"),
        ({"camera": {"ISO": True}}, r"prompt\.camera\.ISO", "bool"),
        ({"camera": {"ISO": 400.5}}, r"prompt\.camera\.ISO", "400.5"),
        ({"camera": {"f-number": [2]}}, r"prompt\.camera\.f-number", "list"),
        ({"camera": "wide"}, r"prompt\.camera", "'wide'"),
    ],
)
def test_structured_wrong_types_are_refused(
    graph: eg.Graph, document: dict[str, Any], path: str, value: str
) -> None:
    """A value of the wrong type is refused with its path and the offending value."""
    with pytest.raises(eg.GraphError, match=rf"node 'x': {path}: .*{value}"):
        graph.edit(document, name="x")


def test_structured_camera_aliases_are_sent_as_f_number_and_iso(graph: eg.Graph) -> None:
    """`f-number` and `ISO` are sent under their schema names, from dicts and models."""
    from_dict, _ = edit(graph, {"camera": {"f-number": 2.8, "ISO": 400}})
    model = eg.StructuredPrompt(camera=Camera(f_number="f/2.8", iso="400"))
    from_model, _ = edit(graph, model)
    assert from_dict == '{"camera":{"f-number":2.8,"ISO":400}}'
    assert from_model == '{"camera":{"f-number":"f/2.8","ISO":"400"}}'


def test_structured_quoted_text_is_left_as_typed(graph: eg.Graph) -> None:
    """Quotes inside structured strings protect their text too."""
    prompt, refs = edit(graph, {"scene": 'a neon sign reading "image 9 @studio #2E405" over @a'})
    expected = 'a neon sign reading "image 9 @studio #2E405" over image 1'
    assert json.loads(prompt) == {"scene": expected}
    assert refs == ("a",)


def test_structured_prompt_drops_unset_fields(graph: eg.Graph) -> None:
    """Fields left unset are not sent."""
    prompt, _ = edit(graph, eg.StructuredPrompt(scene="a quiet street"))
    assert prompt == '{"scene":"a quiet street"}'


# --------------------------------------------------------------------------- direct API


def test_rewrite_prompt_returns_text_and_references() -> None:
    """rewrite_prompt gives the sent text and the ordered, deduplicated references."""
    text, refs = rewrite(f"{token('b')} over {token('a_twin')} and @a", refs=None)
    assert text == "image 1 over image 2 and image 2"
    assert refs == ("b", "a")


def test_rewrite_prompt_without_mentions_has_no_references() -> None:
    """A text-to-image prompt has no references and stays as written."""
    assert rewrite("A red bicycle, #2E4057 background") == (
        "A red bicycle, #2E4057 background", ()
    )


# --------------------------------------------------------------------------- properties

LITERAL_FORMS = ("image {}", "Image #{}", "IMAGE {}", "image #{}")
NUMBER = re.compile(r"\d+")


@st.composite
def renumbering_cases(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, list[int]]]]:
    """Explicit refs (maybe with repeats and twins) and mentions: literals or handles."""
    refs = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=6))
    index = st.integers(min_value=1, max_value=len(refs))
    mention = st.one_of(
        st.tuples(st.sampled_from(LITERAL_FORMS), st.lists(index, min_size=1, max_size=1)),
        st.tuples(st.just("images {} and {}"), st.lists(index, min_size=2, max_size=2)),
        st.tuples(st.just("images {}, {} and {}"), st.lists(index, min_size=3, max_size=3)),
        st.tuples(st.just("handle"), st.lists(index, min_size=1, max_size=1)),
        st.tuples(st.just("image {}'s hat"), st.lists(index, min_size=1, max_size=1)),
        st.tuples(st.just("a 'quoted' word"), st.just([])),
    )
    return refs, draw(st.lists(mention, min_size=1, max_size=8))


@settings(max_examples=150, deadline=None)
@given(renumbering_cases())
def test_property_renumbering_keeps_what_each_mention_points_at(
    case: tuple[list[str], list[tuple[str, list[int]]]],
) -> None:
    """After rewriting, every "image k" names, via the final list, the node it named before."""
    refs, mentions = case
    segments = [
        token(refs[numbers[0] - 1]) if form == "handle" else form.format(*numbers)
        for form, numbers in mentions
    ]
    text, final = rewrite(" | ".join(segments), refs=refs)
    assert final == tuple(dict.fromkeys(canonical(name) for name in refs))
    out_segments = text.split(" | ")
    assert len(out_segments) == len(segments)
    for (form, numbers), out in zip(mentions, out_segments):
        if form != "handle":
            assert NUMBER.sub("{}", out) == form  # the wording is kept
        after = [int(number) for number in NUMBER.findall(out)]
        assert [final[k - 1] for k in after] == [canonical(refs[k - 1]) for k in numbers]


@settings(max_examples=100, deadline=None)
@given(st.permutations(["a", "b", "c", "d", "e"]), st.data())
def test_property_renumbering_is_a_bijection_on_indices(
    order: list[str], data: st.DataObject
) -> None:
    """With distinct refs (some twins), indices map one-to-one onto the final list."""
    size = data.draw(st.integers(min_value=1, max_value=5))
    refs = order[:size]
    twin_at = data.draw(st.integers(min_value=0, max_value=size))
    if "a" in refs:
        refs = [*refs[:twin_at], "a_twin", *refs[twin_at:]]  # same bytes as a: deduplicated
    prompt = ", ".join(f"image {k}" for k in range(1, len(refs) + 1))
    text, final = rewrite(prompt, refs=refs)
    mapped = [int(number) for number in NUMBER.findall(text)]
    # Every index lands in 1..len(final); indices of distinct nodes land apart; all are hit.
    assert set(mapped) == set(range(1, len(final) + 1))
    by_node = {canonical(refs[k]): mapped[k] for k in range(len(refs))}
    assert len(set(by_node.values())) == len(by_node) == len(final)
    assert all(final[index - 1] == node for node, index in by_node.items())


QUOTE_STYLES = (('"', '"'), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("'", "'"))
QUOTED_WORDS = ("image 7", "Image #9", "images 1 and 8", "@ghost", "@a", "#2E405", "sign", "café")
PLAIN_WORDS = ("image 1", "image 3", "@b", "the", "with", "#2E4057", "HANDLE")


@st.composite
def quoted_prompts(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A prompt of plain words and quoted segments; returns it and its quoted segments."""
    parts: list[str] = []
    quoted: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        plain = draw(st.lists(st.sampled_from(PLAIN_WORDS), min_size=1, max_size=4))
        parts.append(" ".join(token("c") if word == "HANDLE" else word for word in plain))
        if draw(st.booleans()):
            opening, closing = draw(st.sampled_from(QUOTE_STYLES))
            words = draw(st.lists(st.sampled_from(QUOTED_WORDS), min_size=1, max_size=4))
            segment = f"{opening}{' '.join(words)}{closing}"
            parts.append(segment)
            quoted.append(segment)
    return " ".join(parts), quoted


@settings(max_examples=150, deadline=None)
@given(quoted_prompts())
def test_property_quoted_spans_are_untouched(case: tuple[str, list[str]]) -> None:
    """Every quoted segment appears verbatim, in order, in the rewritten prompt."""
    prompt, quoted = case
    text, refs = rewrite(prompt, refs=["a", "b", "c"])
    assert refs == ("a", "b", "c")
    position = 0
    for segment in quoted:
        found = text.find(segment, position)
        assert found >= 0, (segment, text)
        position = found + len(segment)


@st.composite
def reusable_prompts(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A prompt without '@': literals, handles, quoted segments and words; and its refs."""
    refs = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=5))
    parts: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        kind = draw(st.sampled_from(("literal", "pair", "handle", "quoted", "word")))
        k = draw(st.integers(min_value=1, max_value=len(refs)))
        if kind == "literal":
            parts.append(draw(st.sampled_from(LITERAL_FORMS)).format(k))
        elif kind == "pair":
            parts.append(f"images {k} and {draw(st.integers(1, len(refs)))}")
        elif kind == "handle":
            parts.append(token(refs[k - 1]))
        elif kind == "quoted":
            opening, closing = draw(st.sampled_from(QUOTE_STYLES))
            inner = draw(st.sampled_from(("image 9", "#2E405", "sign", "HANDLE")))
            inner = token(refs[k - 1]) if inner == "HANDLE" else inner
            parts.append(f"{opening}{inner}{closing}")
        else:
            parts.append(draw(st.sampled_from(("red", "#2E4057", "it's", "image 1's"))))
    return " ".join(parts), refs


@settings(max_examples=150, deadline=None)
@given(reusable_prompts())
def test_property_rewriting_twice_changes_nothing(case: tuple[str, list[str]]) -> None:
    """Rewriting the output again with refs = its references gives the same text."""
    prompt, refs = case
    text, final = rewrite(prompt, refs=refs)
    again, final_again = rewrite(text, refs=list(final))
    assert again == text
    assert final_again == final


def _walk(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


@settings(max_examples=75, deadline=None)
@given(st.lists(st.sampled_from(("a", "b", "c", "d")), min_size=1, max_size=6))
def test_property_structured_numbers_rise_in_document_order(names: list[str]) -> None:
    """First mentions in a structured prompt are numbered 1, 2, 3… in sent order."""
    document = {
        "scene": f"@{names[0]} first",
        "subjects": [{"description": f"@{name} next"} for name in names[1:]],
    }
    text, refs = rewrite(document)
    first_seen: list[int] = []
    for string in _walk(json.loads(text)):
        for number in re.findall(r"image (\d+)", string):
            if int(number) not in first_seen:
                first_seen.append(int(number))
    assert first_seen == list(range(1, len(refs) + 1))
    assert refs == tuple(dict.fromkeys(names))

"""Reference tokens, index-aware prompt rewriting, structured prompts and hex colours.

A prompt names its inputs three ways: handles in f-strings (which render as private
tokens), ``@name`` in plain strings, and literal ``image N`` wording. Rewriting turns all
three into the "image N" the model sees, N being the input's position in the final,
de-duplicated reference list. Quoted text is typography and is left as typed.
"""

from __future__ import annotations

import bisect
import json
import re
import reprlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .colours import HEX_COLOUR
from .errors import GraphError

__all__ = [
    "Camera",
    "RewrittenPrompt",
    "StructuredPrompt",
    "Subject",
    "reference_token",
    "rewrite_prompt",
]

_TOKEN_OPEN = "\ue000"
_TOKEN_CLOSE = "\ue001"

#: What a node name may look like after ``@`` in a plain string: any name the graph
#: accepts (file stems such as ``car.v2`` included); a trailing "." ends the sentence.
_AT_NAME = r"\w(?:[\w.-]*\w)?(?:\[\d+\])?"

#: A literal reference number: one or two digits (a model takes at most a handful of
#: references, so "an image 1024 px wide" is text, not a reference).
_LITERAL_NUMBER = r"\d{1,2}(?!\d)"

# No two whitespace runs may meet without a required character between them: with
# "\s*#?\s*", the engine would try every split of a long run of spaces after "image",
# quadratic in its length. "\s*(?:#\s*)?" matches the same text in linear time.
_MENTION = re.compile(
    rf"{_TOKEN_OPEN}(?P<token>[^{_TOKEN_OPEN}{_TOKEN_CLOSE}]*){_TOKEN_CLOSE}"
    r"|(?P<escape>@@)"
    rf"|(?<![\w@])@(?P<at>{_AT_NAME})"
    rf"|\b(?P<literal>images\s*(?:#\s*)?{_LITERAL_NUMBER}"
    rf"(?:(?:\s*,\s*(?:and\s+|or\s+|&\s*)?|\s+(?:and|or|&)\s+|\s*&\s*)"
    rf"(?:#\s*)?{_LITERAL_NUMBER})*"
    rf"|image\s*(?:#\s*)?{_LITERAL_NUMBER})",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+")
#: A ``#`` starting a word (not "C#"), outside an "image #N" reference.
_HASH_TOKEN = re.compile(r"#[0-9A-Za-z]+\b")
_WORD_CHAR = re.compile(r"\w")

_PAIRED_QUOTES = {'"': '"', "\u201c": "\u201d", "\u2018": "\u2019"}
_QUOTE_MARK = re.compile("['\"\u201c\u201d\u2018\u2019]")
_CLOSING_MARKS = ('"', "\u201d", "\u2019", "'")
#: Closing marks that close only when no letter or digit follows (else an apostrophe).
_LETTER_RULE_MARKS = ("\u2019", "'")


def _excerpt(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def reference_token(graph_id: str, name: str) -> str:
    """The text a handle renders as inside an f-string."""
    return f"{_TOKEN_OPEN}{graph_id}:{name}{_TOKEN_CLOSE}"


def _is_letter(char: str) -> bool:
    # A handle's token stands for a word, so "{man}'s" is a possessive, not a quote; so
    # do digits, or the possessive in "image 1's hat" would open a quote and hide every
    # later "image N" from renumbering.
    return char.isalnum() or char == _TOKEN_CLOSE


def _quoted_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every quoted span, quote marks included, in order.

    Quotes are "…", “…”, ‘…’, and '…' where the opening ' does not follow a letter or
    digit and the closing one is not followed by one. An unclosed quote is an apostrophe.
    One pass collects where each kind of quote may close; each opening mark then finds
    its closing one by bisection, so the whole scan is O(n log n), never quadratic (a
    prompt of many unclosed quotes once took seconds).
    """
    marks = [(match.start(), match.group()) for match in _QUOTE_MARK.finditer(text)]
    if not marks:
        return []
    n = len(text)
    closers: dict[str, list[int]] = {mark: [] for mark in _CLOSING_MARKS}
    for position, char in marks:
        if char in closers:
            after = text[position + 1] if position + 1 < n else ""
            if not (char in _LETTER_RULE_MARKS and after and _is_letter(after)):
                closers[char].append(position)
    spans: list[tuple[int, int]] = []
    covered = -1  # marks before this offset are inside the last span
    for position, char in marks:
        if position < covered:
            continue
        mark = _PAIRED_QUOTES.get(char)
        if mark is None and char == "'" and (position == 0 or not _is_letter(text[position - 1])):
            mark = "'"
        if mark is None:
            continue
        candidates = closers[mark]
        index = bisect.bisect_left(candidates, position + 1)
        if index < len(candidates):
            spans.append((position, candidates[index] + 1))
            covered = candidates[index] + 1
    return spans


class _Inside:
    """Answers "is this offset inside a quoted span?" in O(log n)."""

    def __init__(self, text: str) -> None:
        self._spans = _quoted_spans(text)
        self._starts = [start for start, _ in self._spans]

    def __call__(self, offset: int) -> bool:
        index = bisect.bisect_right(self._starts, offset) - 1
        return index >= 0 and offset < self._spans[index][1]


# --------------------------------------------------------------------------- structured


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Subject(_Strict):
    """One subject of a structured prompt."""

    type: str | None = None
    description: str | None = None
    pose: str | None = None
    action: str | None = None
    position: str | None = None
    color_palette: list[str] | None = None


def _number_or_text(value: object) -> object:
    # Without this, pydantic's lax unions would send ISO=True as 1.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected a number or a str, got {type(value).__name__}")


def _whole_number_or_text(value: object) -> object:
    value = _number_or_text(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected a whole number or a str, got {value!r}")
    return value


class Camera(_Strict):
    """Camera settings of a structured prompt."""

    angle: str | None = None
    distance: str | None = None
    focus: str | None = None
    lens: str | None = None
    depth_of_field: str | None = None
    f_number: Annotated[
        Union[str, float, None], BeforeValidator(_number_or_text)  # noqa: UP007
    ] = Field(default=None, alias="f-number")
    iso: Annotated[
        Union[str, int, None], BeforeValidator(_whole_number_or_text)  # noqa: UP007
    ] = Field(default=None, alias="ISO")


class StructuredPrompt(_Strict):
    """The FLUX.2 JSON prompt: BFL's base schema plus the fields Together's quickstart adds.

    Every field is optional; unknown fields are refused, so a typo such as
    ``colour_palette`` is an error rather than silently sent. References (handles,
    ``@name``) may appear in any string. It is sent as compact JSON text.
    """

    scene: str | None = None
    subjects: list[Subject] | None = None
    style: str | None = None
    color_palette: list[str] | None = None
    lighting: str | None = None
    mood: str | None = None
    background: str | None = None
    composition: str | None = None
    camera: Camera | None = None
    effects: list[str] | None = None


def _field_path(location: Sequence[int | str]) -> str:
    path = "prompt"
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _structured_strings(prompt: object, node: str) -> dict[str, Any]:
    """Validate a structured prompt and return it as a plain dict in document order."""
    try:
        model = (
            prompt
            if isinstance(prompt, StructuredPrompt)
            else StructuredPrompt.model_validate(prompt)
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling against eg.StructuredPrompt)"
        elif error["type"] == "value_error":
            message = str(error["ctx"]["error"])  # our own validators name the value
        else:
            message = f"{error['msg']}, got {reprlib.repr(error.get('input'))}"
        raise GraphError(f"node {node!r}: {_field_path(error['loc'])}: {message}") from None
    dumped: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True)
    return dumped


def _walk_strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk_strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_strings(item, f"{path}[{index}]")


def _replace_strings(value: Any, replacements: Iterator[str]) -> Any:
    if isinstance(value, str):
        return next(replacements)
    if isinstance(value, Mapping):
        return {key: _replace_strings(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_strings(item, replacements) for item in value]
    return value


# --------------------------------------------------------------------------- rewriting


@dataclass(frozen=True)
class RewrittenPrompt:
    """A prompt after rewriting: the text to send and its references, in order."""

    text: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    kind: str  # "token", "escape", "at", "literal"
    value: str


def _mentions(text: str, inside: _Inside) -> list[_Mention]:
    found: list[_Mention] = []
    for match in _MENTION.finditer(text):
        kind = match.lastgroup or ""
        if kind in ("at", "literal") and inside(match.start()):
            continue  # quoted text is typography: "@studio" on a sign stays as typed
        found.append(_Mention(match.start(), match.end(), kind, match.group(kind)))
    return found


def rewrite_prompt(
    prompt: str | Mapping[str, Any] | StructuredPrompt,
    *,
    node: str,
    refs: Sequence[str] | None,
    graph_id: str,
    canonical: Callable[[str], str],
) -> RewrittenPrompt:
    """Rewrite ``prompt`` so every mention of an input says the right "image N".

    ``refs`` is the explicit reference list (node names) or None to infer it from the
    mentions in document order. ``canonical`` maps a node name to the first node with
    the same content (de-duplication) and raises GraphError for unknown names.
    Raises GraphError naming ``node`` and the field for every problem found.

    A plain prompt rewritten once is rewritten again from memory when only the graph
    differs (a batch declares one recipe's edits per item): the same text with this
    graph's handles, the same ``refs`` and node, and ``canonical`` answering as it did
    for every name it was asked about. Only successes are remembered.
    """
    if type(prompt) is not str or _OWN_TOKEN in prompt:  # structured, or unrememberable
        return _rewrite_prompt(prompt, node=node, refs=refs, graph_id=graph_id,
                               canonical=canonical)
    own = f"{_TOKEN_OPEN}{graph_id}:"
    key = (prompt.replace(own, _OWN_TOKEN), None if refs is None else tuple(refs), node)
    known = _rewritten.get(key)
    if known is not None:
        try:
            if all(canonical(name) == target for name, target in known[1]):
                return known[0]
        except GraphError:
            pass  # rewritten afresh below, which says why
    asked: dict[str, str] = {}

    def answered(name: str) -> str:
        target = asked[name] = canonical(name)
        return target

    rewritten = _rewrite_prompt(prompt, node=node, refs=refs, graph_id=graph_id,
                                canonical=answered)
    if len(_rewritten) >= _REWRITTEN_SIZE:
        _rewritten.clear()
    _rewritten[key] = (rewritten, tuple(asked.items()))
    return rewritten


#: This graph's handles in a remembered prompt (no graph id holds a NUL).
_OWN_TOKEN = f"{_TOKEN_OPEN}\x00:"
#: Plain prompts rewritten lately: (text with this graph's handles as ``_OWN_TOKEN``,
#: refs, node) -> (the result, each name ``canonical`` was asked about and its answer).
_rewritten: dict[tuple[str, tuple[str, ...] | None, str],
                 tuple[RewrittenPrompt, tuple[tuple[str, str], ...]]] = {}
_REWRITTEN_SIZE = 256


def _rewrite_prompt(
    prompt: str | Mapping[str, Any] | StructuredPrompt,
    *,
    node: str,
    refs: Sequence[str] | None,
    graph_id: str,
    canonical: Callable[[str], str],
) -> RewrittenPrompt:
    """``rewrite_prompt`` itself."""
    if isinstance(prompt, str):
        document: Any = None
        strings = [("prompt", prompt)]
    elif isinstance(prompt, (Mapping, StructuredPrompt)):
        document = _structured_strings(prompt, node)
        strings = list(_walk_strings(document, "prompt"))
    else:
        raise GraphError(
            f"node {node!r}: prompt: expected a str, dict or eg.StructuredPrompt, "
            f"got {type(prompt).__name__}"
        )

    parsed = []
    for path, text in strings:
        inside = _Inside(text)
        parsed.append((path, text, inside, _mentions(text, inside)))

    def mentioned(mention: _Mention, path: str) -> str:
        if mention.kind == "token":
            owner, _, name = mention.value.partition(":")
            if owner != graph_id:
                raise GraphError(
                    f"node {node!r}: {path}: the handle {name!r} belongs to another graph"
                )
            return name
        return mention.value

    explicit = None if refs is None else [canonical(name) for name in refs]
    final: list[str] = []
    for path, _, _, mentions in parsed:
        for mention in mentions:
            if mention.kind not in ("token", "at"):
                continue
            name = mentioned(mention, path)
            if name == node:
                raise GraphError(f"node {node!r}: {path}: an edit cannot take itself as input")
            target = canonical(name)
            if explicit is not None and target not in explicit:
                raise GraphError(
                    f"node {node!r}: refs: {name!r} is mentioned in the prompt but not in "
                    f"refs={list(refs or [])}; add it to refs or drop refs to infer them"
                )
            if target not in final:
                final.append(target)
    if explicit is not None:
        final = list(dict.fromkeys(explicit))
    numbering = explicit if explicit is not None else final

    def renumber(literal: str, path: str) -> str:
        def one(match: re.Match[str]) -> str:
            number = int(match.group())
            if not 1 <= number <= len(numbering):
                have = f"1..{len(numbering)}" if numbering else "none"
                raise GraphError(
                    f"node {node!r}: {path}: {_excerpt(literal)} refers to image {number}, but the "
                    f"edit has {len(numbering)} reference(s) (valid: {have}); quote the text "
                    "if it is meant literally"
                )
            return str(final.index(numbering[number - 1]) + 1)

        return _NUMBER.sub(one, literal)

    rewritten: list[str] = []
    for path, text, inside, mentions in parsed:
        out: list[str] = []
        position = 0
        _check_hex(text, inside, mentions, path, node)
        for mention in mentions:
            out.append(text[position : mention.start])
            if mention.kind == "escape":
                out.append("@")
            elif mention.kind == "literal":
                out.append(renumber(mention.value, path))
            else:
                out.append(f"image {final.index(canonical(mentioned(mention, path))) + 1}")
            position = mention.end
        out.append(text[position:])
        rewritten.append("".join(out))

    if document is None:
        text = rewritten[0]
    else:
        text = json.dumps(
            _replace_strings(document, iter(rewritten)),
            ensure_ascii=False,
            separators=(",", ":"),
        )
    return RewrittenPrompt(text=text, references=tuple(final))


def _check_hex(
    text: str, inside: _Inside, mentions: Sequence[_Mention], path: str, node: str
) -> None:
    """Refuse a ``#…`` token outside quotes and mentions that is not a 3- or 6-digit hex colour.

    Every such token is read as a colour; text such as a "#1" ranking belongs in quotes.
    A token starts a word: after a non-word character, the start of the text or a mention
    ("C#" is not one). One scan of the whole text, whatever the number of mentions.
    """
    if "#" not in text:
        return
    starts = [mention.start for mention in mentions]
    ends = {mention.end for mention in mentions}
    for match in _HASH_TOKEN.finditer(text):
        start = match.start()
        index = bisect.bisect_right(starts, start) - 1
        if index >= 0 and start < mentions[index].end:
            continue  # part of a mention, such as "image #2"
        if start > 0 and start not in ends and _WORD_CHAR.match(text, start - 1):
            continue
        token = match.group()
        if HEX_COLOUR.fullmatch(token) or inside(start):
            continue
        raise GraphError(
            f"node {node!r}: {path}: {_excerpt(token)} is not a valid hex colour; use 3 or 6 "
            "hex digits such as #2E4057 (quote the text if it is meant literally)"
        )

"""Canonical JSON and content hashing: the cache key of an edit and its pinned seed.

A key is sha256 over canonical JSON of everything that decides the output: the provider's
name, the model id, the rewritten prompt, every parameter that reaches the API, the seed
and the content hashes of the references in order. Never URLs (they expire; the same
bytes at a new URL are the same input), never the node's name.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

from .nodes import EditNode
from .requests import SCHEMA_VERSION, EditRequest, Reference

__all__ = [
    "SCHEMA_VERSION",
    "build_request",
    "canonical_json",
    "content_hash",
    "derive_seed",
    "edit_key",
    "request_key",
]


#: Seeds derived from keys stay in the range every FLUX.2 endpoint accepts.
_SEED_RANGE = 2**31


def _check_canonical(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path}: {value!r} has no canonical JSON form")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_canonical(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is not a str")
            _check_canonical(item, f"{path}.{key}")
        return
    raise TypeError(f"{path}: {type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no spaces; TypeError for anything not plain JSON.

    Anything that cannot be hashed canonically is an error, never a weaker key.
    """
    _check_canonical(value, "value")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def content_hash(data: bytes) -> str:
    """sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def edit_key(
    *,
    provider: str,
    model: str,
    prompt: str,
    parameters: dict[str, Any],
    seed: int | None,
    reference_hashes: Sequence[str],
) -> str:
    """The content-hash key of one edit (seed None: the key a seed is derived from)."""
    material = _material(provider, model, prompt, parameters, seed, reference_hashes)
    return content_hash(canonical_json(material))


def _material(
    provider: str, model: str, prompt: str, parameters: dict[str, Any], seed: int | None,
    reference_hashes: Sequence[str],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "provider": provider,
        "model": model,
        "prompt": prompt,
        "parameters": parameters,
        "seed": seed,
        "references": list(reference_hashes),
    }


def _digest(material: dict[str, Any]) -> str:
    """sha256 of ``material``'s canonical JSON, already checked to have one."""
    return content_hash(_text(material).encode())


def _text(material: dict[str, Any]) -> str:
    """``material``'s canonical JSON text, already checked to have one."""
    return json.dumps(
        material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


#: A str as canonical JSON writes it (``ensure_ascii=False``): quoted and escaped.
_quote = json.encoder.encode_basestring
#: One encoder of canonical JSON for values already checked (``_check_canonical``), made
#: once: ``json.dumps`` with these options builds one per call (a third of a key's time).
_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


#: How the canonical JSON of a key's material ends when its seed is None: "seed" sorts
#: last of its members.
_UNSEEDED_END = '"seed":null}'


def derive_seed(unseeded_key: str) -> int:
    """A reproducible seed for an edit that was given none, taken from its key."""
    return int(unseeded_key[:16], 16) % _SEED_RANGE


def request_key(node: EditNode, reference_hashes: Sequence[str], provider: str) -> tuple[str, int]:
    """The cache key and seed of ``node`` given its references' content hashes.

    An edit without a seed gets one derived from the key it would have without one.
    The material is checked for a canonical form once, and written as JSON once: the
    seeded text differs from the unseeded one by its last member, the seed, an int.
    """
    parameters = {k: v for k, v in node.parameters.items() if k != "seed"}
    seed = node.parameters.get("seed")
    model, prompt = node.model.id, node.prompt
    # The check of ``_check_canonical(material, "value")``, member by member: only the
    # parameters can nest; the rest are strings (or the schema, an int) when plain.
    plain = True
    for name, value in (("provider", provider), ("model", model), ("prompt", prompt)):
        if type(value) is not str:  # a str subclass passes, and takes the long way
            plain = False
            _check_canonical(value, f"value.{name}")
    _check_canonical(parameters, "value.parameters")
    for index, reference in enumerate(reference_hashes):
        if type(reference) is not str:
            plain = False
            _check_canonical(reference, f"value.references[{index}]")
    if plain and (seed is None or type(seed) is int):
        # The material's canonical JSON written member by member, in its sorted order
        # (model, parameters, prompt, provider, references, schema, seed): only the
        # parameters go through the encoder; the rest are str, escaped as it would.
        quote = _quote
        unseeded = (
            f'{{"model":{quote(model)},"parameters":{_encode(parameters)},'
            f'"prompt":{quote(prompt)},"provider":{quote(provider)},'
            f'"references":[{",".join(map(quote, reference_hashes))}],'
            f'"schema":{SCHEMA_VERSION},"seed":'
        )
        if seed is None:
            seed = derive_seed(content_hash(f"{unseeded}null}}".encode()))
        return content_hash(f"{unseeded}{seed}}}".encode()), seed
    material = _material(provider, model, prompt, parameters, None, reference_hashes)
    if seed is None:
        unseeded_text = _text(material)
        seed = derive_seed(content_hash(unseeded_text.encode()))
        if unseeded_text.endswith(_UNSEEDED_END):
            seeded = f"{unseeded_text[:-5]}{seed}}}"  # "null}" -> "<seed>}"
            return content_hash(seeded.encode()), seed
    elif type(seed) is not int:
        _check_canonical(seed, "value.seed")
    material["seed"] = seed
    return _digest(material), seed


def build_request(
    node: EditNode, references: Sequence[Reference], provider: str
) -> tuple[EditRequest, str]:
    """The request and cache key of ``node`` given its references' content.

    An edit without a seed gets one derived from the key it would have without one.
    """
    key, seed = request_key(node, [reference.hash for reference in references], provider)
    return node.request(references, seed), key

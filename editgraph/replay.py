"""Replay: re-run a saved run (its manifest) or the one edit a saved image came from.

The recorded requests are rebuilt exactly (rewritten prompt, model, parameters, seed,
the inputs' content hashes), so each has the key it had: it is served from the cache,
or generated again by the provider. ``verify`` then checks each output against the
recorded hash.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from .errors import GraphError, RunError
from .execute import execute, run_sync
from .graph import check_recorded_edit
from .models import resolve_model
from .nodes import EditNode, OpNode, SourceNode
from .ops import Operation
from .plan import make_plan
from .provenance import read_provenance
from .providers import registry as providers
from .providers.base import Provider
from .records import EditRecord
from .requests import Reference
from .runs import Manifest, Run
from .saved import find_image_bytes, read_manifest, saved_inputs, source_names
from .store import Store
from .stores.base import CacheLocation, open_store

__all__ = ["ReplayResult", "replay"]

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"GIF8", b"RIFF")


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: every edit, which were generated and which cached, and with
    ``verify``, each edit whose output differs from the record (name -> why)."""

    edits: list[str]
    generated: list[str]
    cached: list[str]
    mismatches: dict[str, str] = field(default_factory=dict)
    run: Run | None = field(default=None, repr=False, compare=False)


def replay(
    target: str | os.PathLike[str],
    *,
    provider: Provider | None = None,
    cache_dir: CacheLocation = None,
    verify: bool = False,
) -> ReplayResult:
    """Re-run what ``target`` records: a ``manifest.json``, the folder of a saved run, or
    an image ``run.save`` wrote (then only the edit that made it).

    ``provider`` defaults to the recorded one (``preview`` or ``together``). Raises
    GraphError when the target is not such a record or an input cannot be found,
    ProvenanceError when an image's record is malformed, RunError when an edit fails.
    """
    path = Path(target)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GraphError(
            f"replay: cannot read {path} ({exc.strerror or exc}); pass a manifest.json or "
            "an image `run.save` wrote"
        ) from exc
    folder = path.parent
    store = open_store(cache_dir)
    try:
        if data.startswith(_IMAGE_MAGIC):
            record = read_provenance(data)
            if record is None:
                raise GraphError(
                    f"replay: {path} is an image without an editgraph record; pass an image "
                    "`run.save` wrote, or its run's manifest.json"
                )
            recorded, edits, inputs = _from_image(record)
            provider_name = record.provider
        else:
            manifest = read_manifest(path)
            recorded, edits, inputs = _from_manifest(manifest)
            provider_name = manifest.provider
        chosen = provider or _recorded_provider(provider_name)
        sources = _sources(inputs, edits, chosen.name, folder, store)
        # A graph of its own for plan's history: the default graph ("__main__") is a
        # script's or notebook's, whose same-named nodes a replay must not pose as.
        run = run_sync(execute(edits, sources, provider=chosen, store=store,
                               graph=f"replay {path.resolve()}"))
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()
    if run.failures:
        raise RunError(run.failures, run=run)
    mismatches = _compare(recorded, run) if verify else {}
    return ReplayResult(
        edits=[edit.node for edit in recorded],
        generated=[name for name, result in run.items() if not result.cached],
        cached=[name for name, result in run.items() if result.cached],
        mismatches=mismatches,
        run=run,
    )


@dataclass(frozen=True)
class _Input:
    """A source of the replay: what was recorded of it, and the first edit using it."""

    reference: Reference
    index: int
    node: str


def _from_manifest(
    manifest: Manifest,
) -> tuple[list[EditRecord], list[EditNode | OpNode], dict[str, _Input]]:
    inputs = saved_inputs(manifest)
    names = source_names(manifest)
    sources: dict[str, _Input] = {}
    dag = nx.DiGraph()
    nodes: dict[str, EditNode | OpNode] = {}
    recorded = []
    for entry in manifest.finished_edits:
        edit = entry.record
        references = []
        for saved in inputs[edit.node]:
            if saved.upstream is not None:
                references.append(saved.upstream)
                dag.add_edge(saved.upstream, edit.node)
                continue
            name = names[saved.reference.hash]
            sources.setdefault(name, _Input(saved.reference, saved.index, edit.node))
            references.append(name)
        recorded.append(edit)
        nodes[edit.node] = _edit_node(edit, references)
        dag.add_node(edit.node)
    order = [name for name in nx.topological_sort(dag) if name in nodes]
    return recorded, [nodes[name] for name in order], sources


def _from_image(
    record: EditRecord,
) -> tuple[list[EditRecord], list[EditNode | OpNode], dict[str, _Input]]:
    # Only this edit runs: each input, an earlier edit's output included, is a source.
    sources: dict[str, _Input] = {}
    references = []
    for index, reference in enumerate(record.references, 1):
        name = f"{record.node}~image{index}"  # '~' is in no node name: no clash
        sources[name] = _Input(reference, index, record.node)
        references.append(name)
    return [record], [_edit_node(record, references)], sources


def _sources(
    inputs: dict[str, _Input], edits: Sequence[EditNode | OpNode], provider: str, folder: Path,
    store: Store,
) -> dict[str, SourceNode]:
    """The replay's sources with their bytes; only the inputs of edits that are not in
    the cache must be found (a cached run replays without its source files)."""
    placeholders = {name: _source_node(name, found.reference, b"") for name, found in inputs.items()}
    plan = make_plan(edits, placeholders, provider=provider, store=store)
    to_run = set(plan.to_run)
    needed = {name for edit in edits if edit.name in to_run for name in edit.references}
    sources = {}
    for name, found in inputs.items():
        reference = found.reference
        data = find_image_bytes(reference.hash, reference.source, folder=folder, store=store,
                                fetch_urls=name in needed)
        if data is None and name in needed:
            raise GraphError(
                f"edit {found.node!r}: image {found.index} ({reference.source}, sha256 "
                f"{reference.hash[:12]}…) is not in the cache and no file with those bytes "
                "was found where it was recorded; put the original back or run the recipe again"
            )
        # A source only cached edits use is never sent: its bytes may stay unknown.
        sources[name] = _source_node(name, reference, data or b"")
    return sources


def _source_node(name: str, reference: Reference, data: bytes) -> SourceNode:
    url = reference.source if reference.source.startswith(("http://", "https://")) else None
    return SourceNode(name=name, hash=reference.hash, media_type=reference.media_type,
                      source=reference.source, data=data, url=url)


def _edit_node(edit: EditRecord, references: Sequence[str]) -> EditNode | OpNode:
    if edit.kind == "op":
        operation = _operation(edit)
        return OpNode(name=edit.node, operation=operation, references=tuple(references),
                      parameters=operation.check_parameters(edit.parameters, node=edit.node))
    # A record may come from elsewhere: nothing is sent that g.edit would refuse.
    check_recorded_edit(edit.node, edit.model, {**edit.parameters, "seed": edit.seed})
    return EditNode(
        name=edit.node,
        model=resolve_model(edit.model, node=edit.node),
        prompt=edit.prompt,
        references=tuple(references),
        parameters={**edit.parameters, "seed": edit.seed},
    )


def _operation(edit: EditRecord) -> Operation:
    """The operation an op was recorded with, found by its qualified name.

    Only among modules already loaded (editgraph's built-ins, a recipe this process
    loaded): a record may come from elsewhere, and importing a module it names would run
    that module's code.
    """
    module_name, _, attribute = edit.model.rpartition(".")
    found: object = sys.modules.get(module_name)
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not isinstance(found, Operation):
        raise GraphError(
            f"op {edit.node!r}: operation {edit.model!r} is not loaded here (only editgraph's "
            "built-ins and the recipes this process loaded are); run the recipe again"
        )
    if found.version != edit.version:
        raise GraphError(
            f"op {edit.node!r}: {edit.model} is version {found.version} here, but the run "
            f"used version {edit.version}; its output may differ, so it is not replayed"
        )
    return found


def _recorded_provider(name: str) -> Provider:
    if name not in providers.names():
        raise GraphError(
            f"replay: the run was made with provider {name!r}, which replay cannot create; "
            "pass provider= (or --provider)"
        )
    return providers.by_name(name)


def _compare(recorded: Sequence[EditRecord], run: Run) -> dict[str, str]:
    mismatches = {}
    for edit in recorded:
        result = run[edit.node]
        if result.key != edit.key:
            mismatches[edit.node] = (
                f"the rebuilt request has key {result.key[:12]}…, the record "
                f"{edit.key[:12]}… (another provider or model?)"
            )
        elif result.output_hash != edit.output_hash:
            mismatches[edit.node] = (
                f"output sha256 {result.output_hash[:12]}… differs from the recorded "
                f"{edit.output_hash[:12]}…"
            )
    return mismatches

"""Planning without spending: which edits are cached, which will run, why, and the cost.

Op nodes (local operations) are planned like edits: cached or to run, and why; they
cost nothing.
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .keys import build_request
from .nodes import EditNode, OpNode, SourceNode
from .records import EditRecord
from .requests import Reference
from .store import DEFAULT_GRAPH, Store

__all__ = ["Plan", "PlanStep", "make_plan"]


class PlanStep(BaseModel):
    """One edit in a plan."""

    model_config = ConfigDict(frozen=True)

    name: str
    cached: bool
    kind: Literal["edit", "op"] = "edit"
    prompt: str
    references: list[str]
    estimated_cost: float
    reason: str | None = None
    made_at: float | None = None
    key: str | None = None


class Plan(BaseModel):
    """What a run would do, computed from the cache alone: nothing is spent."""

    model_config = ConfigDict(frozen=True)

    provider: str
    steps: list[PlanStep]

    @property
    def cached(self) -> list[str]:
        """Names of the edits the cache already holds."""
        return [step.name for step in self.steps if step.cached]

    @property
    def to_run(self) -> list[str]:
        """Names of the edits a run would generate."""
        return [step.name for step in self.steps if not step.cached]

    @property
    def reasons(self) -> dict[str, str]:
        """Why each edit in ``to_run`` will run: new, or what changed since it last ran."""
        return {step.name: step.reason or "" for step in self.steps if not step.cached}

    @property
    def estimated_cost(self) -> float:
        """Estimated USD of the edits that will run."""
        return round(sum(step.estimated_cost for step in self.steps if not step.cached), 6)

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        lines = []
        for step in self.steps:
            state = "cached $0" if step.cached else f"run ${step.estimated_cost:.4f}"
            if step.kind == "op":
                state = "op, cached" if step.cached else "op, run $0"
            lines.append(f"{step.name:<20} {state:<14} {step.prompt}")
            if step.references:
                lines.append(f"{'':<20} refs: {', '.join(step.references)}")
            if step.reason:
                lines.append(f"{'':<20} why: {step.reason}")
        lines.append(
            f"{len(self.to_run)} to run, {len(self.cached)} cached, "
            f"estimated ${self.estimated_cost:.4f}"
        )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(step.name),
                ("op, " if step.kind == "op" else "") + ("cached" if step.cached else "to run"),
                html.escape(step.prompt),
                html.escape(", ".join(step.references)),
                html.escape(step.reason or ""),
            )
            for step in self.steps
        )
        return (
            "<table><tr><th>edit</th><th>state</th><th>prompt</th><th>references</th>"
            f"<th>why</th></tr>{rows}</table><p>{len(self.to_run)} to run, "
            f"{len(self.cached)} cached, estimated ${self.estimated_cost:.4f}</p>"
        )


def make_plan(
    edits: Sequence[EditNode | OpNode],
    sources: Mapping[str, SourceNode],
    *,
    provider: str,
    store: Store,
    graph: str = DEFAULT_GRAPH,
) -> Plan:
    """Plan ``edits`` (in topological order) of the graph named ``graph`` against
    ``store``; calls no provider."""
    outputs: dict[str, Reference] = {
        name: Reference(hash=node.hash, media_type=node.media_type, source=node.source)
        for name, node in sources.items()
    }
    steps = []
    first_with_key: dict[str, str] = {}  # identical requests in one run generate once
    for node in edits:
        if isinstance(node, OpNode):
            steps.append(_plan_op(node, outputs, store))
            continue
        labels = [f"image {i} = {name}" for i, name in enumerate(node.references, 1)]
        waiting = [name for name in node.references if name not in outputs]
        history = store.get_history(node.name, graph)
        if waiting:
            reason = _why(node, None, None, history, provider, waiting)
            steps.append(PlanStep(name=node.name, cached=False, prompt=node.prompt,
                                  references=labels, estimated_cost=node.estimate_cost(provider),
                                  reason=reason))
            continue
        references = [
            outputs[name] if name in sources
            else outputs[name].model_copy(update={"source": name})
            for name in node.references
        ]
        request, key = build_request(node, references, provider)
        record = store.get_record(key)
        if record is not None:
            outputs[node.name] = Reference(
                hash=record.output_hash, media_type=record.media_type, source=node.name
            )
            steps.append(PlanStep(name=node.name, cached=True, prompt=node.prompt,
                                  references=labels, estimated_cost=node.estimate_cost(provider),
                                  made_at=record.created_at, key=key))
        elif key in first_with_key:
            steps.append(PlanStep(
                name=node.name, cached=False, prompt=node.prompt, references=labels,
                estimated_cost=0.0, key=key,
                reason=f"same request as {first_with_key[key]!r}, which makes it for both",
            ))
        else:
            first_with_key[key] = node.name
            reason = _why(node, references, key, history, provider, [], seed=request.seed)
            steps.append(PlanStep(name=node.name, cached=False, prompt=node.prompt,
                                  references=labels, estimated_cost=node.estimate_cost(provider),
                                  reason=reason, key=key))
    return Plan(provider=provider, steps=steps)


def _plan_op(node: OpNode, outputs: dict[str, Reference], store: Store) -> PlanStep:
    """The plan of one op: cached when its key is in the store (once its inputs are)."""
    labels = [f"input {i} = {name}" for i, name in enumerate(node.references, 1)]
    history = store.get_history(node.name)
    waiting = [name for name in node.references if name not in outputs]
    step = PlanStep(name=node.name, cached=False, kind="op", prompt=node.description,
                    references=labels, estimated_cost=0.0)
    if waiting:
        return step.model_copy(update={"reason": _why_op(node, history, None, waiting)})
    hashes = [outputs[name].hash for name in node.references]
    key = node.key(hashes)
    record = store.get_record(key)
    if record is not None:
        outputs[node.name] = Reference(hash=record.output_hash, media_type=record.media_type,
                                       source=node.name)
        return step.model_copy(update={"cached": True, "made_at": record.created_at,
                                       "key": key})
    reason = _why_op(node, history, hashes, [])
    if history is not None and history.key == key:
        reason = "not in the cache any more (cleared or pruned)"
    return step.model_copy(update={"reason": reason, "key": key})


def _why_op(
    node: OpNode, history: EditRecord | None, hashes: Sequence[str] | None,
    waiting: Sequence[str],
) -> str:
    """What changed since op ``node`` last ran, in a few words."""
    if history is None:
        return "new: it has never run"
    changes: list[str] = []
    now = f"{node.operation.name} version {node.operation.version}"
    before = f"{history.model} version {history.version}"
    if before != now:
        changes.append(f"operation {before} -> {now}")
    changes += _parameter_changes(history.parameters, node.parameters)
    if len(history.references) != len(node.references):
        changes.append(f"{len(history.references)} -> {len(node.references)} inputs")
    else:
        for index, name in enumerate(node.references):
            if name in waiting:
                changes.append(f"input {index + 1} ({name}) is made again first")
            elif hashes is not None and hashes[index] != history.references[index].hash:
                changes.append(f"input {index + 1} ({name}) changed")
    return "; ".join(changes) or "not in the cache"


def _why(
    node: EditNode,
    references: Sequence[Reference] | None,
    key: str | None,
    history: EditRecord | None,
    provider: str,
    waiting: Sequence[str],
    *,
    seed: int | None = None,
) -> str:
    """What changed since ``node`` last ran, in a few words.

    ``seed`` is the seed the edit would run with now (derived when the user gave none).
    """
    if history is None:
        return "new: it has never run"
    changes: list[str] = []
    if history.provider != provider:
        changes.append(f"provider {history.provider} -> {provider}")
    if history.model != node.model.id:
        changes.append(f"model {history.model} -> {node.model.id}")
    if history.prompt != node.prompt:
        changes.append(f"prompt {_prompt_change(history.prompt, node.prompt)}")
    changes += _parameter_changes({**history.parameters, "seed": history.seed}, node.parameters)
    if len(history.references) != len(node.references):
        changes.append(f"{len(history.references)} -> {len(node.references)} references")
    else:
        for index, name in enumerate(node.references):
            old_source, old_hash = history.references[index].source, history.references[index].hash
            if name in waiting:
                changes.append(f"image {index + 1} ({name}) is made again first")
            elif references is not None:
                reference = references[index]
                if reference.source != old_source:
                    changes.append(f"image {index + 1} is now {reference.source} (was {old_source})")
                elif reference.hash != old_hash:
                    changes.append(f"image {index + 1} ({name}) bytes changed")
    if not changes and seed is not None and history.seed != seed:
        # Only the seed moved: a pinned seed was dropped, so it is now derived from the key.
        changes.append(f"seed {history.seed!r} -> {seed} (derived)")
    if not changes:
        if key is not None and key == history.key:
            return "not in the cache any more (cleared or pruned)"
        return "not in the cache"
    return "; ".join(changes)


def _parameter_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes = []
    for name in sorted(set(old) | set(new)):
        if name == "seed" and new.get("seed") is None:
            continue  # a derived seed follows everything else; not a change of its own
        if old.get(name) != new.get(name):
            changes.append(f"{name} {old.get(name)!r} -> {new.get(name)!r}")
    return changes


def _prompt_change(old: str, new: str) -> str:
    """The first differing words of two prompts, e.g. '"night" -> "dusk"'."""
    before, after = old.split(), new.split()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after).get_opcodes():
        if tag != "equal":
            return f"{' '.join(before[i1:i2])!r} -> {' '.join(after[j1:j2])!r}"
    return "changed (white space)"

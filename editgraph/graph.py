"""Graph, node handles and validation: the DAG of edits, held in networkx.

Everything is checked as it is declared, so a bad graph raises GraphError naming the
node and the field before any provider is called.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, SupportsIndex, overload

import networkx as nx
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import GraphError
from .execute import execute, run_sync
from .keys import content_hash
from .models import MAX_PROMPT_CHARS, ModelSpec, resolve_model
from .names import folded, name_problem, shown_name
from .nodes import EditNode, SourceNode
from .plan import Plan, make_plan
from .prompts import StructuredPrompt, reference_token, rewrite_prompt
from .providers.base import Provider, check_edit
from .providers.registry import default_provider
from .runs import Run
from .sources import DEFAULT_MAX_SOURCE_PIXELS, prepare_source, read_source
from .store import Store
from .stores.base import CacheLocation, open_store

__all__ = ["Graph", "Handle", "Sweep", "chain"]

logger = logging.getLogger("editgraph")


_DEFAULTS: dict[str, Any] = {
    "width": 1024,
    "height": 768,
    "seed": None,
    "steps": None,
    "guidance": None,
    "prompt_upsampling": False,
    "output_format": "jpeg",
}
_REFUSED = {
    "negative_prompt": "FLUX.2 does not support negative prompts; say what you want instead",
    "image_loras": "FLUX.2 models on Together reject image_loras",
}
_graph_ids = itertools.count(1)


class _Parameters(BaseModel):
    """The API parameters of one edit, type-checked strictly."""

    model_config = ConfigDict(extra="forbid", strict=True)

    width: int
    height: int
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    steps: int | None = Field(default=None, ge=1, le=100)
    guidance: float | None = Field(default=None, gt=0, le=30)
    prompt_upsampling: bool = False
    output_format: Literal["jpeg", "png", "webp"] = "jpeg"


class Handle:
    """A node of a graph. In an f-string it stands for that node's image."""

    __slots__ = ("_graph", "name")

    def __init__(self, graph: Graph, name: str) -> None:
        self._graph = graph
        self.name = name

    def __format__(self, spec: str) -> str:
        if spec:
            raise ValueError(f"a handle takes no format spec, got {spec!r}")
        return reference_token(self._graph._id, self.name)

    def __str__(self) -> str:
        return reference_token(self._graph._id, self.name)

    def __repr__(self) -> str:
        return f"<Handle {self.name!r}>"

    @property
    def graph(self) -> Graph:
        """The graph this node belongs to."""
        return self._graph


class Sweep(Sequence[Handle]):
    """Variants of one edit (a list of seeds or prompts), named ``name[0]``, ``name[1]``…"""

    def __init__(self, handles: Sequence[Handle]) -> None:
        self._handles = tuple(handles)

    @overload
    def __getitem__(self, index: SupportsIndex) -> Handle: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Handle]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> Handle | Sequence[Handle]:
        return self._handles[index]

    def __len__(self) -> int:
        return len(self._handles)

    def __format__(self, spec: str) -> str:
        raise GraphError(
            f"a sweep ({self._name!r}) has {len(self)} variants; "
            "use sweep.pick(i) to continue from one"
        )

    @property
    def _name(self) -> str:
        return self._handles[0].name.rpartition("[")[0]

    def __repr__(self) -> str:
        return f"<Sweep {[handle.name for handle in self._handles]}>"

    def _repr_html_(self) -> str:
        from .display import sweep_html  # display draws graphs; imported on use

        return sweep_html(self, store=self._handles[0].graph._store)

    def pick(self, index: int) -> Handle:
        """The handle of variant ``index``, to continue from."""
        try:
            return self._handles[index]
        except IndexError:
            raise GraphError(
                f"sweep {self._name!r}: pick: it has variants 0..{len(self) - 1}; "
                f"cannot pick {index}"
            ) from None


class Graph:
    """A DAG of FLUX.2 edits.

    Keyword arguments are defaults for every edit: ``model``, ``width``, ``height``,
    ``seed``, ``steps``, ``guidance``, ``prompt_upsampling``, ``output_format``.
    ``provider`` and ``cache_dir`` (a folder, ``s3://bucket/prefix`` or an open store)
    are defaults for ``run()``. ``max_source_pixels`` (default 40,000,000) is the largest
    source ``image()`` accepts.
    """

    def __init__(
        self,
        *,
        model: str = "flux.2-pro",
        provider: Provider | None = None,
        cache_dir: CacheLocation = None,
        concurrency: int = 8,
        max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
        **defaults: Any,
    ) -> None:
        self._id = f"g{next(_graph_ids)}"
        self._dag = nx.DiGraph()
        self._sources: dict[str, SourceNode] = {}
        self._edits: dict[str, EditNode] = {}
        self._content_owner: dict[str, str] = {}
        self._folded: dict[str, str] = {}  # folded name -> node name, for _taken
        self.provider = provider
        self.cache_dir = cache_dir
        self.concurrency = _positive(concurrency, "concurrency")
        self.max_source_pixels = _positive(max_source_pixels, "max_source_pixels")
        self._store: Store | None = None
        self.model = model
        unknown = set(defaults) - set(_DEFAULTS)
        for field in unknown & set(_REFUSED):
            raise GraphError(f"graph defaults: {field}: {_REFUSED[field]}")
        if unknown:
            raise GraphError(
                f"graph defaults: unknown parameter(s) {sorted(unknown)}; "
                f"known: model, provider, cache_dir, concurrency, {', '.join(_DEFAULTS)}"
            )
        self.defaults = {**_DEFAULTS, **defaults}
        spec = resolve_model(model, node="<graph defaults>")
        _check_model_takes("graph defaults", spec, self.defaults)
        self._check_parameters("<graph defaults>", self.defaults)

    def __repr__(self) -> str:
        return f"<Graph {len(self._sources)} sources, {len(self._edits)} edits>"

    def _repr_html_(self) -> str:
        """The graph drawn as SVG; edits already cached are marked once a store is open."""
        from .display import graph_html  # display draws graphs; imported on use

        return graph_html(self, store=self._store)

    def __contains__(self, name: object) -> bool:
        return name in self._dag

    def __len__(self) -> int:
        return len(self._dag)

    def __getitem__(self, name: str) -> Handle:
        if name not in self._dag:
            raise KeyError(name)
        return Handle(self, name)

    @property
    def dag(self) -> nx.DiGraph:
        """The networkx DAG: nodes are names, edges carry ``index`` (the "image N")."""
        return self._dag

    @property
    def sources(self) -> Mapping[str, SourceNode]:
        """The source images, by name."""
        return self._sources

    @property
    def edits(self) -> Mapping[str, EditNode]:
        """The edits, by name, in the order they were declared (a topological order)."""
        return self._edits

    # ------------------------------------------------------------------ declaring

    def image(self, src: str | os.PathLike[str] | bytes | Image.Image, name: str | None = None) -> Handle:
        """Add a source image: a path, an http(s) URL, bytes or a PIL image.

        The source is read and fully decoded now; a missing file, a failing URL, bytes
        that are not an image, a truncated image, an empty source or one above
        ``max_source_pixels`` is a GraphError. A format other than JPEG, PNG or WebP is
        converted to PNG (the hash is of the PNG, which is what is sent).
        """
        data, described, url, stem = read_source(src, name)
        name = self._new_name(name, stem)
        sent, media_type = prepare_source(
            data, name, described, max_pixels=self.max_source_pixels
        )
        if sent is not data:
            data, url = sent, None  # converted: what is sent is the PNG, not the URL
        digest = content_hash(data)
        self._sources[name] = SourceNode(
            name=name, hash=digest, media_type=media_type, source=described, data=data, url=url
        )
        self._content_owner.setdefault(digest, name)
        self._dag.add_node(name, kind="source")
        return Handle(self, name)

    @overload
    def edit(
        self, prompt: str | Mapping[str, Any] | StructuredPrompt, *,
        refs: Sequence[Handle | str] | None = None, name: str | None = None,
        model: str | None = None, seed: int | None = None, **params: Any,
    ) -> Handle: ...
    @overload
    def edit(
        self, prompt: str | Mapping[str, Any] | StructuredPrompt, *,
        refs: Sequence[Handle | str] | None = None, name: str | None = None,
        model: str | None = None, seed: list[int] | tuple[int, ...], **params: Any,
    ) -> Sweep: ...
    @overload
    def edit(
        self, prompt: list[str], *, refs: Sequence[Handle | str] | None = None,
        name: str | None = None, model: str | None = None,
        seed: int | list[int] | tuple[int, ...] | None = None, **params: Any,
    ) -> Sweep: ...
    def edit(
        self,
        prompt: str | Mapping[str, Any] | StructuredPrompt | list[str],
        *,
        refs: Sequence[Handle | str] | None = None,
        name: str | None = None,
        model: str | None = None,
        seed: int | list[int] | tuple[int, ...] | None = None,
        **params: Any,
    ) -> Handle | Sweep:
        """Add an edit: one FLUX.2 call whose references are earlier nodes.

        ``refs`` is the explicit reference list; without it the references are the
        handles and ``@name``s in the prompt, in order. A list of seeds
        (``seed=[1, 2, 3]``) or of prompts makes an :class:`Sweep` of variants.
        """
        if isinstance(prompt, list) or isinstance(seed, (list, tuple)):
            return self._sweep(prompt, seed, refs=refs, name=name, model=model, params=params)
        if seed is not None:
            params["seed"] = seed
        name = self._new_name(name, "edit")
        spec = resolve_model(model or self.model, node=name)
        parameters = self._edit_parameters(name, spec, params)
        if isinstance(refs, (str, Handle)):
            raise GraphError(
                f"node {name!r}: refs: expected a list of handles or node names, got "
                f"{type(refs).__name__} {refs!r}; write refs=[...]"
            )
        ref_names = None if refs is None else [self._ref_name(ref, name) for ref in refs]
        rewritten = rewrite_prompt(
            prompt, node=name, refs=ref_names, graph_id=self._id,
            canonical=lambda other: self._canonical(other, name),
        )
        if not rewritten.text.strip() or rewritten.text == "{}":
            raise GraphError(f"node {name!r}: prompt: is empty; say what the edit should do")
        if len(rewritten.references) > spec.max_references:
            raise GraphError(
                f"node {name!r}: refs: {len(rewritten.references)} references, but "
                f"{spec.label} takes at most {spec.max_references}"
            )
        if len(rewritten.text) > MAX_PROMPT_CHARS:
            raise GraphError(
                f"node {name!r}: prompt: {len(rewritten.text):,} characters, over the "
                f"{MAX_PROMPT_CHARS:,} editgraph sends; shorten it"
            )
        if self.provider is not None:
            check_edit(self.provider, name, spec, parameters)
        node = EditNode(name=name, model=spec, prompt=rewritten.text,
                        references=rewritten.references, parameters=parameters,
                        input_sizes=self._input_sizes(rewritten.references))
        self._edits[name] = node
        self._dag.add_node(name, kind="edit")
        # Edges only run from nodes that already exist into the new one, so the graph
        # stays acyclic by construction (an edit naming itself is refused above).
        for index, ref in enumerate(rewritten.references, 1):
            self._dag.add_edge(ref, name, index=index)
        return Handle(self, name)

    def _input_sizes(self, references: Sequence[str]) -> tuple[tuple[int, int], ...]:
        """The pixel size of each reference known now: sources and edits (for prices that
        count input megapixels)."""
        sizes = []
        for ref in references:
            if ref in self._edits:
                parameters = self._edits[ref].parameters
                sizes.append((int(parameters["width"]), int(parameters["height"])))
            elif ref in self._sources:
                with Image.open(io.BytesIO(self._sources[ref].data)) as image:  # header only
                    sizes.append(image.size)
        return tuple(sizes)

    def _sweep(
        self, prompt: Any, seeds: Any, *, refs: Sequence[Handle | str] | None,
        name: str | None, model: str | None, params: dict[str, Any],
    ) -> Sweep:
        base = self._new_name(name, "sweep", reserve=False)
        prompts = list(prompt) if isinstance(prompt, list) else None
        seed_list = list(seeds) if isinstance(seeds, (list, tuple)) else None
        if prompts is not None and seed_list is not None and len(prompts) != len(seed_list):
            raise GraphError(
                f"node {base!r}: seed: {len(seed_list)} seeds for {len(prompts)} prompts; "
                "give one list or lists of the same length"
            )
        count = len(prompts if prompts is not None else seed_list or [])
        if count == 0:
            raise GraphError(f"node {base!r}: a sweep needs at least one variant")
        handles: list[Handle] = []
        try:
            for index in range(count):
                variant = dict(params)
                if seed_list is not None:
                    variant["seed"] = seed_list[index]
                handle = self.edit(
                    prompts[index] if prompts is not None else prompt,
                    refs=refs, name=f"{base}[{index}]", model=model, **variant,
                )
                assert isinstance(handle, Handle)
                handles.append(handle)
        except GraphError:
            self._remove_edits(handles)  # a sweep is added whole or not at all
            raise
        return Sweep(handles)

    def _remove_edits(self, handles: Sequence[Handle]) -> None:
        """Drop edits just added (newest first), when the call adding them fails."""
        for handle in reversed(handles):
            self._dag.remove_node(handle.name)
            del self._edits[handle.name]

    def _new_name(self, name: str | None, stem: str, *, reserve: bool = True) -> str:
        if name is None:
            # Numbered from what the graph holds, so a failed edit() uses up no number and
            # re-running a notebook cell after an error gives the same names.
            number = itertools.count(len(self._edits) + 1 if stem in ("edit", "sweep") else 1)
            candidate = stem if stem not in ("edit", "sweep") else f"{stem}_{next(number)}"
            while self._taken(candidate) or self._taken(f"{candidate}[0]"):
                candidate = f"{stem}_{next(number)}"
            self._folded[folded(candidate)] = candidate
            return candidate
        if not isinstance(name, str) or not name:
            raise GraphError(f"name: must be a non-empty str, got {name!r}")
        problem = name_problem(name)
        if problem is not None:
            raise GraphError(f"node {shown_name(name)}: name: {problem}")
        if reserve and name in self._dag:
            raise GraphError(f"node {name!r}: name: a node named {name!r} already exists")
        if reserve and (twin := self._taken(name)) is not None:
            raise GraphError(
                f"node {name!r}: name: {twin!r} already exists, and the two would be one "
                "file on macOS and Windows (names are compared ignoring case); pick another"
            )
        if reserve:
            # Entries of names whose declaration then failed are ignored by _taken.
            self._folded[folded(name)] = name
        return name

    def _taken(self, name: str) -> str | None:
        """The node whose name equals ``name`` after NFC and case folding, if any."""
        owner = self._folded.get(folded(name))
        return owner if owner is not None and owner in self._dag else None

    def _ref_name(self, ref: Handle | str, node: str) -> str:
        if isinstance(ref, Handle):
            if ref.graph is not self:
                raise GraphError(f"node {node!r}: refs: {ref.name!r} belongs to another graph")
            return ref.name
        if isinstance(ref, str):
            if ref not in self._dag:
                raise GraphError(f"node {node!r}: refs: no node named {ref!r}{self._known()}")
            return ref
        raise GraphError(
            f"node {node!r}: refs: expected handles or node names, got {type(ref).__name__}"
        )

    def _canonical(self, name: str, node: str) -> str:
        source = self._sources.get(name)
        if source is not None:
            return self._content_owner[source.hash]
        if name in self._edits:
            return name
        if name == node:
            raise GraphError(f"node {node!r}: prompt: an edit cannot take itself as input")
        raise GraphError(f"node {node!r}: prompt: unknown reference @{name}{self._known()}")

    def _known(self) -> str:
        names = list(self._dag)
        return f"; known nodes: {', '.join(names)}" if names else "; the graph has no nodes yet"

    def _edit_parameters(self, node: str, spec: ModelSpec, params: dict[str, Any]) -> dict[str, Any]:
        for field in set(params) & set(_REFUSED):
            raise GraphError(f"node {node!r}: {field}: {_REFUSED[field]}")
        unknown = set(params) - set(_DEFAULTS)
        if unknown:
            raise GraphError(
                f"node {node!r}: {min(unknown)}: unknown parameter, got "
                f"{params[min(unknown)]!r}; known: {', '.join(_DEFAULTS)}"
            )
        _check_model_takes(f"node {node!r}", spec, params)
        merged = {
            field: value for field, value in self.defaults.items()
            if field in spec.params or field not in ("steps", "guidance")
        }
        merged.update(params)
        return self._check_parameters(node, merged, spec)

    def _check_parameters(
        self, node: str, values: dict[str, Any], spec: ModelSpec | None = None
    ) -> dict[str, Any]:
        try:
            checked = _Parameters.model_validate(values).model_dump()
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            raise GraphError(
                f"node {node!r}: {field}: {error['msg'].lower()}, got {error.get('input')!r}"
            ) from None
        spec = spec or resolve_model(self.model)
        for field in ("width", "height"):
            value = checked[field]
            if not spec.min_size <= value <= spec.max_size or value % spec.size_multiple:
                raise GraphError(
                    f"node {node!r}: {field}: {value} is not allowed; use a multiple of "
                    f"{spec.size_multiple} from {spec.min_size} to {spec.max_size}"
                )
        if checked["guidance"] is not None:
            checked["guidance"] = float(checked["guidance"])
        for field in ("steps", "guidance"):
            bounds = spec.range_of(field)
            value = checked[field]
            if bounds is not None and value is not None and not bounds[0] <= value <= bounds[1]:
                raise GraphError(
                    f"node {node!r}: {field}: {value!r} is outside {spec.label}'s range "
                    f"{bounds[0]:g} to {bounds[1]:g}; pass a value in it"
                )
        return checked

    # ------------------------------------------------------------------ running

    def _open_store(self, cache_dir: CacheLocation) -> Store:
        if cache_dir is not None and cache_dir != self.cache_dir:
            return open_store(cache_dir)
        if self._store is None:
            self._store = open_store(self.cache_dir)
        return self._store

    def _provider(self, provider: Provider | None) -> tuple[Provider, str | None]:
        chosen = provider or self.provider
        if chosen is not None:
            return chosen, None
        chosen, notice = default_provider()
        if notice:
            logger.warning(notice)
        return chosen, notice

    def _check_edits(self, provider: Provider) -> None:
        """Refuse, before any spend, an edit the provider cannot serve."""
        for node in self._edits.values():
            check_edit(provider, node.name, node.model, node.parameters)

    def plan(
        self, provider: Provider | None = None, cache_dir: CacheLocation = None
    ) -> Plan:
        """What ``run()`` would do: cached and to-run edits, why, and the estimated cost.

        Reads the cache only; calls no provider and spends nothing.
        """
        chosen = provider or self.provider
        if chosen is None:
            chosen = default_provider()[0]
        self._check_edits(chosen)
        name = chosen.name
        return make_plan(list(self._edits.values()), self._sources, provider=name,
                         store=self._open_store(cache_dir))

    async def arun(
        self,
        provider: Provider | None = None,
        cache_dir: CacheLocation = None,
        concurrency: int | None = None,
        *,
        cache_only: bool = False,
        budget: float | None = None,
        progress: bool | None = None,
        journaled_only: bool = False,
    ) -> Run:
        """Run every edit not already cached; raise RunError if any failed.

        ``budget`` (USD) refuses to start a run whose estimate exceeds it and never
        lets estimated spend pass it. ``progress`` shows a progress bar (default: on
        long runs in a terminal or notebook). ``journaled_only`` (``editgraph resume``)
        collects the tasks the submission journal holds and starts no new generation.
        """
        from .errors import BudgetError, RunError
        from .progress import progress_bar

        chosen, notice = self._provider(provider)
        self._check_edits(chosen)
        store = self._open_store(cache_dir)
        edits = list(self._edits.values())
        if budget is not None:
            estimate = make_plan(edits, self._sources, provider=chosen.name, store=store)
            if estimate.estimated_cost > budget + 1e-9:
                raise BudgetError(
                    f"budget: the run is estimated at ${estimate.estimated_cost:.4f}, over "
                    f"the budget of ${budget:.2f}; nothing was run"
                )
        with progress_bar(len(edits), enabled=progress) as bar:
            run = await execute(
                edits, self._sources, provider=chosen, store=store,
                concurrency=_positive(
                    self.concurrency if concurrency is None else concurrency, "concurrency"
                ),
                cache_only=cache_only, budget=budget, progress=bar, notice=notice,
                journaled_only=journaled_only,
            )
        if run.failures:
            raise RunError(run.failures, run=run)
        return run

    def run(
        self,
        provider: Provider | None = None,
        cache_dir: CacheLocation = None,
        concurrency: int | None = None,
        *,
        cache_only: bool = False,
        budget: float | None = None,
        progress: bool | None = None,
        journaled_only: bool = False,
    ) -> Run:
        """Synchronous ``arun``; also works inside a running event loop (Jupyter)."""
        return run_sync(self.arun(provider, cache_dir, concurrency, cache_only=cache_only,
                                  budget=budget, progress=progress,
                                  journaled_only=journaled_only))

    def __iter__(self) -> Iterator[str]:
        return iter(self._dag)


def check_recorded_edit(node: str, model: str, parameters: Mapping[str, Any]) -> None:
    """Put a recorded edit (a manifest or provenance entry, perhaps from elsewhere)
    through the checks ``g.edit`` applies to its name, model and parameters.

    Raises GraphError naming the node and the field, as ``g.edit`` would.
    """
    problem = name_problem(node) if isinstance(node, str) and node else "must be a non-empty str"
    if problem is not None:
        raise GraphError(f"node {shown_name(str(node))}: name: {problem}")
    spec = resolve_model(model, node=node)
    Graph(model=model)._edit_parameters(node, spec, dict(parameters))


def chain(
    handle: Handle, prompts: Sequence[str], *, name: str | None = None, **params: Any
) -> Handle:
    """Append one edit per prompt, each taking the previous as image 1; the last handle.

    With ``name``, the edits are named ``name-1``, ``name-2``, …
    """
    if isinstance(prompts, str):
        raise GraphError("chain: prompts must be a list of prompts, not one str")
    if not isinstance(handle, Handle):
        raise GraphError(
            f"chain: expected a handle to start from, got {type(handle).__name__}"
            + ("; use sweep.pick(i)" if isinstance(handle, Sweep) else "")
        )
    for field in {"refs"} & set(params):
        raise GraphError(
            f"chain: {field}: chain sets it for each edit (the previous edit is image 1); "
            "use g.edit() for an edit that needs it"
        )
    graph = handle.graph
    added: list[Handle] = []
    current = handle
    try:
        for index, prompt in enumerate(prompts, 1):
            step = None if name is None else f"{name}-{index}"
            result = graph.edit(prompt, refs=[current], name=step, **params)
            if not isinstance(result, Handle):
                raise GraphError("chain: a sweep cannot be chained; pick a variant first")
            added.append(result)
            current = result
    except GraphError:
        graph._remove_edits(added)  # a chain is added whole or not at all
        raise
    return current


def _check_model_takes(where: str, spec: ModelSpec, values: Mapping[str, Any]) -> None:
    """Refuse ``steps`` or ``guidance`` for a model that does not document them."""
    for field in ("steps", "guidance"):
        if values.get(field) is not None and field not in spec.params:
            raise GraphError(
                f"{where}: {field}: not documented for {spec.label} (only for FLUX.2 [dev] "
                f"and [flex]), got {values[field]!r}; drop it or use model='flux.2-flex'"
            )


def _positive(value: int, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GraphError(f"{field}: must be a positive int, got {value!r}")
    return value

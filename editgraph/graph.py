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
from typing import Any, Literal, SupportsIndex, TypeAlias, overload

import networkx as nx
from PIL import ExifTags, Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import ops
from .errors import BudgetError, GraphError, RunError, RunInterrupted
from .execute import Drain, execute, run_draining
from .models import MAX_PROMPT_CHARS, ModelSpec, resolve_model
from .names import folded, name_problem, shown_name
from .nodes import EditNode, OpNode, SourceNode
from .ops import MAX_FEATHER, Operation
from .pixels import declared_size
from .plan import Plan, make_plan
from .prompts import RewrittenPrompt, StructuredPrompt, reference_token, rewrite_prompt
from .providers.base import Provider, check_edit
from .providers.registry import default_provider
from .regions import crop_box, mask_area, model_size
from .runs import Run
from .sources import DEFAULT_MAX_SOURCE_PIXELS, prepare_source, read_source, source_hash
from .store import DEFAULT_GRAPH, Store
from .stores.absent import AbsentStore
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

#: What ``mask=`` of a region edit takes: a node, or an image given as a source is.
MaskSource: TypeAlias = "Handle | str | os.PathLike[str] | bytes | Image.Image"


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
    ``name`` says whose history ``plan`` compares with (a recipe's graph is named after
    its file).
    """

    def __init__(
        self,
        *,
        model: str = "flux.2-pro",
        provider: Provider | None = None,
        cache_dir: CacheLocation = None,
        concurrency: int = 8,
        max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
        name: str = DEFAULT_GRAPH,
        **defaults: Any,
    ) -> None:
        self._id = f"g{next(_graph_ids)}"
        if not isinstance(name, str) or not name:
            raise GraphError(f"graph name must be a non-empty str, got {name!r}")
        #: Whose history ``plan`` compares with: a recipe's resolved path, a notebook's
        #: ``name=`` (default "__main__").
        self.name = name
        #: Every node's kind (source, edit, op) in declaration order; the networkx DAG
        #: (``dag``) is made from it and the edits' references when first asked for: a
        #: batch builds a graph per item and never draws it.
        self._kinds: dict[str, str] = {}
        self._drawn: nx.DiGraph | None = None
        self._sources: dict[str, SourceNode] = {}
        self._edits: dict[str, EditNode | OpNode] = {}
        self._declared_images: dict[str, Image.Image] = {}  # sources and ops, for regions
        self._content_owner: dict[str, str] = {}
        self._folded: dict[str, str] = {}  # folded name -> node name, for _taken
        self.provider = provider
        self.cache_dir = cache_dir
        self.concurrency = _positive(concurrency, "concurrency")
        self.max_source_pixels = _positive(max_source_pixels, "max_source_pixels")
        self._store: Store | None = None
        #: The engine's memo of each node's key (see ``execute``'s ``keys``).
        self._keys: dict[str, Any] = {}
        self.model = model
        unknown = set(defaults) - set(_DEFAULTS)
        for field in unknown & set(_REFUSED):
            raise GraphError(f"graph defaults: {field}: {_REFUSED[field]}")
        if unknown:
            raise GraphError(
                f"graph defaults: unknown parameter(s) {sorted(unknown)}; "
                f"known: model, provider, cache_dir, concurrency, name, {', '.join(_DEFAULTS)}"
            )
        self.defaults = {**_DEFAULTS, **defaults}
        memo_key = _memo_key(model, self.defaults)
        if memo_key is None or memo_key not in _checked_defaults:
            spec = resolve_model(model, node="<graph defaults>")
            _check_model_takes("graph defaults", spec, self.defaults)
            self._check_parameters("<graph defaults>", self.defaults)
            if memo_key is not None:
                _remember(_checked_defaults, memo_key, True)

    def __repr__(self) -> str:
        operations = sum(isinstance(node, OpNode) for node in self._edits.values())
        counts = f"{len(self._sources)} sources, {len(self._edits) - operations} edits"
        return f"<Graph {counts}, {operations} ops>" if operations else f"<Graph {counts}>"

    def _repr_html_(self) -> str:
        """The graph drawn as SVG; edits already cached are marked once a store is open."""
        from .display import graph_html  # display draws graphs; imported on use

        return graph_html(self, store=self._store)

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __len__(self) -> int:
        return len(self._kinds)

    def __getitem__(self, name: str) -> Handle:
        if name not in self._kinds:
            raise KeyError(name)
        return Handle(self, name)

    @property
    def dag(self) -> nx.DiGraph:
        """The networkx DAG: nodes are names (with their ``kind``), edges carry
        ``index`` (the "image N"; an input taken twice keeps its first)."""
        if self._drawn is None:
            dag = nx.DiGraph()
            for name, kind in self._kinds.items():
                dag.add_node(name, kind=kind)
                node = self._edits.get(name)
                if node is None:
                    continue
                # Edges only run from nodes that already exist into the new one, so the
                # graph stays acyclic by construction (an edit naming itself is refused).
                for index, ref in enumerate(node.references, 1):
                    if not dag.has_edge(ref, name):  # an op may take one input twice
                        dag.add_edge(ref, name, index=index)
            self._drawn = dag
        return self._drawn

    def _add_node(self, name: str, kind: str) -> None:
        self._kinds[name] = kind
        self._drawn = None

    def _remove_node(self, name: str) -> None:
        del self._kinds[name]
        self._drawn = None

    @property
    def sources(self) -> Mapping[str, SourceNode]:
        """The source images, by name."""
        return self._sources

    @property
    def edits(self) -> Mapping[str, EditNode | OpNode]:
        """The edits and ops, by name, in the order they were declared (a topological
        order)."""
        return self._edits

    # ------------------------------------------------------------------ declaring

    def image(self, src: str | os.PathLike[str] | bytes | Image.Image, name: str | None = None) -> Handle:
        """Add a source image: a path, an http(s) URL, bytes or a PIL image.

        The source is read and fully decoded now; a missing file, a failing URL, bytes
        that are not an image, a truncated image, an empty source or one above
        ``max_source_pixels`` is a GraphError. A format other than JPEG, PNG or WebP is
        converted to PNG (the hash is of the PNG, which is what is sent). A photo whose
        EXIF orientation says it is turned is sent upright with no tag, and an animated
        image as its first frame, with a warning (see docs/operations.md).
        """
        data, described, url, stem = read_source(src, name, max_pixels=self.max_source_pixels)
        name = self._new_name(name, stem)
        sent, media_type = prepare_source(
            data, name, described, max_pixels=self.max_source_pixels
        )
        if sent is not data:
            data, url = sent, None  # converted: what is sent is the PNG, not the URL
        digest = source_hash(data)
        self._sources[name] = SourceNode(
            name=name, hash=digest, media_type=media_type, source=described, data=data, url=url
        )
        self._content_owner.setdefault(digest, name)
        self._add_node(name, "source")
        return Handle(self, name)

    @overload
    def edit(
        self, prompt: str | Mapping[str, Any] | StructuredPrompt, *,
        refs: Sequence[Handle | str] | None = None, name: str | None = None,
        model: str | None = None, seed: int | None = None,
        region: tuple[int, int, int, int] | None = None, mask: MaskSource | None = None,
        feather: int = 16, margin: float = 0.25, **params: Any,
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
        region: tuple[int, int, int, int] | None = None,
        mask: MaskSource | None = None,
        feather: int = 16,
        margin: float = 0.25,
        **params: Any,
    ) -> Handle | Sweep:
        """Add an edit: one FLUX.2 call whose references are earlier nodes.

        ``refs`` is the explicit reference list; without it the references are the
        handles and ``@name``s in the prompt, in order. A list of seeds
        (``seed=[1, 2, 3]``) or of prompts makes an :class:`Sweep` of variants.

        ``region=(x0, y0, x1, y1)`` or ``mask=`` (a handle, path or PIL image the size of
        image 1) edits only that part of image 1: the edit expands into ``NAME.crop``,
        ``NAME.edit`` and ``NAME`` (see :meth:`_region_edit`), and every pixel farther
        than ``feather`` px from the region keeps image 1's exact value.
        """
        if isinstance(prompt, list) or isinstance(seed, (list, tuple)):
            if region is not None or mask is not None:
                raise GraphError(
                    f"node {name or 'sweep'!r}: region: a region edit cannot be a sweep; "
                    "declare one region edit per variant"
                )
            return self._sweep(prompt, seed, refs=refs, name=name, model=model, params=params)
        if seed is not None:
            params["seed"] = seed
        if region is not None or mask is not None:
            return self._region_edit(prompt, refs=refs, name=name, model=model, params=params,
                                     region=region, mask=mask, feather=feather, margin=margin)
        name = self._new_name(name, "edit")
        spec = resolve_model(model or self.model, node=name)
        parameters = self._edit_parameters(name, spec, params)
        rewritten = self._rewrite(prompt, refs, name, spec)
        self._add_edit(EditNode(name=name, model=spec, prompt=rewritten.text,
                                references=rewritten.references, parameters=parameters,
                                input_sizes=self._input_sizes(rewritten.references)))
        return Handle(self, name)

    def _rewrite(
        self, prompt: str | Mapping[str, Any] | StructuredPrompt,
        refs: Sequence[Handle | str] | None, name: str, spec: ModelSpec,
    ) -> RewrittenPrompt:
        """The prompt rewritten for node ``name`` and checked against the model."""
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
        return rewritten

    def _add_edit(self, node: EditNode | OpNode) -> None:
        """Put a checked edit or op into the graph, with an edge from each input."""
        self._edits[node.name] = node
        self._add_node(node.name, "op" if isinstance(node, OpNode) else "edit")

    def op(self, function: Operation, *inputs: Handle | str, name: str | None = None,
           **params: Any) -> Handle:
        """Add a local operation: ``function`` (an ``@eg.operation``) applied to ``inputs``.

        ``inputs`` are handles (or node names) of sources, edits or other ops, in the
        order the function receives them; ``params`` are its keyword parameters, checked
        now. It runs in a thread, costs nothing, and is cached like an edit (its key is
        over the operation's name, version, parameters and inputs' content hashes).
        """
        if not isinstance(function, Operation):
            label = getattr(function, "__name__", repr(function))
            raise GraphError(
                f"op: {label}: not an operation; decorate the function with "
                '@eg.operation(version="1"), or use a built-in such as eg.ops.crop'
            )
        if name is None:  # the function's name: crop, crop_2, crop_3...
            stem = function.function.__name__
            name = stem
            for number in itertools.count(2):
                if self._taken(name) is None:
                    break
                name = f"{stem}_{number}"
        name = self._new_name(name, "op")
        references = tuple(self._input_name(ref, name) for ref in inputs)
        function.check_inputs(len(references), node=name)
        parameters = function.check_parameters(params, node=name)
        box = parameters.get("box")
        if box is not None and function in (ops.crop, ops.composite):
            size = self._source_size(references[0])
            if size is not None and (box[2] > size[0] or box[3] > size[1]):
                raise GraphError(
                    f"node {name!r}: box: {tuple(box)} reaches outside {references[0]!r}, "
                    f"{size[0]}x{size[1]} pixels"
                )
        self._add_edit(OpNode(name=name, operation=function, references=references,
                              parameters=parameters))
        return Handle(self, name)

    def _input_sizes(self, references: Sequence[str]) -> tuple[tuple[int, int], ...]:
        """The pixel size of each reference as far as it is known now, for prices that count
        input megapixels: sources and edits exactly; an op by its ``width``/``height``
        parameters, else by its first input (crop and composite keep or shrink it)."""
        sizes = []
        for ref in references:
            item = self._edits.get(ref)
            if isinstance(item, EditNode):
                sizes.append((int(item.parameters["width"]), int(item.parameters["height"])))
            elif isinstance(item, OpNode):
                width, height = item.parameters.get("width"), item.parameters.get("height")
                if isinstance(width, int) and isinstance(height, int):
                    sizes.append((width, height))
                elif item.references:
                    sizes.extend(self._input_sizes(item.references[:1]))
            elif ref in self._sources:
                data = self._sources[ref].data
                size = declared_size(data)  # the header, read by hand: a cached pass's cost
                if size is None:
                    with Image.open(io.BytesIO(data)) as image:  # header only
                        size = image.size
                sizes.append(size)
        return tuple(sizes)

    def _input_name(self, ref: object, node: str) -> str:
        if isinstance(ref, Sweep):
            raise GraphError(
                f"node {node!r}: inputs: a sweep is several images; pass *sweep for all "
                "of them, or sweep.pick(i) for one"
            )
        if not isinstance(ref, (Handle, str)):
            raise GraphError(
                f"node {node!r}: inputs: expected handles or node names, got "
                f"{type(ref).__name__}; add images with g.image() first"
            )
        return self._ref_name(ref, node)

    def _region_edit(
        self, prompt: str | Mapping[str, Any] | StructuredPrompt, *,
        refs: Sequence[Handle | str] | None, name: str | None, model: str | None,
        params: dict[str, Any], region: tuple[int, int, int, int] | None,
        mask: MaskSource | None, feather: int, margin: float,
    ) -> Handle:
        """An edit of part of image 1, as three nodes.

        ``NAME.crop`` cuts the region's box, grown by ``margin`` times its longer side
        (and at least ``feather``), out of image 1 and scales it to a model-valid size
        near one megapixel; ``NAME.edit`` edits that crop (it is image 1 of the edit; the
        other references stay as they are); ``NAME`` composites the edit, scaled back,
        onto image 1 through the mask feathered by ``feather`` px. A rectangular
        ``region`` becomes a source mask named ``NAME.mask``, as does a mask given as a
        path or image.
        """
        name = self._new_name(name, "edit")
        crop_name, edit_name, mask_name = f"{name}.crop", f"{name}.edit", f"{name}.mask"
        for part in (crop_name, edit_name):
            self._new_name(part, "edit")
        if region is not None and mask is not None:
            raise GraphError(f"node {name!r}: region: give region= or mask=, not both")
        if isinstance(feather, bool) or not isinstance(feather, int) or not (
            0 <= feather <= MAX_FEATHER
        ):
            raise GraphError(
                f"node {name!r}: feather: must be an int from 0 to {MAX_FEATHER} (pixels), "
                f"got {feather!r}"
            )
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (
            0 <= margin <= 4
        ):
            raise GraphError(
                f"node {name!r}: margin: must be a number from 0 to 4 (a fraction of the "
                f"region's longer side), got {margin!r}"
            )
        for field in ("width", "height"):
            if field in params:
                raise GraphError(
                    f"node {name!r}: {field}: a region edit is made at a size chosen from "
                    "the region (near one megapixel); drop it"
                )
        spec = resolve_model(model or self.model, node=name)
        rewritten = self._rewrite(prompt, refs, name, spec)
        if not rewritten.references:
            raise GraphError(
                f"node {name!r}: region: a region edit changes part of image 1, but the "
                "prompt names no image; mention the image to edit first"
            )
        base = rewritten.references[0]
        base_size = self._size_now(base, name)
        added_mask = None
        if mask is not None and not isinstance(mask, Handle):
            # A mask given as a path, bytes or an image is a source of its own.
            added_mask = self.image(mask, name=mask_name)
            mask = added_mask
        try:
            mask_image, mask_node = self._mask_now(name, mask, region, base_size)
            area = mask_area(mask_image)
            if area is None:
                raise GraphError(
                    f"node {name!r}: mask: no pixel of it is at least half white, so there "
                    "is nothing to edit"
                )
            box = crop_box(base_size, area, margin=float(margin), feather=feather)
            width, height = model_size(
                box[2] - box[0], box[3] - box[1], min_size=spec.min_size,
                max_size=spec.max_size, multiple=spec.size_multiple,
            )
            parameters = self._edit_parameters(name, spec, {**params, "width": width,
                                                            "height": height})
            crop_parameters = ops.crop.check_parameters(
                {"box": box, "width": width, "height": height}, node=crop_name)
            composite_parameters = ops.composite.check_parameters(
                {"box": box, "feather": feather}, node=name)
        except GraphError:
            if added_mask is not None:  # a region edit is added whole or not at all
                self._remove_node(added_mask.name)
                del self._sources[added_mask.name]
                self._declared_images.pop(added_mask.name, None)
            raise
        if mask_node is None:
            mask_node = self.image(ops.encode_png(mask_image), name=mask_name).name
        self._add_edit(OpNode(name=crop_name, operation=ops.crop, references=(base,),
                              parameters=crop_parameters))
        self._add_edit(EditNode(name=edit_name, model=spec, prompt=rewritten.text,
                                references=(crop_name, *rewritten.references[1:]),
                                parameters=parameters,
                                input_sizes=((parameters["width"], parameters["height"]),
                                             *self._input_sizes(rewritten.references[1:]))))
        self._add_edit(OpNode(name=name, operation=ops.composite,
                              references=(base, edit_name, mask_node),
                              parameters=composite_parameters))
        return Handle(self, name)

    def _mask_now(
        self, node: str, mask: Handle | None, region: tuple[int, int, int, int] | None,
        size: tuple[int, int],
    ) -> tuple[Image.Image, str | None]:
        """The mask of a region edit as an image of ``size``, and its node when it has one."""
        if region is not None:
            try:
                box = ops.crop.check_parameters({"box": region}, node=node)["box"]
            except GraphError as exc:
                raise GraphError(str(exc).replace(": box:", ": region:", 1)) from None
            if box[2] > size[0] or box[3] > size[1]:
                raise GraphError(
                    f"node {node!r}: region: {tuple(box)} reaches outside image 1, which is "
                    f"{size[0]}x{size[1]}"
                )
            image = Image.new("L", size, 0)
            image.paste(255, tuple(box))
            return image, None
        assert mask is not None
        mask_node = self._ref_name(mask, node)
        image = self._image_now(mask_node, node, "mask")
        if image.size != size:
            raise GraphError(
                f"node {node!r}: mask: it is {image.width}x{image.height}, but image 1 is "
                f"{size[0]}x{size[1]}; a mask must have image 1's size"
            )
        return image.convert("L"), mask_node

    def _source_size(self, name: str) -> tuple[int, int] | None:
        """Node ``name``'s pixel size as shown upright when it is a source (read from its
        header, not decoded), else None: an edit's or op's is known when it runs."""
        source = self._sources.get(name)
        if source is None:
            return None
        with Image.open(io.BytesIO(source.data)) as image:
            width, height = image.size
            turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
        return (height, width) if turned else (width, height)

    def _size_now(self, name: str, node: str) -> tuple[int, int]:
        """The pixel size of node ``name``'s image, known before the run."""
        item = self._edits.get(name)
        if isinstance(item, EditNode):
            return item.parameters["width"], item.parameters["height"]
        if isinstance(item, OpNode) and item.operation is ops.composite:
            return self._size_now(item.references[0], node)  # a composite keeps its base's size
        return self._image_now(name, node, "region").size

    def _image_now(self, name: str, node: str, field: str) -> Image.Image:
        """Node ``name``'s image, computed now: a source, or an op over sources."""
        known = self._declared_images.get(name)
        if known is not None:
            return known
        source = self._sources.get(name)
        item = self._edits.get(name)
        image: Image.Image
        if source is not None:
            image = ops.decode_upright(source.data)
        elif isinstance(item, OpNode):
            inputs = [self._image_now(ref, node, field) for ref in item.references]
            image = item.operation.apply(inputs, item.parameters)
        else:
            raise GraphError(
                f"node {node!r}: {field}: {name!r} is made by a model, so its pixels are not "
                "known before the run; use a source, or an op over sources"
            )
        self._declared_images[name] = image
        return image

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
            self._remove_node(handle.name)
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
        if name not in _good_names:  # a recipe declares the same names item after item
            problem = name_problem(name)
            if problem is not None:
                raise GraphError(f"node {shown_name(name)}: name: {problem}")
            if len(_good_names) >= _MEMO_SIZE:
                _good_names.clear()
            _good_names.add(name)
        if reserve and name in self._kinds:
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
        return owner if owner is not None and owner in self._kinds else None

    def _ref_name(self, ref: Handle | str, node: str) -> str:
        if isinstance(ref, Handle):
            if ref.graph is not self:
                raise GraphError(f"node {node!r}: refs: {ref.name!r} belongs to another graph")
            return ref.name
        if isinstance(ref, str):
            if ref not in self._kinds:
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
        names = list(self._kinds)
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
        # The same values for the same model check the same (a batch declares one
        # recipe's edits per item): the checked values are reused, never an error.
        memo_key = _memo_key(spec, merged)
        known = None if memo_key is None else _checked_parameters.get(memo_key)
        if known is not None:
            checked = dict(known)
        else:
            checked = self._check_parameters(node, merged, spec)
            if memo_key is not None:
                _remember(_checked_parameters, memo_key, dict(checked))
        if self.provider is not None:  # the graph's provider may refuse what it cannot serve
            check_edit(self.provider, node, spec, checked)
        return checked

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

    def _open_store(self, cache_dir: CacheLocation, *, create: bool = True) -> Store:
        if cache_dir is not None and cache_dir != self.cache_dir:
            return open_store(cache_dir, create=create)
        if self._store is None:
            store = open_store(self.cache_dir, create=create)
            if isinstance(store, AbsentStore):
                return store  # a folder not made yet (plan): not kept, a run makes it
            self._store = store
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
        if not callable(getattr(provider, "check_edit", None)):
            return  # a provider that cannot say (check_edit would do nothing per edit)
        for node in self._edits.values():
            if isinstance(node, EditNode):  # ops run locally, whatever the provider
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
                         store=self._open_store(cache_dir, create=False), graph=self.name)

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
        drain: Drain | None = None,
    ) -> Run:
        """Run every edit not already cached; raise RunError if any failed.

        ``budget`` (USD) refuses to start a run whose estimate exceeds it and never
        lets estimated spend pass it. ``progress`` shows a progress bar (default: on
        long runs in a terminal or notebook). ``journaled_only`` (``editgraph resume``)
        collects the tasks the submission journal holds and starts no new generation.

        Ctrl-C (SIGINT) or SIGTERM drains the run: no new edit starts, the edits in
        flight finish and are cached, then ``eg.RunInterrupted`` (a KeyboardInterrupt)
        is raised with ``.run`` holding what finished. A second Ctrl-C abandons at once.
        A caller that takes the signals itself (a batch) passes ``drain`` instead.
        """
        progress_bar = _progress_bar()
        if budget is not None and not budget >= 0:  # nan included: it would be no limit
            raise GraphError(f"budget: must be a number of USD, at least 0; got {budget}")
        chosen, notice = self._provider(provider)
        self._check_edits(chosen)
        store = self._open_store(cache_dir)
        edits = list(self._edits.values())
        if budget is not None:
            estimate = make_plan(edits, self._sources, provider=chosen.name, store=store,
                                 graph=self.name)
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
                graph=self.name, keys=self._keys, drain=drain,
            )
        if run.interrupted is not None:
            raise RunInterrupted(run, run.interrupted)
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
        """Synchronous ``arun``; also works inside a running event loop (Jupyter), where
        the notebook's interrupt drains the run as Ctrl-C does."""
        return run_draining(lambda drain: self.arun(
            provider, cache_dir, concurrency, cache_only=cache_only, budget=budget,
            progress=progress, journaled_only=journaled_only, drain=drain,
        ))

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)


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


#: Checks that passed, by what they depend on alone (see ``_memo_key``): graph defaults
#: by model, an edit's parameters by model spec. At most ``_MEMO_SIZE`` entries each.
_checked_defaults: dict[tuple[Any, ...], bool] = {}
_checked_parameters: dict[tuple[Any, ...], dict[str, Any]] = {}
_MEMO_SIZE = 256
#: Node names ``name_problem`` accepted lately (it depends on the name alone).
_good_names: set[str] = set()


def _memo_key(model: object, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A key for checks of ``values`` against ``model``, or None when a value could
    compare equal to another of a different type (``1 == 1.0 == True``: the strict
    check tells them apart) or cannot be hashed."""
    items = []
    for field, value in values.items():
        kind = type(value)
        if kind not in _PLAIN:
            return None
        items.append((field, kind, value))
    try:
        key = (model, tuple(items))
        hash(key)
    except TypeError:
        return None
    return key


_PLAIN = frozenset({int, float, str, bool, type(None)})


def _remember(memo: dict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any) -> None:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = value


def _progress_bar() -> Any:
    """``progress.progress_bar``: imported on first use (it brings rich), then kept (an
    import statement in ``arun`` cost every item of a batch about 7 us)."""
    global _progress_module
    if _progress_module is None:
        from . import progress

        _progress_module = progress
    return _progress_module.progress_bar


_progress_module: Any = None


def _positive(value: int, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GraphError(f"{field}: must be a positive int, got {value!r}")
    return value

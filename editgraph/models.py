"""The FLUX.2 model catalogue: ids, aliases, accepted parameters, limits and prices.

Prices are estimates read from third-party copies of Together's pricing page
(https://www.together.ai/pricing); the service's bill is the truth. Limits follow Together's FLUX.2
quickstart and BFL's API docs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import GraphError

__all__ = ["CATALOGUE", "MAX_PROMPT_CHARS", "ModelSpec", "resolve_model"]

#: Longest prompt editgraph sends. Together publishes no limit; BFL accepts 32K tokens,
#: and 32,000 characters stay under that for any ordinary text.
MAX_PROMPT_CHARS = 32_000

#: Parameters every FLUX.2 model takes.
_COMMON_PARAMS = frozenset({"width", "height", "seed", "prompt_upsampling", "output_format"})


@dataclass(frozen=True)
class ModelSpec:
    """What one FLUX.2 model on Together accepts, and what a call is estimated to cost."""

    id: str
    label: str
    aliases: tuple[str, ...]
    max_references: int
    params: frozenset[str]
    price_per_image: float = 0.0
    price_per_megapixel: float = 0.0
    min_size: int = 256
    max_size: int = 1920
    size_multiple: int = 16

    def estimate_cost(self, width: int, height: int) -> float:
        """Estimated USD for one generation of ``width`` x ``height`` (an estimate only)."""
        megapixels = math.ceil(width * height / 1024**2)
        return round(self.price_per_image + self.price_per_megapixel * megapixels, 6)


CATALOGUE: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="black-forest-labs/FLUX.2-pro",
        label="FLUX.2 [pro]",
        aliases=("flux.2-pro", "flux-2-pro", "pro"),
        max_references=8,
        params=_COMMON_PARAMS,
        price_per_image=0.03,
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.2-max",
        label="FLUX.2 [max]",
        aliases=("flux.2-max", "flux-2-max", "max"),
        max_references=8,
        params=_COMMON_PARAMS,
        price_per_megapixel=0.07,
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.2-flex",
        label="FLUX.2 [flex]",
        aliases=("flux.2-flex", "flux-2-flex", "flex"),
        max_references=8,
        params=_COMMON_PARAMS | {"steps", "guidance"},
        price_per_image=0.03,
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.2-dev",
        label="FLUX.2 [dev]",
        aliases=("flux.2-dev", "flux-2-dev", "dev"),
        max_references=6,
        params=_COMMON_PARAMS | {"steps", "guidance"},
        price_per_image=0.0154,
    ),
)

_BY_NAME: dict[str, ModelSpec] = {}
for _spec in CATALOGUE:
    for _name in (_spec.id, *_spec.aliases):
        _BY_NAME[_name.lower()] = _spec


def resolve_model(name: str, *, node: str | None = None) -> ModelSpec:
    """The catalogue entry for a model id or alias (case-insensitive).

    Raises GraphError naming the node and listing the known models when unknown.
    """
    spec = _BY_NAME.get(str(name).strip().lower())
    if spec is None:
        where = f"node {node!r}: " if node else ""
        known = ", ".join(s.aliases[0] for s in CATALOGUE)
        raise GraphError(f"{where}model: unknown model {name!r}; use one of {known}")
    return spec

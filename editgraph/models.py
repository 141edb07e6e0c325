"""The FLUX.2 catalogue: ids, aliases, accepted parameters, limits and prices.

Limits follow Together's FLUX.2 quickstart and BFL's API docs (flex: ``steps`` 1-50,
``guidance`` 1.5-10). Prices are estimates, per provider, each with its source in
``PRICES``; the service's bill is the truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import GraphError

__all__ = [
    "CATALOGUE",
    "MAX_PROMPT_CHARS",
    "PRICES",
    "ModelSpec",
    "Price",
    "megapixels",
    "resolve_model",
]

#: Longest prompt editgraph sends. Together publishes no limit; BFL accepts 32K tokens,
#: and 32,000 characters stay under that for any ordinary text.
MAX_PROMPT_CHARS = 32_000

#: Parameters every FLUX.2 model takes.
_COMMON_PARAMS = frozenset({"width", "height", "seed", "prompt_upsampling", "output_format"})


def megapixels(width: int, height: int) -> int:
    """Started megapixels of a ``width`` x ``height`` image (1 MP = 1024 x 1024 pixels).

    Billing counts whole megapixels, as BFL's formula and ComfyUI's price badge do; a
    1024 x 768 image is 1 MP, 1920 x 1080 is 2.
    """
    return max(1, math.ceil(width * height / 1024**2))


@dataclass(frozen=True)
class Price:
    """How one provider bills one model, in USD, and where the figures come from.

    One generation costs ``first_megapixel`` for the first output megapixel, plus
    ``per_output_megapixel`` for each further one, plus ``per_input_megapixel`` for each
    megapixel of every reference (zero where the provider does not bill inputs).
    """

    first_megapixel: float
    per_output_megapixel: float
    per_input_megapixel: float = 0.0
    source: str = ""

    def estimate(self, width: int, height: int, inputs: Iterable[tuple[int, int]] = ()) -> float:
        """Estimated USD for one ``width`` x ``height`` output from references of ``inputs``
        sizes (an estimate only)."""
        output = megapixels(width, height)
        cost = self.first_megapixel + (output - 1) * self.per_output_megapixel
        if self.per_input_megapixel:
            cost += sum(megapixels(w, h) for w, h in inputs) * self.per_input_megapixel
        return round(cost, 6)


_TOGETHER_SOURCE = (
    "Together bills FLUX.2 per megapixel of output and nothing for inputs "
    "(https://docs.together.ai/docs/serverless/overview); figures are third-party readings "
    "of https://www.together.ai/pricing as of 2026-10: dev $0.0154, pro $0.03, flex $0.03, "
    "max $0.07 per megapixel"
)
_BFL_SOURCE = (
    "BFL's formula (https://docs.bfl.ai/quick_start/pricing; black-forest-labs/skills, "
    "skills/bfl-api/SKILL.md): first MP + (output MP - 1) x MP price + input MP x MP price; "
    "the cost BFL returns at submit is the bill"
)

#: Estimated prices per provider name, then per model id. A provider not listed is
#: estimated at Together's prices (the Preview provider shows what FLUX.2 would cost).
PRICES: dict[str, dict[str, Price]] = {
    "together": {
        "black-forest-labs/FLUX.2-pro": Price(0.03, 0.03, source=_TOGETHER_SOURCE),
        "black-forest-labs/FLUX.2-max": Price(0.07, 0.07, source=_TOGETHER_SOURCE),
        "black-forest-labs/FLUX.2-flex": Price(0.03, 0.03, source=_TOGETHER_SOURCE),
        "black-forest-labs/FLUX.2-dev": Price(0.0154, 0.0154, source=_TOGETHER_SOURCE),
    },
    "bfl": {
        "black-forest-labs/FLUX.2-pro": Price(0.03, 0.015, 0.015, source=_BFL_SOURCE),
        "black-forest-labs/FLUX.2-max": Price(0.07, 0.03, 0.03, source=_BFL_SOURCE),
        "black-forest-labs/FLUX.2-flex": Price(0.05, 0.05, 0.05, source=_BFL_SOURCE),
        "black-forest-labs/FLUX.2-klein-4b": Price(0.014, 0.001, 0.001, source=_BFL_SOURCE),
        "black-forest-labs/FLUX.2-klein-9b": Price(0.015, 0.002, 0.002, source=_BFL_SOURCE),
    },
}


@dataclass(frozen=True)
class ModelSpec:
    """What one FLUX.2 model accepts, where it is hosted, and what a call is estimated to cost.

    ``on_together`` says whether Together serves it; ``bfl_endpoint`` is its path on BFL's
    API (``None``: BFL hosts no endpoint for it; dev's weights are open, not hosted).

    ``ranges`` holds the inclusive bounds the sources give for numeric parameters
    (``steps``, ``guidance``) as ``(name, low, high)``; ``range_of`` reads it.
    """

    id: str
    label: str
    aliases: tuple[str, ...]
    max_references: int
    params: frozenset[str]
    min_size: int = 256
    max_size: int = 1920
    size_multiple: int = 16
    ranges: tuple[tuple[str, float, float], ...] = ()
    on_together: bool = True
    bfl_endpoint: str | None = None

    def range_of(self, name: str) -> tuple[float, float] | None:
        """The inclusive bounds of parameter ``name`` for this model, if the sources give any."""
        for parameter, low, high in self.ranges:
            if parameter == name:
                return low, high
        return None

    def estimate_cost(
        self,
        width: int,
        height: int,
        *,
        inputs: Iterable[tuple[int, int]] = (),
        provider: str = "together",
    ) -> float:
        """Estimated USD for one ``width`` x ``height`` generation on ``provider``, with
        references of ``inputs`` sizes (billed only where the provider bills inputs)."""
        prices = PRICES.get(provider, PRICES["together"])
        price = prices.get(self.id) or PRICES["together"][self.id]
        return price.estimate(width, height, inputs)


CATALOGUE: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="black-forest-labs/FLUX.2-pro",
        label="FLUX.2 [pro]",
        aliases=("flux.2-pro", "flux-2-pro", "pro"),
        max_references=8,
        params=_COMMON_PARAMS,
        bfl_endpoint="flux-2-pro",
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.2-max",
        label="FLUX.2 [max]",
        aliases=("flux.2-max", "flux-2-max", "max"),
        max_references=8,
        params=_COMMON_PARAMS,
        bfl_endpoint="flux-2-max",
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.2-flex",
        label="FLUX.2 [flex]",
        aliases=("flux.2-flex", "flux-2-flex", "flex"),
        max_references=8,
        params=_COMMON_PARAMS | {"steps", "guidance"},
        # BFL's flex API page (docs.bfl.ai): steps 1-50, guidance 1.5-10.
        ranges=(("steps", 1, 50), ("guidance", 1.5, 10.0)),
        bfl_endpoint="flux-2-flex",
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.2-dev",
        label="FLUX.2 [dev]",
        aliases=("flux.2-dev", "flux-2-dev", "dev"),
        max_references=6,
        params=_COMMON_PARAMS | {"steps", "guidance"},
        # No published range for dev; steps as flex (and Together's spec default, 20, is
        # inside it), guidance only positive.
        ranges=(("steps", 1, 50),),
    ),
    # klein is served by BFL only (4 reference slots each).
    ModelSpec(
        id="black-forest-labs/FLUX.2-klein-4b",
        label="FLUX.2 [klein 4B]",
        aliases=("flux.2-klein-4b", "flux-2-klein-4b", "klein-4b"),
        max_references=4,
        params=_COMMON_PARAMS,
        on_together=False,
        bfl_endpoint="flux-2-klein-4b",
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.2-klein-9b",
        label="FLUX.2 [klein 9B]",
        aliases=("flux.2-klein-9b", "flux-2-klein-9b", "klein-9b"),
        max_references=4,
        params=_COMMON_PARAMS,
        on_together=False,
        bfl_endpoint="flux-2-klein-9b",
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

"""The one place providers are named: look one up by name, or pick the default.

Each provider module registers itself with one line (``register("together", Together,
key_variable="TOGETHER_API_KEY")``). The command's ``--provider``, replay (which
recreates the provider a run recorded) and the notebook views all go through here.

The default, when no provider is given: the first of ``DEFAULT_ORDER`` that is
registered and whose key variable is set, else Preview with a one-line notice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from .base import Provider

__all__ = [
    "DEFAULT_ORDER",
    "ProviderRegistry",
    "by_name",
    "default_provider",
    "names",
    "register",
]

#: Hosted providers tried in this order when none is given; Preview comes last.
DEFAULT_ORDER = ("together", "bfl")
_FALLBACK = "preview"
_NOTICE = (
    "{variables} not set: using the offline Preview provider (free: costs shown are what "
    "FLUX.2 would charge; images show the wiring, not a model's output)"
)


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Provider]
    key_variable: str | None


class ProviderRegistry:
    """Provider factories by name, and the rule that picks the default one."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(
        self, name: str, factory: Callable[..., Provider], *, key_variable: str | None = None
    ) -> None:
        """Make ``factory`` (a provider class, say) available as ``name``.

        ``key_variable`` is the environment variable holding its API key: a provider
        named in ``DEFAULT_ORDER`` becomes the default when that variable is set.
        """
        self._entries[name] = _Entry(factory, key_variable)

    def names(self) -> list[str]:
        """The registered names: the default order first, Preview last."""
        rank = {name: index for index, name in enumerate((*DEFAULT_ORDER, _FALLBACK))}
        return sorted(self._entries, key=lambda name: (rank.get(name, len(DEFAULT_ORDER)), name))

    def by_name(self, name: str, **settings: Any) -> Provider:
        """A new provider of the kind registered as ``name``, built with ``settings``.

        Raises ConfigurationError for an unknown name; the provider raises
        ConfigurationError itself for a missing API key.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise ConfigurationError(
                f"provider: unknown provider {name!r}; known: {', '.join(self.names())}"
            )
        return entry.factory(**settings)

    def default_provider(self) -> tuple[Provider, str | None]:
        """The provider a run uses when none is given, and a one-line notice when it is
        Preview: the first of ``DEFAULT_ORDER`` whose key variable is set."""
        variables = []
        for name in DEFAULT_ORDER:
            entry = self._entries.get(name)
            if entry is None or entry.key_variable is None:
                continue
            if os.environ.get(entry.key_variable):
                return entry.factory(), None
            variables.append(entry.key_variable)
        verb = "is" if len(variables) == 1 else "are"
        shown = " and ".join(variables) or "no API key"
        return self.by_name(_FALLBACK), _NOTICE.format(variables=f"{shown} {verb}")


_registry = ProviderRegistry()

#: Register a provider under a name (each provider module does, in one line).
register = _registry.register
#: The registered provider names, in the order the command lists them.
names = _registry.names
#: A new provider by name, with its settings: ``by_name("together", rate_limit=60)``.
by_name = _registry.by_name
#: The provider a run uses when none is given, and the notice to show with it.
default_provider = _registry.default_provider

"""The provider registry: providers by name, and the default order by environment."""

from __future__ import annotations

import pytest

import editgraph as eg
from editgraph.providers import registry
from editgraph.providers.registry import ProviderRegistry
from editgraph.requests import EditRequest, GeneratedImage


class Hosted:
    """A stand-in hosted provider that records its settings."""

    name = "hosted"

    def __init__(self, **settings: object) -> None:
        self.settings = settings

    async def generate(self, request: EditRequest) -> GeneratedImage:
        """Never called here."""
        raise NotImplementedError


def registry_with_bfl() -> ProviderRegistry:
    """A registry like the package's, with a stand-in registered as ``bfl``."""
    registry = ProviderRegistry()
    registry.register("preview", eg.providers.Preview)
    registry.register("together", eg.providers.Together, key_variable="TOGETHER_API_KEY")
    registry.register("bfl", Hosted, key_variable="BFL_API_KEY")
    return registry


def test_the_package_registers_together_bfl_and_preview() -> None:
    """by_name builds each built-in provider, passing its settings through."""
    assert registry.names() == ["together", "bfl", "preview"]
    bfl = eg.providers.by_name("bfl", api_key="b" * 20, max_active=4)
    assert isinstance(bfl, eg.providers.BFL) and bfl.max_active == 4
    assert isinstance(eg.providers.by_name("preview"), eg.providers.Preview)
    together = eg.providers.by_name("together", api_key="k" * 20, rate_limit=60)
    assert isinstance(together, eg.providers.Together) and together.rate_limit == 60


def test_an_unknown_name_is_a_configuration_error() -> None:
    """An unknown provider name is refused naming the known ones."""
    with pytest.raises(eg.ConfigurationError, match="'nope'.*together, bfl, preview"):
        eg.providers.by_name("nope")


def test_a_missing_key_is_a_configuration_error() -> None:
    """Asking for Together without TOGETHER_API_KEY is a ConfigurationError, not a
    ProviderError."""
    with pytest.raises(eg.ConfigurationError, match="TOGETHER_API_KEY") as caught:
        eg.providers.by_name("together")
    assert not isinstance(caught.value, eg.ProviderError)


def test_default_is_preview_with_a_notice_without_keys() -> None:
    """With no key set the default is Preview, with a notice naming the variables."""
    provider, notice = registry_with_bfl().default_provider()
    assert provider.name == "preview"
    assert notice is not None
    assert notice.startswith("TOGETHER_API_KEY and BFL_API_KEY are not set")


def test_default_order_is_together_then_bfl(monkeypatch: pytest.MonkeyPatch) -> None:
    """BFL_API_KEY picks bfl; TOGETHER_API_KEY wins when both are set."""
    registry = registry_with_bfl()
    monkeypatch.setenv("BFL_API_KEY", "bfl-key")
    provider, notice = registry.default_provider()
    assert isinstance(provider, Hosted) and notice is None
    monkeypatch.setenv("TOGETHER_API_KEY", "together-key")
    provider, notice = registry.default_provider()
    assert isinstance(provider, eg.providers.Together) and notice is None


def test_bfl_key_is_ignored_until_bfl_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a registered bfl provider, BFL_API_KEY changes nothing: Preview."""
    registry = ProviderRegistry()
    registry.register("preview", eg.providers.Preview)
    registry.register("together", eg.providers.Together, key_variable="TOGETHER_API_KEY")
    monkeypatch.setenv("BFL_API_KEY", "bfl-key")
    provider, notice = registry.default_provider()
    assert provider.name == "preview"
    assert notice is not None and notice.startswith("TOGETHER_API_KEY is not set")


def test_names_list_the_default_order_then_preview() -> None:
    """names() lists hosted providers in the default order, others, then Preview."""
    registry = registry_with_bfl()
    registry.register("local", Hosted)
    assert registry.names() == ["together", "bfl", "local", "preview"]

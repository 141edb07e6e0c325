"""Suite-wide settings: slow tests run in CI (or with --slow), and no test sees a real key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="slow: runs in CI, or locally with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No key or base URL leaks in from the shell, and the default cache is a fresh folder."""
    for name in ("TOGETHER_API_KEY", "TOGETHER_BASE_URL", "BFL_API_KEY", "BFL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("default-cache")))


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No API key, a private cache directory, and the temp dir as working directory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    return cache

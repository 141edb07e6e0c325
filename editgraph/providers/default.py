"""The one place the default provider is picked: Together with a key, else Preview."""

from __future__ import annotations

import os

from .base import Provider

__all__ = ["default_provider"]

PREVIEW_NOTICE = (
    "TOGETHER_API_KEY is not set: using the offline Preview provider "
    "(free: costs shown are what FLUX.2 would charge; images show the wiring, not a "
    "model's output)"
)


def default_provider() -> tuple[Provider, str | None]:
    """The provider runs use when none is given, and a one-line notice when it is Preview."""
    if os.environ.get("TOGETHER_API_KEY"):
        from .together import Together

        return Together(), None
    from .preview import Preview

    return Preview(), PREVIEW_NOTICE

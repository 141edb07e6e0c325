"""The provider protocol: anything with a ``name`` and an async ``generate``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..requests import EditRequest, GeneratedImage

__all__ = ["Provider"]


@runtime_checkable
class Provider(Protocol):
    """Turns one EditRequest into one image.

    ``name`` is part of every cache key, so results of different providers never mix.
    A provider keeps no event-loop-bound state between calls: one object may serve many
    runs, graphs and event loops.

    Optionally, a provider may define ``session()``, an async context manager the engine
    enters around each run (Together shares one HTTP client and its connections there).
    """

    name: str

    async def generate(self, request: EditRequest) -> GeneratedImage:
        """Generate the image ``request`` describes; raise on failure."""
        ...

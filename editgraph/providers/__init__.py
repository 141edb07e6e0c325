"""Providers turn an EditRequest into an image: Together (FLUX.2 over HTTP) and Preview (offline).

Providers are looked up by name in one registry: ``by_name("together", rate_limit=60)``.
"""

from .base import Provider
from .preview import Preview
from .registry import by_name, register
from .together import DataURIHost, ImageHost, Together

__all__ = ["DataURIHost", "ImageHost", "Preview", "Provider", "Together", "by_name", "register"]

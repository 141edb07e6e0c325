"""Providers turn an EditRequest into an image: Together and BFL (FLUX.2 over HTTP) and
Preview (offline).

Providers are looked up by name in one registry: ``by_name("together", rate_limit=60)``.
"""

from .base import Provider
from .bfl import BFL
from .preview import Preview
from .registry import by_name, register
from .together import DataURIHost, ImageHost, Together

__all__ = [
    "BFL",
    "DataURIHost",
    "ImageHost",
    "Preview",
    "Provider",
    "Together",
    "by_name",
    "register",
]

"""Providers turn an EditRequest into an image: Together (FLUX.2 over HTTP) and Preview (offline)."""

from .base import Provider
from .preview import Preview
from .together import DataURIHost, ImageHost, Together

__all__ = ["DataURIHost", "ImageHost", "Preview", "Provider", "Together"]

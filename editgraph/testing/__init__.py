"""Fakes of the image services: real HTTP servers on 127.0.0.1 for tests and trials.

``FakeTogether`` plays Together AI's FLUX.2 image API. Each fake lives in its own module
of this package; ``python -m editgraph.testing`` runs one from the shell.
"""

from __future__ import annotations

from .together import FakeTogether

__all__ = ["FakeTogether"]

"""Fakes of the image services: real HTTP servers on 127.0.0.1 for tests and trials.

``FakeTogether`` plays Together AI's FLUX.2 image API, ``FakeBFL`` Black Forest Labs'
asynchronous API. Each fake lives in its own module
of this package; ``python -m editgraph.testing`` runs one from the shell.
"""

from __future__ import annotations

from .bfl import FakeBFL
from .together import FakeTogether

__all__ = ["FakeBFL", "FakeTogether"]

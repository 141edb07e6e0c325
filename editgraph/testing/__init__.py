"""Fakes of the image services: real HTTP servers on 127.0.0.1 for tests and trials.

``FakeTogether`` plays Together AI's FLUX.2 image API, ``FakeBFL`` Black Forest Labs'
asynchronous API. Each fake lives in its own module
of this package; ``python -m editgraph.testing`` runs one from the shell.

They come with the ``testing`` extra (``pip install 'editgraph[testing]'``): each fake is
imported when first named, so a missing dependency is reported for the fake that needs
it, and ``python -m editgraph.testing`` can say what to install instead of failing here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bfl import FakeBFL
    from .together import FakeTogether

__all__ = ["FakeBFL", "FakeTogether"]


def __getattr__(name: str) -> Any:
    if name == "FakeTogether":
        from .together import FakeTogether

        return FakeTogether
    if name == "FakeBFL":
        from .bfl import FakeBFL

        return FakeBFL
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

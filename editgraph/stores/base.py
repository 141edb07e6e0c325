"""Where a cache lives: ``open_store`` turns a folder or ``s3://bucket/prefix`` into a store.

The store protocol itself is :class:`editgraph.store.Store` (re-exported here); the
default backend is the diskcache folder in ``editgraph.store``, the shared one
:class:`editgraph.stores.s3.S3Store`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..store import DiskStore, Store, default_cache_dir

__all__ = ["CacheLocation", "Store", "is_s3", "open_store"]

#: What every ``cache_dir=`` / ``cache=`` / ``--cache`` accepts.
CacheLocation = Union[str, "os.PathLike[str]", Store, None]


def is_s3(location: object) -> bool:
    """Whether ``location`` names an S3 bucket (``s3://...``)."""
    return isinstance(location, str) and location.startswith("s3://")


def open_store(location: CacheLocation = None, *, create: bool = True) -> Store:
    """The store at ``location``: a folder (diskcache), ``s3://bucket/prefix`` (the
    shared S3 store, extra ``s3``) or an open store (returned as is). None means
    ``$EDITGRAPH_CACHE_DIR`` (itself a folder or ``s3://...``), else the platform's
    user cache directory.

    ``create=False`` (for what only reads: plan, ``cache info``) does not make a missing
    folder: it gets an empty :class:`~editgraph.stores.absent.AbsentStore`, after the
    same check that the folder could be made (StoreError if not); an S3 store so opened
    makes no local cache folder either."""
    if location is None:
        configured = os.environ.get("EDITGRAPH_CACHE_DIR")
        location = configured if configured else default_cache_dir()
    if isinstance(location, (str, os.PathLike)):
        text = os.fspath(location)
        if is_s3(text):
            from .s3 import S3Store

            return S3Store(text, create=create)
        directory = Path(text).expanduser()
        if not create and not os.path.lexists(directory):
            from .absent import AbsentStore

            return AbsentStore(directory)
        return DiskStore(directory)
    return location

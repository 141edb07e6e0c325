"""Store backends behind one protocol: a diskcache folder, or a shared S3 bucket."""

from __future__ import annotations

from .base import CacheLocation, Store, is_s3, open_store

__all__ = ["CacheLocation", "Store", "is_s3", "open_store"]

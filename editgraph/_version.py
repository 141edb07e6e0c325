"""The installed editgraph version, read once from the package metadata."""

from importlib import metadata

try:
    __version__ = metadata.version("editgraph")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

"""The installed editgraph version, read once from the package metadata, and the
User-Agent editgraph sends with every HTTP request it makes."""

from importlib import metadata

import httpx

try:
    __version__ = metadata.version("editgraph")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

#: Sent with every request (some CDNs refuse a blank User-Agent).
USER_AGENT = f"editgraph/{__version__} httpx/{httpx.__version__}"

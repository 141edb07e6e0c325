"""Hex colour tokens: what prompts accept as a colour and what Preview draws as a swatch."""

from __future__ import annotations

import re

__all__ = ["HEX_COLOUR"]

#: A #RGB or #RRGGBB token standing on its own ("#2E4057", not "#2E4057AA" or "&#123");
#: group 1 holds the digits.
HEX_COLOUR = re.compile(r"(?<![\w&#])#([0-9A-Fa-f]{6}|[0-9A-Fa-f]{3})(?![\w#])")

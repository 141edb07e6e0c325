"""One redactor for every text that leaves editgraph: API keys masked, keys checked early.

``for_terminal`` is what the command prints through: the redactor, plus every control
character that could steer a terminal (C0 but newline and tab, DEL, C1, ESC, and the
bidirectional overrides) shown as a visible ``\\xNN`` escape, so text from prompts,
names, manifests or the service never moves the cursor, recolours or retitles the
terminal.

A provider registers its key here when it is built (``register_secret``); every error
message, log line, manifest, report, repr and terminal line then passes through
``redact``, which masks the key and any run of ``ECHO_RUN`` or more of its characters
that a service echoed back (a 401 that quotes half the key). ``check_api_key`` refuses,
at construction, a key that could never travel in an HTTP header, naming where it came
from and the position of the bad character, never the key.
"""

from __future__ import annotations

import logging
import re
import threading

from .errors import ConfigurationError

__all__ = [
    "ECHO_RUN",
    "MASK",
    "RedactingFilter",
    "check_api_key",
    "for_terminal",
    "redact",
    "register_secret",
]

#: What a secret, or a part of it, is replaced with.
MASK = "********"
#: The shortest run of a key's characters that is masked wherever it appears. Shorter
#: runs are ordinary text ("tgp_v") far more often than they are a leak.
ECHO_RUN = 6

_lock = threading.Lock()
_secrets: set[str] = set()
#: Every ECHO_RUN-character window of every registered secret.
_windows: frozenset[str] = frozenset()


def register_secret(secret: str) -> None:
    """Mask ``secret`` (and runs of 6+ of its characters) in all text redacted from now on.

    Secrets shorter than ``ECHO_RUN`` characters are not masked: they cannot be real keys,
    and masking them would blank ordinary words.
    """
    global _windows
    if len(secret) < ECHO_RUN:
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        _windows = _windows | {
            secret[start : start + ECHO_RUN] for start in range(len(secret) - ECHO_RUN + 1)
        }


def redact(text: str) -> str:
    """``text`` with every registered secret, and every run of 6+ of its characters, masked.

    A run is masked when each of its 6-character windows occurs in a secret, so a key
    echoed whole, cut short, or quoted in pieces is masked piece by piece.
    """
    windows = _windows
    if not windows or len(text) < ECHO_RUN:
        return text
    pieces: list[str] = []
    position = 0  # text before this offset is already in ``pieces``
    start = 0
    last = len(text) - ECHO_RUN
    while start <= last:
        if text[start : start + ECHO_RUN] not in windows:
            start += 1
            continue
        end = start + ECHO_RUN
        while end < len(text) and text[end - ECHO_RUN + 1 : end + 1] in windows:
            end += 1
        pieces.append(text[position:start])
        pieces.append(MASK)
        position = start = end
    if position == 0:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


_TERMINAL_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """``text`` safe to print: secrets masked, terminal control characters made visible.

    Newlines and tabs are kept; every other C0 character, DEL, every C1 character and
    the bidirectional overrides become ``\\xNN`` / ``\\uNNNN`` text.
    """
    return _TERMINAL_CONTROL.sub(_escaped, redact(text))


def check_api_key(key: str, source: str) -> str:
    """The key with surrounding whitespace stripped; ConfigurationError if it is unusable.

    ``source`` says where the key came from (``TOGETHER_API_KEY``, ``api_key=``) and is
    named in the message together with the 1-based position of the first character
    outside printable ASCII (0x21-0x7E); the key itself never is.
    """
    stripped = key.strip()
    if not stripped:
        raise ConfigurationError(f"{source} is empty; set it to your API key")
    for position, char in enumerate(stripped, start=1):
        if not "\x21" <= char <= "\x7e":
            raise ConfigurationError(
                f"{source} has a character that cannot be part of an API key at position "
                f"{position} of {len(stripped)} (after stripping surrounding whitespace; only "
                "printable ASCII is allowed): copy the key again from your account"
            )
    return stripped


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (installed on ``editgraph``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted text; never drops a record."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# Every record logged on the ``editgraph`` logger is redacted before any handler sees it.
logging.getLogger("editgraph").addFilter(RedactingFilter())

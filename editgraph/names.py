"""Node names: what a name may be, so that it works as a file name on every system.

A node's name becomes the name of its image in an output folder, on Linux, macOS and
Windows alike. So a name is at most 100 characters and 200 bytes in UTF-8 (with room
for a sweep's ``[i]`` and an extension under the usual 255-byte limit), holds letters,
digits, ``_``, ``-`` and ``.`` only (none of ``/ \\ : * ? " < > |``, no control
character, no space), is not a Windows device name (``con``, ``nul``, ``com1``...), and
is unique in its graph after Unicode NFC and case folding (``Car`` and ``car`` would be
one file on macOS and Windows).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_NAME_CHARS",
    "NODE_NAME",
    "folded",
    "name_problem",
    "portable_stem",
    "shown_name",
]

#: What a node name looks like: word characters, '.', '-'; no leading or trailing dot;
#: a sweep variant ends in "[i]".
NODE_NAME = re.compile(r"\w(?:[\w.-]*\w)?(?:\[\d+\])?")
MAX_NAME_CHARS = 100
MAX_NAME_BYTES = 200

_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{port}{digit}" for port in ("com", "lpt") for digit in "0123456789\u00b9\u00b2\u00b3"]
)


def folded(name: str) -> str:
    """The form two names are compared in: NFC, then case folded."""
    return unicodedata.normalize("NFC", name).casefold()


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a node name, or None when it can.

    The reason reads after ``node 'NAME': name: `` in a message.
    """
    if len(name) > MAX_NAME_CHARS:
        return f"{len(name)} characters, over the {MAX_NAME_CHARS} allowed; shorten it"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return (
            f"{size} bytes in UTF-8, over the {MAX_NAME_BYTES} allowed (a file name must fit "
            "on every system); shorten it"
        )
    # Checked in NFC, so an accent typed as a combining mark counts as its letter.
    if not NODE_NAME.fullmatch(unicodedata.normalize("NFC", name)) or not name.isprintable():
        return (
            "use letters, digits, '_', '-' and '.' (it becomes a file name, so no '/', "
            "'\\\\', ':', '*', '?', '\"', '<', '>', '|', spaces or control characters, and "
            "no leading or trailing dot)"
        )
    if folded(name.split(".", 1)[0].split("[", 1)[0]) in _DEVICES:
        return (
            f"{name.split('.', 1)[0]!r} is a Windows device name, which cannot be a file "
            "name there; pick another name"
        )
    return None


def portable_stem(stem: str) -> str:
    """``stem`` (from a file name or URL) made into a valid default node name."""
    cleaned = re.sub(r"[^\w.-]+", "_", stem).strip("._-") or "image"
    while len(cleaned) > MAX_NAME_CHARS - 8 or len(cleaned.encode()) > MAX_NAME_BYTES - 16:
        cleaned = cleaned[:-1].rstrip("._-") or "image"
    if folded(cleaned.split(".", 1)[0]) in _DEVICES:
        cleaned = f"{cleaned}_image"
    return cleaned


def shown_name(name: str, limit: int = 60) -> str:
    """``name`` quoted for a message, cut to ``limit`` characters (a refused name may be long)."""
    return repr(name if len(name) <= limit else name[: limit - 1] + "\u2026")

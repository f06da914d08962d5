"""Remote text made safe to show: pure functions.

Store ids, descriptions, error bodies and volume-type names come from
servers we do not control.  Shown raw, an ESC or OSC sequence drives
the terminal, a CR or NL forges a line of a log, and a Cyrillic es
(U+0441) passes for a Latin ``c``.  Human-readable output escapes them;
JSON output stays exact.
"""

from __future__ import annotations

import re

__all__ = ["printable", "shown"]

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph
# separators and bidirectional overrides that reorder what is shown
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``,
    ``\\r``, ``\\u202e``), everything else as it is.
    """
    return _UNSAFE.sub(
        lambda m: m.group().encode("unicode_escape").decode("ascii"), text
    )


def shown(value: object) -> str:
    """A value quoted for a message: ``repr`` for plain ASCII, and with
    every other character escaped, so a look-alike (a Cyrillic es in
    ``cheap``) is visible as such: ``'\\u0441heap'``.
    """
    text = repr(value)
    return text if text.isascii() else ascii(value)

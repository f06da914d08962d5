"""Remote text made safe to show."""

from __future__ import annotations

import pytest

from volume_image.core.text import printable, shown


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("plain", "plain"),
        ("\x1b[2J\x1b]0;owned\x07", "\\x1b[2J\\x1b]0;owned\\x07"),
        ("line\r\nforged", "line\\r\\nforged"),
        ("nul\x00", "nul\\x00"),
        ("c1\x9b", "c1\\x9b"),
        ("bidi\u202egnp.exe", "bidi\\u202egnp.exe"),
        ("caf\u00e9", "caf\u00e9"),  # letters stay
    ],
)
def test_printable_escapes_controls_only(raw: str, safe: str) -> None:
    assert printable(raw) == safe


def test_look_alikes_are_visible() -> None:
    assert shown("cheap") == "'cheap'"
    assert shown("\u0441heap") == "'\\u0441heap'"
    assert shown("\u0441heap") != shown("cheap")

"""Text rules for rooms: names in one Unicode form, controls neutralised, outbound text checked.

No imports of ours: the endpoints apply these, and so will any other entry point into a room.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

__all__ = ["REPLACEMENT", "check_outbound_text", "neutralize_controls", "normalize_name"]

REPLACEMENT = "\ufffd"
"""What a control character becomes: U+FFFD REPLACEMENT CHARACTER."""

_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
"""C0 controls except tab, DEL, and the C1 controls (U+0080-U+009F, among them NEL U+0085)."""


def normalize_name(name: str) -> str:
    """Return `name` in Unicode NFKC form, so that compatibility forms (full-width letters, ligatures) are one name."""
    return unicodedata.normalize("NFKC", name)


def neutralize_controls(text: str) -> str:
    """Replace every C0 and C1 control character and DEL in `text`, except tab, with U+FFFD.

    A line break or an escape sequence in one member's text can then neither start a line that
    looks like another member's nor reach a terminal.
    """
    return _CONTROLS.sub(REPLACEMENT, text)


def check_outbound_text(text: Any, max_size: int | None) -> None:
    """Check that `text` can reach every member: a `str`, valid as UTF-8, at most `max_size` bytes.

    Raises:
        TypeError: If `text` is not a `str`.
        ValueError: If it has a lone surrogate (it cannot be encoded as UTF-8), or is longer
            than `max_size` bytes in UTF-8.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text cannot be encoded as UTF-8: {exc.reason} at index {exc.start}") from None
    if max_size is not None and len(encoded) > max_size:
        raise ValueError(f"text is {len(encoded)} bytes in UTF-8, over max_message_size {max_size}")

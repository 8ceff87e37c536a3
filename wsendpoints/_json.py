"""Guarded JSON decoding of client messages.

`json.loads` alone accepts `NaN` and `Infinity` (and turns `1e999` into `inf`), spends
quadratic time on huge numbers and raises `RecursionError` deep in nested input. `loads`
rejects all of these with a `JSONRejected` whose `reason` is short enough for a close frame.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_NUMBER_LENGTH", "JSONRejected", "dumps", "loads"]

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted."""

MAX_NUMBER_LENGTH = 100
"""Longest number literal accepted, in characters."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONRejected(ValueError):
    """A client message that is not acceptable JSON; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject_constant(name: str) -> Any:
    raise JSONRejected(f"{name} is not valid JSON")


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_LENGTH:
        raise JSONRejected("number too long")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_LENGTH:
        raise JSONRejected("number too long")
    value = float(literal)
    if not math.isfinite(value):
        raise JSONRejected("number out of range")
    return value


_decoder = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant)


def _check_tree(value: Any, check_strings: bool) -> None:
    """Walk `value` without recursion: reject nesting past `MAX_DEPTH` and lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
            if check_strings:
                for key in node:
                    key.encode("utf-8")
        elif isinstance(node, list):
            children = node
        else:
            if check_strings and isinstance(node, str):
                node.encode("utf-8")
            continue
        if depth > MAX_DEPTH:
            raise JSONRejected("JSON nested too deeply")
        stack.extend((child, depth + 1) for child in children)


def loads(data: str | bytes) -> Any:
    """Decode one client message as JSON, within the guards.

    Args:
        data: The message: text, or bytes that must be UTF-8.

    Returns:
        The decoded value.

    Raises:
        JSONRejected: If the message is not UTF-8, not JSON, holds `NaN`, `Infinity`, a number
            literal longer than `MAX_NUMBER_LENGTH` or out of float range, a lone surrogate, or
            nests deeper than `MAX_DEPTH`.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JSONRejected("invalid UTF-8") from None
    else:
        text = data
    try:
        value = _decoder.decode(text)
    except JSONRejected:
        raise
    except RecursionError:
        raise JSONRejected("JSON nested too deeply") from None
    except ValueError:
        raise JSONRejected("malformed JSON") from None
    check_strings = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    if check_strings or text.count("[") + text.count("{") > MAX_DEPTH:
        try:
            _check_tree(value, check_strings)
        except UnicodeEncodeError:
            raise JSONRejected("lone surrogate in JSON string") from None
    return value


def dumps(value: Any) -> str:
    """Encode `value` as compact JSON text, refusing `NaN` and `Infinity`.

    Raises:
        ValueError: If `value` holds a float that is not finite.
        TypeError: If `value` holds something JSON cannot encode.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

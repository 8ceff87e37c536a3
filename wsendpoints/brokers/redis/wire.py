"""What a `RedisBroker` writes into Redis and reads back: bytes in, bytes out, no I/O.

- A stream entry is one field, `data`, holding JSON:
  `{"payload": str, "sender": str | null, "origin": process id, "seq": int}`.
- A presence entry is JSON `{"user": str, "process": process id}`.

Anything on our keys that does not parse as what we write decodes to None: the caller skips it
and counts it as malformed.
"""

from __future__ import annotations

from typing import Any

from ... import _json

__all__ = [
    "StreamId",
    "encode_entry",
    "encode_presence",
    "id_text",
    "parse_entry",
    "parse_id",
    "parse_presence",
    "text",
]

StreamId = tuple[int, int]
"""A stream entry id, `(milliseconds, sequence)`, ordered as Redis orders them."""


def parse_id(raw: bytes) -> StreamId:
    """Return the id of an entry, as Redis sends it (`b"1700000000000-0"`)."""
    milliseconds, _, sequence = raw.partition(b"-")
    return int(milliseconds), int(sequence)


def id_text(position: StreamId) -> str:
    """Return `position` as Redis takes it in XREAD and XRANGE."""
    return f"{position[0]}-{position[1]}"


def text(value: Any) -> str:
    """Return a Redis reply as text, for messages and logs."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def encode_entry(payload: str, sender: str | None, origin: str, seq: int) -> bytes:
    """Return the `data` field of a stream entry.

    Raises:
        UnicodeEncodeError: If the payload holds a lone surrogate, which no text frame can carry.
    """
    return _json.dumps({"payload": payload, "sender": sender, "origin": origin, "seq": seq}).encode()


def parse_entry(fields: dict[bytes, bytes]) -> tuple[str, str | None, str, int] | None:
    """Return a stream entry's `(payload, sender, origin, seq)`, or None if we did not write it."""
    try:
        data = _json.loads(fields[b"data"])
        payload, sender, origin, seq = data["payload"], data["sender"], data["origin"], data["seq"]
    except (KeyError, TypeError, ValueError):
        return None
    typed = isinstance(payload, str) and isinstance(origin, str) and type(seq) is int  # a bool is no seq
    if typed and (sender is None or isinstance(sender, str)):
        return payload, sender, origin, seq
    return None


def encode_presence(user: str, process: str) -> bytes:
    """Return a presence entry."""
    return _json.dumps({"user": user, "process": process}).encode()


def parse_presence(value: bytes) -> tuple[str, str] | None:
    """Return a presence entry's `(user, process)`, or None if we did not write it."""
    try:
        data = _json.loads(value)
        user, process = data["user"], data["process"]
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(user, str) and isinstance(process, str):
        return user, process
    return None

"""What a `RedisBroker` writes into Redis and reads back: bytes in, bytes out, no I/O.

- A stream entry has two fields: `payload`, the message's own UTF-8 bytes (nothing escaped, so
  an entry is never larger than its message plus the `meta` field), and `meta`, JSON
  `{"origin": process id, "seq": int, "sender": str | null}` (about 80 bytes plus the sender).
- The writer's script adds `n`, the entry's number in its stream, and `at`, the stream's bytes
  up to and including it (see `writer`): decimal text, 20 bytes or so. A reader that finds `n`
  jump by more than one knows how many entries were trimmed before it read them.
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


def number(fields: dict[bytes, bytes]) -> int | None:
    """Return an entry's number in its stream (`n`), or None if it has none."""
    try:
        return int(fields[b"n"])
    except (KeyError, ValueError):
        return None


def id_text(position: StreamId) -> str:
    """Return `position` as Redis takes it in XREAD and XRANGE."""
    return f"{position[0]}-{position[1]}"


def text(value: Any) -> str:
    """Return a Redis reply as text, for messages and logs."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def encode_entry(payload: str, sender: str | None, origin: str, seq: int) -> tuple[bytes, bytes]:
    """Return a stream entry's two fields, `meta` and `payload`.

    Raises:
        UnicodeEncodeError: If the payload or sender holds a lone surrogate, which no text frame can carry.
    """
    meta = _json.dumps({"origin": origin, "seq": seq, "sender": sender}).encode()
    return meta, payload.encode()


def parse_entry(fields: dict[bytes, bytes]) -> tuple[str, str | None, str, int] | None:
    """Return a stream entry's `(payload, sender, origin, seq)`, or None if we did not write it."""
    try:
        payload = fields[b"payload"].decode()
        meta = _json.loads(fields[b"meta"])
        sender, origin, seq = meta["sender"], meta["origin"], meta["seq"]
    except (KeyError, TypeError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if isinstance(origin, str) and type(seq) is int and (sender is None or isinstance(sender, str)):  # a bool is no seq
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

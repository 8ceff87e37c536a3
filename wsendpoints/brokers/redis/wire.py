"""What a `RedisBroker` writes into Redis and reads back: bytes in, bytes out, no I/O.

- A stream entry is one field, `data`, holding JSON:
  `{"payload": str, "sender": str | null, "origin": process id, "seq": int}`, and for a
  message to one user `"to": str`, for a kick also `"close": int`. A presence notice, which a
  script appends (see `scripts`), has `seq` 0: it is never sent again, so never dropped as such.
- A presence entry is JSON `{"user": str, "process": process id}`, and `"farewell": str`, the
  stream entry its name's last member leaves behind, if it has one.

Anything on our keys that does not parse as what we write decodes to None: the caller skips it
and counts it as malformed. Presence entries are read in Lua, by the scripts in `scripts`.
"""

from __future__ import annotations

from typing import Any

from ... import _json

__all__ = [
    "Entry",
    "StreamId",
    "encode_entry",
    "encode_presence",
    "id_text",
    "parse_entry",
    "parse_id",
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


def encode_entry(
    payload: str, sender: str | None, origin: str, seq: int, to: str | None = None, close: int | None = None
) -> bytes:
    """Return the `data` field of a stream entry.

    Raises:
        UnicodeEncodeError: If the payload holds a lone surrogate, which no text frame can carry.
    """
    data: dict[str, object] = {"payload": payload, "sender": sender, "origin": origin, "seq": seq}
    if to is not None:
        data["to"] = to
        if close is not None:
            data["close"] = close
    return _json.dumps(data).encode()


Entry = tuple[str, "str | None", str, int, "str | None", "int | None"]
"""A parsed stream entry: `(payload, sender, origin, seq, to, close)`."""


def parse_entry(fields: dict[bytes, bytes]) -> Entry | None:
    """Return a stream entry's `(payload, sender, origin, seq, to, close)`, or None if we did not write it."""
    try:
        data = _json.loads(fields[b"data"])
        payload, sender, origin, seq = data["payload"], data["sender"], data["origin"], data["seq"]
        to, close = data.get("to"), data.get("close")
    except (KeyError, TypeError, ValueError):
        return None
    typed = isinstance(payload, str) and isinstance(origin, str) and type(seq) is int  # a bool is no seq
    addressed = (to is None and close is None) or (isinstance(to, str) and (close is None or type(close) is int))
    if typed and addressed and (sender is None or isinstance(sender, str)):
        return payload, sender, origin, seq, to, close
    return None


def encode_presence(user: str, process: str, farewell: bytes | None = None) -> bytes:
    """Return a presence entry; `farewell` is a stream entry (`encode_entry`) to append when the name leaves."""
    data = {"user": user, "process": process}
    if farewell is not None:
        data["farewell"] = farewell.decode()
    return _json.dumps(data).encode()

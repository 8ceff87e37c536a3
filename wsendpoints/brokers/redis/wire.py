"""What a `RedisBroker` writes into Redis and reads back: bytes in, bytes out, no I/O.

- A stream entry has two fields: `payload`, the message's own UTF-8 bytes (nothing escaped, so
  an entry is never larger than its message plus the `meta` field), and `meta`, JSON
  `{"origin": process id, "seq": int, "sender": str | null}` (about 80 bytes plus the sender),
  and for a message to one user `"to": str`, for a kick also `"close": int`. A presence
  notice, which a script appends (see `scripts`), has `seq` 0: it is never sent again, so it is
  never dropped as sent again.
- The writer's script adds `n`, the entry's number in its stream, and `at`, the stream's bytes
  up to and including it (see `writer`): decimal text, 20 bytes or so. A reader that finds `n`
  jump by more than one knows how many entries were trimmed before it read them.
- A presence entry is JSON `{"user": str, "process": process id}`, and
  `"farewell": {"meta": str, "payload": str}`, the stream entry its name's last member leaves
  behind, if it has one.

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


def encode_entry(
    payload: str, sender: str | None, origin: str, seq: int, to: str | None = None, close: int | None = None
) -> tuple[bytes, bytes]:
    """Return a stream entry's two fields, `meta` and `payload`.

    Raises:
        UnicodeEncodeError: If the payload or sender holds a lone surrogate, which no text frame can carry.
    """
    fields: dict[str, object] = {"origin": origin, "seq": seq, "sender": sender}
    if to is not None:
        fields["to"] = to
        if close is not None:
            fields["close"] = close
    return _json.dumps(fields).encode(), payload.encode()


Entry = tuple[str, "str | None", str, int, "str | None", "int | None"]
"""A parsed stream entry: `(payload, sender, origin, seq, to, close)`."""


def parse_entry(fields: dict[bytes, bytes]) -> Entry | None:
    """Return a stream entry's `(payload, sender, origin, seq, to, close)`, or None if we did not write it."""
    try:
        payload = fields[b"payload"].decode()
        meta = _json.loads(fields[b"meta"])
        sender, origin, seq = meta["sender"], meta["origin"], meta["seq"]
        to, close = meta.get("to"), meta.get("close")
    except (KeyError, TypeError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    typed = isinstance(origin, str) and type(seq) is int  # a bool is no seq
    addressed = (to is None and close is None) or (isinstance(to, str) and (close is None or type(close) is int))
    if typed and addressed and (sender is None or isinstance(sender, str)):
        return payload, sender, origin, seq, to, close
    return None


def encode_presence(user: str, process: str, farewell: tuple[bytes, bytes] | None = None) -> bytes:
    """Return a presence entry; `farewell` is a stream entry (`encode_entry`) to append when the name leaves."""
    data: dict[str, object] = {"user": user, "process": process}
    if farewell is not None:
        meta, payload = farewell
        data["farewell"] = {"meta": meta.decode(), "payload": payload.decode()}
    return _json.dumps(data).encode()

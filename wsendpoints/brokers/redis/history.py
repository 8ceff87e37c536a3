"""A room's history: the entries its stream still holds, read with XRANGE (no state, one round trip).

The stream is the history. It keeps about `stream_maxlen` entries (trimmed with `MAXLEN ~`,
so never fewer) and is deleted `stream_ttl` seconds after its last entry; entry ids are the
message ids. An id the stream no longer holds (trimmed, expired, Redis restarted without its
data) or that is not a stream id at all means no recovery, never an error. Messages to one
user (`publish_to`) are in the stream too, with their `to`: the endpoints leave them out.
"""

from __future__ import annotations

import re
from typing import Any

from ..base import History, Message
from .connection import Clients, Shared, reaching_redis
from .wire import parse_entry

__all__ = ["read_history", "stream_position"]

_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def stream_position(message_id: str) -> tuple[int, int] | None:
    """Return a stream entry id as `(milliseconds, sequence)`, or None if it is not one."""
    if not _ID.fullmatch(message_id):
        return None
    milliseconds, _, sequence = message_id.partition("-")
    return int(milliseconds), int(sequence)


async def read_history(shared: Shared, clients: Clients, room: str, since: str | None, limit: int | None) -> History:
    """Return `room`'s messages after `since` (the first `limit`), or its latest `limit`; see `Broker.history`.

    Raises:
        BrokerError: If Redis refuses (the room's key holds something other than a stream).
        BrokerUnavailableError: If Redis cannot be reached.
    """
    key = shared.keys.room(room)
    commands = clients.commands
    with reaching_redis(shared.safe_url):
        if since is None:
            if limit == 0:
                return History([], recovered=True)
            latest: list[Any] = await commands.xrevrange(key, count=limit)  # type: ignore[assignment]
            return History(_messages(shared, key, latest[::-1]), recovered=True)
        if stream_position(since) is None:
            return History([], recovered=False)
        async with commands.pipeline(transaction=False) as pipe:
            pipe.xrange(key, min=since, max=since, count=1)
            pipe.xrange(key, min=f"({since}", max="+", count=limit)
            found, newer = await pipe.execute()
    if not found:
        return History([], recovered=False)
    return History(_messages(shared, key, newer), recovered=True)


def _messages(shared: Shared, key: bytes, entries: list[Any]) -> list[Message]:
    """Return the messages of `entries`, each once: an entry appended twice (sent again after Redis
    lost the writer's mark, see `Writer`) is known by its `origin` and `seq`."""
    messages = []
    seen: set[tuple[str, int]] = set()
    for raw_id, fields in entries:
        parsed = parse_entry(fields)
        if parsed is None:
            shared.skip_malformed("stream entry", key, fields)
            continue
        payload, sender, origin, seq, to, close = parsed
        if seq and (origin, seq) in seen:
            continue
        seen.add((origin, seq))
        messages.append(Message(payload, sender, raw_id.decode(), to, close))
    return messages

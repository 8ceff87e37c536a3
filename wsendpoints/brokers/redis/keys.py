"""The Redis keys of one `RedisBroker`: every key name is made here and nowhere else.

Where `{p}` is the `prefix` and `{room}` the room name percent-encoded (so that `/`, `:`, `*`,
`?`, `[` or a shared beginning never make two rooms meet):

- `{p}:room:{room}`: the room's stream (see `wire`);
- `{p}:tally:{room}`: a small hash beside the stream: the number and bytes of its last entry,
  when its `max_rooms` score is refreshed next, and each publishing process's highest `seq`
  appended, so that a message sent twice goes in once (see `writer`);
- `{p}:members:{room}`: the room's presence hash (see `presence`);
- `{p}:names:{room}`: how many members each user name has in the room (see `scripts`);
- `{p}:process:{id}`: a process's heartbeat;
- `{p}:rooms`: a sorted set of the rooms' stream keys, each scored with when it expires, which
  `max_rooms` counts (see `writer`);
- `{p}:writer:{id}`: the writer's mark, whose loss tells that Redis lost this process's data;
- `{p}:wake:{id}`: a one-entry stream the process appends to so that its reader sends its
  blocking XREAD again with the rooms as they are now.

Keeping the names in one place is what a move to Redis Cluster needs: a hash tag (`{...}`)
added here is the only change for keys that must share a slot.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["Keys"]


class Keys:
    """The Redis keys of one broker.

    Args:
        prefix: Beginning of every key.
        process_id: The broker's id.
    """

    def __init__(self, prefix: str, process_id: str) -> None:
        self.prefix = prefix
        self.heartbeat = self.heartbeat_of(process_id)
        self.heartbeats = self._key("process", "")
        """The beginning of every process's heartbeat key, which the presence scripts end with its id."""
        self.writer = self._key("writer", process_id)
        self.wake = self._key("wake", process_id)
        self.rooms = f"{prefix}:rooms".encode("utf-8", "surrogatepass")

    def _key(self, kind: str, name: str) -> bytes:
        return f"{self.prefix}:{kind}:{name}".encode("utf-8", "surrogatepass")

    def room(self, room: str) -> bytes:
        """Return the key of `room`'s stream."""
        return self._key("room", quote(room.encode("utf-8", "surrogatepass"), safe=""))

    def tally(self, room: str) -> bytes:
        """Return the key of `room`'s tally, the hash that the appends keep beside its stream."""
        return self._key("tally", quote(room.encode("utf-8", "surrogatepass"), safe=""))

    def stream(self, room: str) -> tuple[bytes, bytes]:
        """Return the keys of `room`'s stream and of its tally, what an append needs."""
        name = quote(room.encode("utf-8", "surrogatepass"), safe="")
        return self._key("room", name), self._key("tally", name)

    def members(self, room: str) -> bytes:
        """Return the key of `room`'s presence hash."""
        return self._key("members", quote(room.encode("utf-8", "surrogatepass"), safe=""))

    def names(self, room: str) -> bytes:
        """Return the key of `room`'s count of members per user name."""
        return self._key("names", quote(room.encode("utf-8", "surrogatepass"), safe=""))

    def heartbeat_of(self, process_id: str) -> bytes:
        """Return the key of the heartbeat of the process `process_id`."""
        return self._key("process", process_id)

"""Presence: who is in each room, across processes, and the heartbeat that keeps it true.

- `{p}:members:{room}`: a hash per room, member id -> presence entry (see `wire`), expiring
  `presence_ttl` after this process last refreshed it;
- `{p}:names:{room}`: a hash per room, user name -> how many members have it, kept with the
  members by the scripts in `scripts`, which also append the greetings and farewells;
- `{p}:process:{id}`: the process's heartbeat, refreshed every `presence_ttl / 3` seconds and
  expiring after `presence_ttl`. Members of a process whose heartbeat is gone (killed, or hung)
  are pruned by whoever counts the room next, and at every heartbeat by each process with
  members in the room: the farewells of the names that leave with them are appended once.

A leave that Redis could not take is remembered and sent with the next heartbeat. If the
heartbeat was gone (Redis lost its data, or this process hung), the process writes all its
members again.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from ... import _json
from ...exceptions import TooManyRoomsError
from ..base import Entry
from .connection import FAILED, Clients, Shared, reaching_redis
from .scripts import DEPART, ENTER, PRUNE, RESTORE
from .wire import encode_presence, text

__all__ = ["Presence"]


class Presence:
    """This process's members, as it keeps them in Redis.

    Args:
        shared: The broker's settings and counters.
        max_rooms: Most rooms with a stream or members at once, per prefix; 0 for no limit.
        stream_maxlen: About how many messages each room's stream keeps (for the notices).
        stream_ttl_ms: Milliseconds after its last message that a room's stream is deleted.
    """

    def __init__(
        self, shared: Shared, max_rooms: int = 0, *, stream_maxlen: int = 1_000, stream_ttl_ms: int = 3_600_000
    ) -> None:
        self.shared = shared
        self.max_rooms = max_rooms
        self.stream_maxlen = stream_maxlen
        self.stream_ttl_ms = stream_ttl_ms
        self.beat_value = _json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        self.local: dict[str, dict[str, tuple[str, bytes]]] = {}
        """Room -> member -> (user, presence entry), for the members of this process."""
        self.pending_leaves: set[tuple[str, str]] = set()
        """Leaves Redis could not take yet: `(room, member)`."""
        self._scripts: dict[str, AsyncScript] = {}

    def _script(self, clients: Clients, source: str) -> AsyncScript:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = clients.commands.register_script(source)
        return script

    def _keys(self, room: str) -> list[bytes]:
        keys = self.shared.keys
        return [keys.members(room), keys.names(room), keys.room(room), keys.rooms, keys.tally(room)]

    def _notice_args(self) -> list[Any]:
        """What every script takes first: where heartbeats are, and how to append a notice."""
        return [self.shared.keys.heartbeats, self.stream_maxlen, self.stream_ttl_ms, self.max_rooms]

    async def enter(
        self,
        clients: Clients,
        room: str,
        member: str,
        user: str,
        *,
        greeting: tuple[bytes, bytes] | None = None,
        farewell: tuple[bytes, bytes] | None = None,
        unique: bool = False,
        max_members: int | None = None,
    ) -> Entry:
        """Add `member` named `user` to `room`, appending `greeting` if the name is new there (see `ENTER`).

        `greeting` and `farewell` are stream entries, `(meta, payload)`.

        Raises:
            TooManyRoomsError: If `room` would be a new room past `max_rooms`.
            BrokerUnavailableError: If Redis cannot be reached.
            BrokerError: If Redis refuses, e.g. because the room's presence key holds something else.
        """
        shared = self.shared
        entry = encode_presence(user, shared.process_id, farewell)
        args = [*self._notice_args(), shared.ttl_ms, member, entry, user, "1" if unique else ""]
        args += ["" if max_members is None else max_members, *(greeting or (b"", b""))]
        try:
            with reaching_redis(shared.safe_url):
                if self.max_rooms and not await self._reserve(clients, room):
                    raise TooManyRoomsError(f"too many rooms (max_rooms={self.max_rooms})")
                previous = await clients.commands.set(
                    shared.keys.heartbeat, self.beat_value, px=shared.ttl_ms, get=True
                )
                if previous is None:
                    await self.register(clients.commands)
                reply = await self._script(clients, ENTER)(keys=self._keys(room), args=args)
        except BaseException:
            self.pending_leaves.add((room, member))  # in case Redis took it before the reply was lost
            raise
        refused, count, first, after, names, malformed = reply
        self._skip_malformed(room, malformed)
        if not refused:
            self.local.setdefault(room, {})[member] = (user, entry)
        reason = text(refused) or None
        return Entry(0 if reason else int(count), bool(first), tuple(sorted(map(text, names))), text(after), reason)

    async def leave(self, clients: Clients | None, room: str, member: str) -> bool:
        """Remove `member` from `room`, in Redis unless `clients` is None (closing); never raises.

        Returns:
            Whether it was its name's last member (its farewell was appended); False if Redis
            could not be reached (the leave is sent again with the next heartbeat).
        """
        if not self._drop(room, member) or clients is None:
            return False
        try:
            last = await self._script(clients, DEPART)(keys=self._keys(room), args=[*self._notice_args(), member])
        except FAILED:
            self.pending_leaves.add((room, member))
            return False
        return bool(last)

    def forget(self, room: str, member: str) -> None:
        """Remove `member` from `room` here at once, and from Redis with the next heartbeat."""
        self._drop(room, member)
        self.pending_leaves.add((room, member))

    def _drop(self, room: str, member: str) -> bool:
        """Remove `member` from this process's rooms; return whether it was there."""
        present = self.local.get(room, {})
        if member not in present:
            return False
        del present[member]
        if not present:
            del self.local[room]
        return True

    async def members(self, clients: Clients, room: str) -> list[str]:
        """Return the user names present in `room` in every live process, sorted, each once.

        Raises:
            BrokerUnavailableError: If Redis cannot be reached.
            BrokerError: If Redis refuses, e.g. because the room's presence key holds something else.
        """
        with reaching_redis(self.shared.safe_url):
            names, malformed = await self._script(clients, PRUNE)(keys=self._keys(room), args=self._notice_args())
        self._skip_malformed(room, malformed)
        return sorted(map(text, names))

    def _skip_malformed(self, room: str, malformed: list[bytes]) -> None:
        for value in malformed:
            self.shared.skip_malformed("presence entry", self.shared.keys.members(room), value)

    async def beat(self, clients: Clients) -> None:
        """Refresh the heartbeat, the writer's mark and this process's rooms; prune them; send missed leaves."""
        shared = self.shared
        rooms = list(self.local)
        leaves = list(self.pending_leaves)
        prune, depart = self._script(clients, PRUNE), self._script(clients, DEPART)
        async with clients.commands.pipeline(transaction=False) as pipe:
            pipe.set(shared.keys.heartbeat, self.beat_value, px=shared.ttl_ms, get=True)
            pipe.pexpire(shared.keys.writer, shared.ttl_ms)  # refreshed, never made again: the writer's work
            for room_name in rooms:
                pipe.pexpire(shared.keys.members(room_name), shared.ttl_ms)
                pipe.pexpire(shared.keys.names(room_name), shared.ttl_ms)
                await prune(keys=self._keys(room_name), args=self._notice_args(), client=pipe)
            for room_name, member in leaves:
                await depart(keys=self._keys(room_name), args=[*self._notice_args(), member], client=pipe)
            if self.max_rooms:
                for room_name in rooms:
                    await self._reserve(clients, room_name, pipe)
            results = await pipe.execute(raise_on_error=False)
        self.pending_leaves.difference_update(leaves)
        if results[0] is None:  # expired (we hung), or Redis lost its data
            await self.register(clients.commands)

    async def _reserve(self, clients: Clients, room: str, pipe: Pipeline | None = None) -> bool:
        """Count `room` among the live rooms for `presence_ttl` more; False if it is new and past `max_rooms`."""
        keys = [self.shared.keys.rooms, self.shared.keys.room(room)]
        return bool(await clients.reserve(keys=keys, args=[self.max_rooms, self.shared.ttl_ms], client=pipe))

    async def register(self, commands: Redis) -> None:
        """Write the heartbeat and every member of this process (those Redis lost)."""
        shared = self.shared
        restore = self._scripts.get(RESTORE) or commands.register_script(RESTORE)
        self._scripts[RESTORE] = restore
        async with commands.pipeline(transaction=False) as pipe:
            pipe.set(shared.keys.heartbeat, self.beat_value, px=shared.ttl_ms)
            for room, present in self.local.items():
                args: list[Any] = [shared.ttl_ms]
                for member, (user, entry) in present.items():
                    args += [member, entry, user]
                await restore(keys=[shared.keys.members(room), shared.keys.names(room)], args=args, client=pipe)
            await pipe.execute()

    async def goodbye(self, clients: Clients) -> None:
        """Remove this process's keys and members from Redis, appending the farewells of names that leave."""
        keys = self.shared.keys
        depart = self._script(clients, DEPART)
        async with clients.commands.pipeline(transaction=False) as pipe:
            pipe.delete(keys.heartbeat, keys.writer, keys.wake)
            for room, present in self.local.items():
                for member in present:
                    await depart(keys=self._keys(room), args=[*self._notice_args(), member], client=pipe)
            await pipe.execute()

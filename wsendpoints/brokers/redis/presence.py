"""Presence: who is in each room, across processes, and the heartbeat that keeps it true.

- `{p}:members:{room}`: a hash per room, member id -> presence entry (see `wire`), expiring
  `presence_ttl` after this process last refreshed it;
- `{p}:process:{id}`: the process's heartbeat, refreshed every `presence_ttl / 3` seconds and
  expiring after `presence_ttl`. Members of a process whose heartbeat is gone (killed, or hung)
  are pruned by whoever counts the room next.

A leave that Redis could not take is remembered and sent with the next heartbeat. If the
heartbeat was gone (Redis lost its data, or this process hung), the process writes all its
members again.
"""

from __future__ import annotations

import os
import socket

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from ... import _json
from ...exceptions import TooManyRoomsError
from .connection import FAILED, Clients, Shared, reaching_redis
from .wire import encode_presence, parse_presence

__all__ = ["Presence"]


class Presence:
    """This process's members, as it keeps them in Redis.

    Args:
        shared: The broker's settings and counters.
    """

    def __init__(self, shared: Shared, max_rooms: int) -> None:
        self.shared = shared
        self.max_rooms = max_rooms
        self.beat_value = _json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        self.local: dict[str, dict[str, str]] = {}
        """Room -> member -> user, for the members of this process."""
        self.pending_leaves: set[tuple[str, str]] = set()
        """Leaves Redis could not take yet: `(room, member)`."""

    async def join(self, clients: Clients, room: str, member: str, user: str) -> int:
        """Add `member` named `user` to `room`; return how many live members `room` has.

        Raises:
            TooManyRoomsError: If `room` would be a new room past `max_rooms`.
            BrokerUnavailableError: If Redis cannot be reached.
            BrokerError: If Redis refuses, e.g. because the room's presence key holds something else.
        """
        shared = self.shared
        key = shared.keys.members(room)
        self.local.setdefault(room, {})[member] = user
        with reaching_redis(shared.safe_url):
            if self.max_rooms and not await self._reserve(clients, room):
                raise TooManyRoomsError(f"too many rooms (max_rooms={self.max_rooms})")
            async with clients.commands.pipeline(transaction=False) as pipe:
                pipe.set(shared.keys.heartbeat, self.beat_value, px=shared.ttl_ms, get=True)
                pipe.hset(key, member, encode_presence(user, shared.process_id))
                pipe.pexpire(key, shared.ttl_ms)
                previous, _, _ = await pipe.execute()
            if previous is None:
                await self.register(clients.commands)
            return len(await self._alive(clients, room))

    async def leave(self, clients: Clients | None, room: str, member: str) -> None:
        """Remove `member` from `room`, in Redis unless `clients` is None (closing); never raises."""
        if not self._drop(room, member) or clients is None:
            return
        try:
            await clients.commands.hdel(self.shared.keys.members(room), member)
        except FAILED:
            self.pending_leaves.add((room, member))

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
            return sorted(set(await self._alive(clients, room)))

    async def beat(self, clients: Clients) -> None:
        """Refresh the heartbeat, the writer's mark and this process's rooms; send missed leaves."""
        shared = self.shared
        rooms = list(self.local)
        leaves = list(self.pending_leaves)
        async with clients.commands.pipeline(transaction=False) as pipe:
            pipe.set(shared.keys.heartbeat, self.beat_value, px=shared.ttl_ms, get=True)
            pipe.pexpire(shared.keys.writer, shared.ttl_ms)  # refreshed, never made again: the writer's work
            for room_name in rooms:
                pipe.pexpire(shared.keys.members(room_name), shared.ttl_ms)
            for room_name, member in leaves:
                pipe.hdel(shared.keys.members(room_name), member)
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
        """Write the heartbeat and every member of this process."""
        shared = self.shared
        async with commands.pipeline(transaction=False) as pipe:
            pipe.set(shared.keys.heartbeat, self.beat_value, px=shared.ttl_ms)
            for room, present in self.local.items():
                key = shared.keys.members(room)
                entries = {member: encode_presence(user, shared.process_id) for member, user in present.items()}
                pipe.hset(key, mapping=entries)  # type: ignore[arg-type]
                pipe.pexpire(key, shared.ttl_ms)
            await pipe.execute()

    async def goodbye(self, clients: Clients) -> None:
        """Remove this process's keys and members from Redis."""
        keys = self.shared.keys
        async with clients.commands.pipeline(transaction=False) as pipe:
            pipe.delete(keys.heartbeat, keys.writer, keys.wake)
            for room, present in self.local.items():
                pipe.hdel(keys.members(room), *present)
            await pipe.execute()

    async def _alive(self, clients: Clients, room: str) -> list[str]:
        """Return the users of `room`'s live members (one per member), pruning those of dead processes."""
        key = self.shared.keys.members(room)
        raw: dict[bytes, bytes] = await clients.commands.hgetall(key)  # type: ignore[assignment]
        entries: list[tuple[bytes, str, str]] = []
        for member, value in raw.items():
            parsed = parse_presence(value)
            if parsed is None:
                self.shared.skip_malformed("presence entry", key, value)
            else:
                entries.append((member, *parsed))
        processes = sorted({process for _, _, process in entries})
        async with clients.commands.pipeline(transaction=False) as pipe:
            for process in processes:
                pipe.exists(self.shared.keys.heartbeat_of(process))
            beating = await pipe.execute()
        dead = {process for process, count in zip(processes, beating, strict=True) if not count}
        gone = [member for member, _, process in entries if process in dead]
        if gone:
            await clients.commands.hdel(key, *gone)
        return [user for _, user, process in entries if process not in dead]

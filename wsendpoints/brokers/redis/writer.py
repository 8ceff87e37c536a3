"""The writer: appends published messages to the rooms' streams, in order, through outages.

`publish` queues a message; one task per process appends the queue in batches of up to
`_BATCH` messages, one round trip each (a Lua script, so a batch is one command). While Redis
is unreachable the queue is the outage buffer: up to `buffer_size` messages, past which
messages are dropped, counted and logged. Every batch is guarded by the writer's mark (a key
of this process): if Redis lost it, Redis lost its data (a restart without persistence), and
the writer sends its last `_REPLAY_SECONDS` of confirmed messages again before going on;
readers drop what they already had by `origin` and `seq` (see `reader`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass

from .connection import FAILED, Backoff, Clients, Shared, logger

__all__ = ["APPEND", "Writer"]

_BATCH = 500
"""Most messages appended to Redis in one round trip."""

_REPLAY_SECONDS = 1.0
"""After Redis lost its data, messages it confirmed this long before the loss are sent again."""

APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local ids = {}
for i = 2, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind == 'stream' or kind == 'none' then
    ids[i - 1] = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i + 1])
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    ids[i - 1] = 0
  end
end
return ids
"""
"""Append a batch of messages (KEYS[2:], ARGV[3:]) unless KEYS[1], the writer's mark, is gone.

Returns nil when the mark is gone (Redis lost its data: nothing is appended), else per message
its entry id, or 0 when the room's key holds something other than a stream.
"""


@dataclass(eq=False, slots=True)
class _Outgoing:
    """A message on its way to a room's stream."""

    key: bytes
    data: bytes
    done: asyncio.Future[None] | None
    """Resolved once Redis has it (or once Redis is found unreachable); None for nobody waiting."""

    def settle(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)
        self.done = None


class Writer:
    """The queue of one process's messages on their way to Redis, and the task that empties it.

    Args:
        shared: The broker's settings and counters.
        buffer_size: Messages kept while Redis is unreachable.
        stream_maxlen: About how many messages each room's stream keeps.
        stream_ttl: Seconds after its last message that a room's stream is deleted.
    """

    def __init__(self, shared: Shared, *, buffer_size: int, stream_maxlen: int, stream_ttl: float) -> None:
        self.shared = shared
        self.buffer_size = buffer_size
        self.stream_maxlen = stream_maxlen
        self.stream_ttl_ms = max(1, int(stream_ttl * 1000))
        self.queue: deque[_Outgoing] = deque()
        self.queued = asyncio.Event()
        self.recent: deque[tuple[float, _Outgoing]] = deque(maxlen=buffer_size)
        """Messages Redis confirmed, with when: what is sent again if Redis lost its data."""
        self.connected = True
        self.overflow = 0
        self.lost_at: float | None = None
        """When this process lost Redis (set by the reader), until Redis is found with our data."""

    async def publish(self, key: bytes, data: bytes) -> None:
        """Queue `data` for the stream `key`; return once Redis has it, or at once while it is unreachable."""
        if len(self.queue) >= self.buffer_size:
            self.shared.dropped += 1
            if not self.overflow:
                logger.warning(
                    "RedisBroker buffer full (%d messages not yet in Redis at %s): dropping messages until it has room",
                    self.buffer_size,
                    self.shared.safe_url,
                )
            self.overflow += 1
            return
        outgoing = _Outgoing(key, data, asyncio.get_running_loop().create_future() if self.connected else None)
        self.queue.append(outgoing)
        self.queued.set()
        if outgoing.done is not None:
            await outgoing.done

    def note_lost(self) -> None:
        """Remember when Redis was lost, for the replay if it comes back without our data."""
        self.lost_at = time.monotonic() if self.lost_at is None else self.lost_at

    def note_kept(self) -> None:
        """Redis came back with our data: nothing need be sent again."""
        self.lost_at = None

    async def run(self, clients: Clients) -> None:
        """Append the queue to Redis as it fills, forever; through outages, with backoff."""
        backoff = Backoff(self.shared.max_backoff)
        while True:
            if not self.queue:
                self.queued.clear()
                await self.queued.wait()
                continue
            try:
                await self.write_batch(clients)
            except FAILED as exc:
                if self.connected:
                    self.connected = False
                    logger.warning(
                        "RedisBroker could not append to Redis at %s (%s): buffering up to %d messages",
                        self.shared.safe_url,
                        exc,
                        self.buffer_size,
                    )
                for outgoing in self.queue:
                    outgoing.settle()
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()

    async def flush(self, clients: Clients) -> None:
        """Append everything queued."""
        while self.queue:
            await self.write_batch(clients)

    def abandon(self) -> None:
        """Drop what is still queued (the broker is closing), counting it and releasing its publishers."""
        if self.queue:
            self.shared.dropped += len(self.queue)
            logger.warning(
                "RedisBroker closed with %d messages that Redis at %s did not take",
                len(self.queue),
                self.shared.safe_url,
            )
        for outgoing in self.queue:
            outgoing.settle()

    async def write_batch(self, clients: Clients) -> None:
        """Append the first messages of the queue to their streams, or prepare to after Redis lost its data."""
        batch = list(itertools.islice(self.queue, _BATCH))
        ids = await clients.append(
            keys=[self.shared.keys.writer, *(outgoing.key for outgoing in batch)],
            args=[self.stream_maxlen, self.stream_ttl_ms, *(outgoing.data for outgoing in batch)],
        )
        if ids is None:
            await self._restore(clients)
            return
        now = time.monotonic()
        for outgoing, entry_id in zip(batch, ids, strict=True):
            self.queue.popleft()
            if entry_id == 0:
                self.shared.dropped += 1
                self.shared.skip_malformed(
                    "key where a room's stream belongs (message dropped)", outgoing.key, outgoing.data
                )
            else:
                self.recent.append((now, outgoing))
            outgoing.settle()
        while self.recent and self.recent[0][0] < now - _REPLAY_SECONDS and self.lost_at is None:
            self.recent.popleft()
        if not self.connected:
            self.connected = True
            logger.warning("RedisBroker appends to Redis at %s again", self.shared.safe_url)
        if self.overflow:
            logger.warning("RedisBroker dropped %d messages while its buffer was full", self.overflow)
            self.overflow = 0

    async def _restore(self, clients: Clients) -> None:
        """Redis lost our writer mark, so what it confirmed just before may be lost: queue it again."""
        logger.warning(
            "Redis at %s lost this process's data (restarted without persistence, or this process hung for "
            "longer than presence_ttl): sending its last messages again",
            self.shared.safe_url,
        )
        await clients.commands.set(self.shared.keys.writer, b"1", px=self.shared.ttl_ms)
        since = (time.monotonic() if self.lost_at is None else self.lost_at) - _REPLAY_SECONDS
        again = [outgoing for confirmed, outgoing in self.recent if confirmed >= since]
        self.recent.clear()
        self.lost_at = None
        self.queue.extendleft(reversed(again))

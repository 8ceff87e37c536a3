"""The writer: appends published messages to the rooms' streams, in order, through outages.

`publish` queues a message; one task per process appends the queue in batches of up to
`_BATCH` messages, one round trip each (a Lua script, so a batch is one command). A message
that finds nothing queued or on its way is appended by its publisher itself (see `publish`);
either way one batch is on its way at a time, so the queue's order is Redis's. While Redis
is unreachable the queue is the outage buffer: up to `buffer_size` messages and `buffer_bytes`
bytes, past which messages are dropped, counted and logged. A batch Redis refuses (out of
memory) is dropped and its publishers raise `BrokerError`; a new room past `max_rooms` raises
`TooManyRoomsError`. Every batch is guarded by the writer's mark (a key
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

from redis.exceptions import ReadOnlyError, ResponseError

from ...exceptions import BrokerError, TooManyRoomsError
from .connection import FAILED, Backoff, Clients, Shared, logger

__all__ = ["APPEND", "RESERVE", "ROOMS_LUA", "Writer"]

_BATCH = 500
"""Most messages appended to Redis in one round trip."""

_REPLAY_SECONDS = 1.0
"""After Redis lost its data, messages it confirmed this long before the loss are sent again."""

ROOMS_LUA = """
-- The number in field `name` of a stream entry's flat field list, 0 when it has none.
local function number(fields, name)
  for j = 1, #fields, 2 do
    if fields[j] == name then
      return tonumber(fields[j + 1]) or 0
    end
  end
  return 0
end

local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

local function decimal(value)
  return string.format('%.0f', value)
end

-- May `stream` be one more room? `rooms` scores each room with when it expires. Read-only, so
-- that the script's first write is a command Redis refuses when it is out of memory: once a
-- script has written, Redis lets it finish.
local function admit(rooms, stream, max_rooms, now)
  if max_rooms == 0 then
    return true
  end
  local expires = redis.call('ZSCORE', rooms, stream)
  if (expires and tonumber(expires) > now) or redis.call('EXISTS', stream) == 1 then
    return true
  end
  return redis.call('ZCOUNT', rooms, '(' .. now, '+inf') < max_rooms
end

-- Score `stream` in `rooms` with when it expires, now `now`. Expired rooms are removed as a new
-- one is added (ZCOUNT counts only live ones meanwhile), so the set holds at most `max_rooms`
-- live rooms plus those that expired since the last one was added.
local function keep(rooms, stream, max_rooms, expires, now)
  if max_rooms > 0 then
    if redis.call('ZADD', rooms, 'GT', expires, stream) == 1 then
      redis.call('ZREMRANGEBYSCORE', rooms, '-inf', now)
    end
    local left = expires - now
    if redis.call('PTTL', rooms) < left then
      redis.call('PEXPIRE', rooms, math.max(left, 1))
    end
  end
end

-- How often, in ms, a room's score among the rooms and its tally's TTL are refreshed.
local REFRESH = 1000

-- The tally of `stream`: the number `n` and bytes `at` of its last entry, `lo`, its bytes before
-- its first entry as last seen (never more than they are: trimming only raises them), `due`,
-- when its score among the rooms is next refreshed, and the highest `seq` appended from
-- `origin` (its field, `o:` and a process id; nil for none). Without a tally (a new room, or
-- one Redis lost), from the stream's last entry, due now, and no `seq`. Nil when the stream's
-- key holds something else.
local function tally_of(tally, stream, origin)
  local kept = redis.pcall('HMGET', tally, 'n', 'at', 'lo', 'due', origin or 'due')
  if not kept.err and kept[1] then
    return tonumber(kept[1]) or 0, tonumber(kept[2]) or 0, tonumber(kept[3]) or 0, tonumber(kept[4]) or 0,
      tonumber(kept[5]) or 0
  end
  local head = redis.pcall('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if head.err then
    return nil
  end
  local last = head[1]
  if last then
    return number(last[2], 'n'), number(last[2], 'at'), 0, 0, 0
  end
  return 0, 0, 0, 0, 0
end

-- How many processes' `seq` fields a tally may hold (beside `n`, `at`, `lo` and `due`) before
-- those of processes gone are dropped.
local ORIGINS = 32

-- Drop from `tally` the `seq` fields of processes whose heartbeat (`heartbeats` .. id) is gone
-- (stopped, or hung past `presence_ttl`) once it holds more than ORIGINS: a room in use for
-- months keeps a field per process that publishes there, not per process that ever did.
local function forget_gone(tally, heartbeats)
  local size = redis.pcall('HLEN', tally)
  if type(size) ~= 'number' or size <= ORIGINS + 4 then -- n, at, lo, due and ORIGINS processes
    return
  end
  for _, name in ipairs(redis.call('HKEYS', tally)) do
    if string.sub(name, 1, 2) == 'o:' and redis.call('EXISTS', heartbeats .. string.sub(name, 3)) == 0 then
      redis.call('HDEL', tally, name)
    end
  end
end

-- Drop the oldest entries until the stream holds at most `budget` bytes past what it held
-- before them (`at` of an entry: the stream's bytes up to and including it). Each entry is
-- looked at once before it goes: amortized O(1) per message. Returns the stream's bytes before
-- its first entry now.
local function trim_bytes(stream, floor)
  local count = 2 -- one to drop, one to keep: what a stream at its budget usually needs
  while true do
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', count)
    count = math.min(count * 2, 64)
    for k, entry in ipairs(head) do
      local at = number(entry[2], 'at')
      if at > floor then
        if k > 1 then
          redis.call('XTRIM', stream, 'MINID', entry[1])
          return number(head[k - 1][2], 'at')
        end
        local fields, size = entry[2], 0
        for j = 1, #fields, 2 do
          if fields[j] == 'meta' or fields[j] == 'payload' then
            size = size + #fields[j + 1]
          end
        end
        return at - size
      end
    end
    redis.call('XTRIM', stream, 'MAXLEN', redis.call('XLEN', stream) - #head)
  end
end

-- Append the entry (`meta`, `payload`) to `stream`, numbered and counted in its `tally` (see
-- `APPEND`); `room` holds the settings: maxlen, ttl (ms), budget (bytes), max_rooms, rooms (the
-- sorted set), now, checked (true when the room is known to be admitted) and heartbeats (the
-- heartbeat keys' prefix, to drop the `seq` fields of processes gone; nil to keep them). `origin` (the
-- tally's field of the publishing process) and `seq` (the message's number there, as text) make
-- the append idempotent: a `seq` no higher than the last one appended from `origin` is not
-- appended again; nil for a notice, never sent twice. Returns the entry id, 0 when the key holds
-- something other than a stream, -1 for a new room past max_rooms, or -2 when it was appended before.
local function append(stream, tally, meta, payload, room, origin, seq)
  local count, at, lo, due, last = tally_of(tally, stream, origin)
  if count == nil then
    return 0
  end
  if seq and tonumber(seq) <= last then
    return -2
  end
  local now = room.now
  local refresh = now >= due
  if refresh and not room.checked and not admit(room.rooms, stream, room.max_rooms, now) then
    return -1
  end
  at = at + #meta + #payload
  local n, a = decimal(count + 1), decimal(at)
  local id = redis.pcall('XADD', stream, 'MAXLEN', '~', room.maxlen, '*', 'meta', meta, 'payload', payload,
    'n', n, 'at', a)
  if type(id) == 'table' then
    if string.sub(id.err, 1, 9) == 'WRONGTYPE' then
      return 0
    end
    error(id) -- refused (out of memory): the whole script is
  end
  local fields = {'n', n, 'at', a}
  if seq then
    fields[#fields + 1], fields[#fields + 2] = origin, seq
  end
  if at - lo > room.budget then
    fields[#fields + 1], fields[#fields + 2] = 'lo', decimal(trim_bytes(stream, at - room.budget))
  end
  redis.call('PEXPIRE', stream, room.ttl)
  if refresh then
    keep(room.rooms, stream, room.max_rooms, now + room.ttl + REFRESH, now)
    fields[#fields + 1], fields[#fields + 2] = 'due', decimal(now + REFRESH)
  end
  redis.pcall('HSET', tally, unpack(fields))
  if refresh then
    redis.call('PEXPIRE', tally, room.ttl + 2 * REFRESH)
    if room.heartbeats then
      forget_gone(tally, room.heartbeats)
    end
  end
  return id
end
"""

APPEND = (
    ROOMS_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local room = {maxlen = ARGV[1], ttl = tonumber(ARGV[2]), budget = tonumber(ARGV[3]), max_rooms = tonumber(ARGV[4]),
  rooms = KEYS[2], now = now_ms(), checked = false, heartbeats = ARGV[6]}
local ids, j = {}, 7
for i = 3, #KEYS, 2 do
  ids[#ids + 1] = append(KEYS[i], KEYS[i + 1], ARGV[j], ARGV[j + 1], room, ARGV[5], ARGV[j + 2])
  j = j + 3
end
return ids
"""
)
"""Append a batch of messages (a stream and its tally per message from KEYS[3], and three ARGV
each, `meta`, `payload` and `seq`, from ARGV[7]) of one process (its tally field, `o:` and its
id, in ARGV[5]; the heartbeat keys' prefix in ARGV[6]) unless KEYS[1], the writer's mark, is gone.

Each entry also gets `n`, its number in the stream, and `at`, the stream's bytes (`meta` plus
`payload`) up to and including it: the stream keeps the last `stream_bytes` (ARGV[3]) of
messages plus the one that straddles the line, and a reader that finds `n` jump knows how many
entries were trimmed before it read them. Returns nil when the mark is gone (Redis lost its
data: nothing is appended), else per message its entry id, 0 when the room's key holds
something other than a stream, -1 when it would be a new room past `max_rooms` (ARGV[4], 0
for no limit) in the sorted set KEYS[2], or -2 when Redis has it already.

Appending is idempotent: the tally keeps each process's highest `seq` appended to the room
(field `o:<process id>`), and a message whose `seq` is no higher is not appended again. The
fields of processes whose heartbeat is gone are dropped once a tally holds more than 36 fields
(looked at with the room's once-a-second refresh: one HLEN), so a tally holds one field per live
process that published into the room, plus about 32 at most. A message is
sent twice when its first attempt ran in Redis but its reply never came back (its publisher
cancelled, or Redis stalled past `connect_timeout`): without this, `history(since=<the first
copy>)` returned the second copy to a resuming client. It costs no Redis call (one more field
in the HMGET and the HSET each append already makes).

The room's tally, a small hash beside its stream, keeps what the next append needs: `n` and
`at` of the last entry, the bytes before the first, and when the room's score among the rooms
(which `max_rooms` counts) is next refreshed. An append reads the tally (one HMGET) instead of
the stream's last entry, looks at the stream's head only when the stream may hold more than
`stream_bytes`, and refreshes the score (a second ahead) and the tally's TTL about once a
second rather than each time. A lone message costs 6 Redis calls instead of 8-9 (4 per message
of a batch), and a room that has seen more than `stream_bytes` in all no longer reads 16
entries per append: the script's time in Redis per 32-byte message went from 33-46 to 9-11 µs
(alone on loopback), and from 37-94 to 33-45 µs on the two-process benchmark. A tally never
runs behind its stream, the only way two entries could get one number: every entry we append
goes through it, and without one (new, or lost) it is read from the stream's last entry. A
tally that outlives its stream (deleted, or expired: the tally lives up to 2 s longer) numbers
the new stream's entries on from where the old one ended, which readers take as they take a
stream that went on.
"""

RESERVE = (
    ROOMS_LUA
    + """
local max_rooms, now = tonumber(ARGV[1]), now_ms()
if not admit(KEYS[1], KEYS[2], max_rooms, now) then
  return 0
end
keep(KEYS[1], KEYS[2], max_rooms, now + tonumber(ARGV[2]), now)
return 1
"""
)
"""Count the room KEYS[2] among the rooms KEYS[1] for ARGV[2] ms more; 0 if it is new and past `max_rooms`."""


@dataclass(eq=False, slots=True)
class _Outgoing:
    """A message on its way to a room's stream."""

    key: bytes
    tally: bytes
    meta: bytes
    payload: bytes
    seq: int
    """Its number among this process's messages, by which Redis knows it if it is sent twice."""
    done: asyncio.Future[None] | None
    """Resolved once Redis has it (or once Redis is found unreachable); None for nobody waiting."""

    @property
    def size(self) -> int:
        return len(self.meta) + len(self.payload)

    def settle(self, error: BrokerError | None = None) -> None:
        """Let its publisher go on, raising `error` if given."""
        if self.done is not None and not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)
        self.done = None


class Writer:
    """The queue of one process's messages on their way to Redis, and the task that empties it.

    Args:
        shared: The broker's settings and counters.
        buffer_size: Messages kept while Redis is unreachable.
        buffer_bytes: Bytes of messages kept while Redis is unreachable.
        stream_maxlen: About how many messages each room's stream keeps.
        stream_bytes: How many bytes of messages each room's stream keeps (plus one message).
        stream_ttl: Seconds after its last message that a room's stream is deleted.
        max_rooms: Most rooms with a stream or members at once, per prefix; 0 for no limit.
    """

    def __init__(
        self,
        shared: Shared,
        *,
        buffer_size: int,
        buffer_bytes: int,
        stream_maxlen: int,
        stream_bytes: int,
        stream_ttl: float,
        max_rooms: int,
    ) -> None:
        self.shared = shared
        self.buffer_size = buffer_size
        self.buffer_bytes = buffer_bytes
        self.stream_maxlen = stream_maxlen
        self.stream_bytes = stream_bytes
        self.stream_ttl_ms = max(1, int(stream_ttl * 1000))
        self.max_rooms = max_rooms
        self.queue: deque[_Outgoing] = deque()
        self.queued_bytes = 0
        self.queued = asyncio.Event()
        self.recent: deque[tuple[float, _Outgoing]] = deque()
        """Messages Redis confirmed, with when: what is sent again if Redis lost its data."""
        self.recent_bytes = 0
        self.connected = True
        self.writing = False
        """Whether a batch is on its way to Redis, from the writer's task or from a publisher."""
        self.trying = 0
        """How many messages the batch on its way (or the last one) holds."""
        self.failure: Exception | None = None
        """How a publisher's own append failed, which the writer's task takes as its own failed attempt."""
        self.origin = b"o:" + shared.process_id.encode()
        """This process's field in each room's tally, its highest `seq` appended there (see `APPEND`)."""
        self.overflow = 0
        self.lost_at: float | None = None
        """When this process lost Redis (set by the reader), until Redis is found with our data."""

    async def publish(self, clients: Clients, room: str, meta: bytes, payload: bytes, seq: int) -> None:
        """Queue a message for `room`'s stream; return once Redis has it, or at once while it is unreachable.

        A message that finds the queue empty and nothing on its way is appended from the
        publisher's own task: two hops through the event loop fewer (to the writer's task and
        back). On the two-process benchmark, where one sender's messages each wait for the last,
        that took deliveries/s from 0.5-1.07x to 1.0-1.34x broadcaster's (three paired runs on a
        loaded machine). If that append fails, the writer's task takes the failure as its own
        failed attempt (backoff and outage buffer, or refusal): a lone publish waits for Redis
        once, never twice. If the publisher is cancelled while Redis has the message but has not
        answered, the writer's task sends it again and Redis, knowing its `seq`, does not append
        it twice (see `APPEND`).

        Args:
            clients: The connections of the running event loop.
            room: The room's name.
            meta: The entry's `meta` field (see `wire`).
            payload: The message's bytes.
            seq: Its number among this process's messages, higher than any before it.

        Raises:
            TooManyRoomsError: If `room` would be a new room past `max_rooms`.
            BrokerError: If Redis refused the message (e.g. out of memory), or the writer stopped.
        """
        outgoing = _Outgoing(*self.shared.keys.stream(room), meta, payload, seq, None)
        full = len(self.queue) >= self.buffer_size or (
            self.queue and self.queued_bytes + outgoing.size > self.buffer_bytes
        )
        if full:
            self.shared.dropped += 1
            if not self.overflow:
                logger.warning(
                    "RedisBroker buffer full (%d messages, %d bytes not yet in Redis at %s): "
                    "dropping messages until it has room",
                    len(self.queue),
                    self.queued_bytes,
                    self.shared.safe_url,
                )
            self.overflow += 1
            return
        done = None
        if self.connected:
            done = outgoing.done = asyncio.get_running_loop().create_future()
        self.queue.append(outgoing)
        self.queued_bytes += outgoing.size
        try:
            if done is not None and len(self.queue) == 1 and not self.writing:
                try:
                    await self._write(clients)
                except FAILED as exc:  # the writer's task backs off and buffers, or refuses it
                    self.failure = exc
                finally:
                    self.queued.set()  # the writer's task, or `flush`, goes on with what is queued
            else:
                self.queued.set()
            if done is not None:
                await done
        finally:
            if done is not None:
                done.cancel()  # cancelled meanwhile: nobody is left to retrieve what the writer settles it with

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
            if not self.queue or self.writing:
                self.queued.clear()
                await self.queued.wait()
                continue
            failure, self.failure = self.failure, None
            if failure is None:
                try:
                    await self._write(clients)
                except FAILED as exc:
                    failure = exc
            if failure is None:
                backoff.reset()
            elif isinstance(failure, ResponseError) and not isinstance(failure, ReadOnlyError):
                self._refuse(failure)  # reachable, but refuses (out of memory, ...): its publishers hear of it
            else:  # unreachable, or a replica during a failover: wait (for the new primary)
                await self._unreachable(failure, backoff)

    async def _unreachable(self, exc: Exception, backoff: Backoff) -> None:
        if self.connected:
            self.connected = False
            logger.warning(
                "RedisBroker could not append to Redis at %s (%s): buffering up to %d messages, %d bytes",
                self.shared.safe_url,
                exc,
                self.buffer_size,
                self.buffer_bytes,
            )
        for outgoing in self.queue:
            outgoing.settle()
        await asyncio.sleep(backoff.next())

    def _refuse(self, exc: ResponseError) -> None:
        """Redis refused the first batch of the queue: drop it, raising `BrokerError` in its publishers."""
        batch = [self._pop() for _ in range(min(self.trying, len(self.queue)))]
        self.shared.dropped += len(batch)
        logger.warning("Redis at %s refused %d messages (%s): dropped", self.shared.safe_url, len(batch), exc)
        error = BrokerError(f"Redis at {self.shared.safe_url} refused: {exc}")
        for outgoing in batch:
            outgoing.settle(error)

    def _pop(self) -> _Outgoing:
        outgoing = self.queue.popleft()
        self.queued_bytes -= outgoing.size
        return outgoing

    async def flush(self, clients: Clients) -> None:
        """Append everything queued (after the batch on its way, if a publisher is appending one)."""
        while self.queue:
            if self.writing:
                self.queued.clear()
                await self.queued.wait()
                continue
            await self._write(clients)

    async def _write(self, clients: Clients) -> None:
        """Append the first batch of the queue, marked as on its way meanwhile: one batch at a time."""
        self.writing = True
        self.failure = None  # this attempt is the one that follows it
        try:
            await self.write_batch(clients)
        finally:
            self.writing = False

    def abandon(self, error: BrokerError | None) -> None:
        """Drop what is still queued (the broker is closing), counting it and releasing its publishers.

        Args:
            error: What the publishers still waiting raise; None to let them return.
        """
        if self.queue:
            self.shared.dropped += len(self.queue)
            logger.warning(
                "RedisBroker closed with %d messages that Redis at %s did not take",
                len(self.queue),
                self.shared.safe_url,
            )
        while self.queue:
            self._pop().settle(error)

    async def write_batch(self, clients: Clients) -> None:
        """Append the first messages of the queue to their streams, or prepare to after Redis lost its data."""
        batch = list(itertools.islice(self.queue, _BATCH))
        self.trying = len(batch)
        ids = await clients.append(
            keys=[
                self.shared.keys.writer,
                self.shared.keys.rooms,
                *itertools.chain.from_iterable((outgoing.key, outgoing.tally) for outgoing in batch),
            ],
            args=[
                self.stream_maxlen,
                self.stream_ttl_ms,
                self.stream_bytes,
                self.max_rooms,
                self.origin,
                self.shared.keys.heartbeats,
                *itertools.chain.from_iterable(
                    (outgoing.meta, outgoing.payload, b"%d" % outgoing.seq) for outgoing in batch
                ),
            ],
        )
        if ids is None:
            await self._restore(clients)
            return
        now = time.monotonic()
        for outgoing, entry_id in zip(batch, ids, strict=True):
            if self.queue and self.queue[0] is outgoing:  # else `abandon` dropped it meanwhile: the broker closed
                self._pop()
            if entry_id == 0:
                self.shared.dropped += 1
                self.shared.skip_malformed(
                    "key where a room's stream belongs (message dropped)", outgoing.key, outgoing.payload
                )
            elif entry_id == -1:
                self.shared.dropped += 1  # its publisher raises: whoever handles that logs it, once
                outgoing.settle(TooManyRoomsError(f"too many rooms (max_rooms={self.max_rooms})"))
            else:  # appended now, or before (-2: a second attempt, whose first one's reply was lost)
                self._remember(now, outgoing)
            outgoing.settle()
        while self.recent and self.recent[0][0] < now - _REPLAY_SECONDS and self.lost_at is None:
            self._forget()
        if not self.connected:
            self.connected = True
            logger.warning("RedisBroker appends to Redis at %s again", self.shared.safe_url)
        if self.overflow:
            logger.warning("RedisBroker dropped %d messages while its buffer was full", self.overflow)
            self.overflow = 0

    def _remember(self, now: float, outgoing: _Outgoing) -> None:
        """Keep `outgoing` for a replay, within the buffer's budget (oldest out first)."""
        self.recent.append((now, outgoing))
        self.recent_bytes += outgoing.size
        while len(self.recent) > self.buffer_size or self.recent_bytes > self.buffer_bytes:
            self._forget()

    def _forget(self) -> None:
        _, outgoing = self.recent.popleft()
        self.recent_bytes -= outgoing.size

    async def _restore(self, clients: Clients) -> None:
        """Redis lost our writer mark, so what it confirmed just before may be lost: queue it again.

        The replay is queued before the mark is set, not after: this may run on a publisher's
        task (see `publish`), which may be cancelled at the `await`. Cancelled before Redis set
        the mark, the next batch finds it gone again and sets it (with nothing more to queue).
        """
        logger.warning(
            "Redis at %s lost this process's data (restarted without persistence, or this process hung for "
            "longer than presence_ttl): sending its last messages again",
            self.shared.safe_url,
        )
        since = (time.monotonic() if self.lost_at is None else self.lost_at) - _REPLAY_SECONDS
        again = [outgoing for confirmed, outgoing in self.recent if confirmed >= since]
        self.recent.clear()
        self.recent_bytes = 0
        self.lost_at = None
        self.queue.extendleft(reversed(again))
        self.queued_bytes += sum(outgoing.size for outgoing in again)
        await clients.commands.set(self.shared.keys.writer, b"1", px=self.shared.ttl_ms)

"""The Lua scripts that change presence: each runs atomically in Redis, whatever the number of processes.

Presence is per member (`{p}:members:{room}`: member id -> presence entry, see `wire`) and
per user name (`{p}:names:{room}`: user name -> how many members have it). A name's first
member publishes its greeting; its last, leaving or dropping out with its dead process,
publishes the farewell its presence entry keeps. Notices go into the room's stream from the
script itself, so they take their place in the room's one order exactly where presence
changed, and a member that enters learns where it entered (`after`) together with the names
present.

A notice is appended as the writer appends a message, by the same Lua (see `writer`): with its
number `n` and the stream's bytes `at` kept in the room's tally, and the room counted for
`max_rooms` until its stream expires. It is not trimmed to `stream_bytes` here (a notice is
small): the next message's append does that.

Every script but `RESTORE` takes KEYS = (members, names, stream, the rooms' sorted set, the
stream's tally) and ARGV beginning with (heartbeat key prefix, stream maxlen, stream ttl ms,
max rooms). Heartbeats of other processes are read by name (prefix .. process id), which
standalone Redis allows; Redis Cluster would need the keys of one room in one slot (see `keys`).
"""

from __future__ import annotations

from .writer import ROOMS_LUA

__all__ = ["DEPART", "ENTER", "PRUNE", "RESTORE"]

_COMMON = (
    ROOMS_LUA
    + """
local function notice(meta, payload)
  -- the room was counted among the rooms as its member entered (`RESERVE`); never trimmed to
  -- `stream_bytes` here: the next message's append does that
  append(KEYS[3], KEYS[5], meta, payload, {maxlen = ARGV[2], ttl = tonumber(ARGV[3]), budget = math.huge,
    max_rooms = tonumber(ARGV[4]), rooms = KEYS[4], now = now_ms(), checked = true})
end

local function decode(value)
  local ok, entry = pcall(cjson.decode, value)
  if ok and type(entry) == 'table' and type(entry.user) == 'string' and type(entry.process) == 'string' then
    return entry
  end
  return nil
end

local function drop(member, entry)
  redis.call('HDEL', KEYS[1], member)
  if redis.call('HINCRBY', KEYS[2], entry.user, -1) > 0 then
    return 0
  end
  redis.call('HDEL', KEYS[2], entry.user)
  local farewell = entry.farewell
  if type(farewell) == 'table' and type(farewell.meta) == 'string' and type(farewell.payload) == 'string' then
    notice(farewell.meta, farewell.payload)
  end
  return 1
end

local function prune()
  local raw = redis.call('HGETALL', KEYS[1])
  local alive = {}
  local count = 0
  local malformed = {}
  for i = 1, #raw, 2 do
    local entry = decode(raw[i + 1])
    if entry == nil then
      malformed[#malformed + 1] = raw[i + 1]
    else
      local live = alive[entry.process]
      if live == nil then
        live = redis.call('EXISTS', ARGV[1] .. entry.process) == 1
        alive[entry.process] = live
      end
      if live then
        count = count + 1
      else
        drop(raw[i], entry)
      end
    end
  end
  return count, malformed
end
"""
)

ENTER = (
    _COMMON
    + """
local count, malformed = prune()
local refused = ''
if ARGV[9] == '1' and tonumber(redis.call('HGET', KEYS[2], ARGV[8]) or '0') > 0 then
  refused = 'name taken'
end
if ARGV[10] ~= '' and count >= tonumber(ARGV[10]) then
  refused = 'room full'
end
local first = 0
if refused == '' then
  redis.call('HSET', KEYS[1], ARGV[6], ARGV[7])
  if redis.call('HINCRBY', KEYS[2], ARGV[8], 1) == 1 then
    first = 1
    if ARGV[11] ~= '' then
      notice(ARGV[11], ARGV[12])
    end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  count = count + 1
end
local after = '0-0'
if redis.call('TYPE', KEYS[3])['ok'] == 'stream' then
  local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if #last > 0 then
    after = last[1][1]
  end
end
return {refused, count, first, after, redis.call('HKEYS', KEYS[2]), malformed}
"""
)
"""Enter a member: ARGV = (the four common), presence ttl ms, member, presence entry, user, unique
("1" or ""), max members ("" for none), the greeting's meta and payload ("" and "" for none).

Returns `{refused ("" or why), count, first (0 or 1), after (stream id), names, malformed entries}`.
"""

DEPART = (
    _COMMON
    + """
local value = redis.call('HGET', KEYS[1], ARGV[5])
if not value then
  return 0
end
local entry = decode(value)
if entry == nil then
  redis.call('HDEL', KEYS[1], ARGV[5])
  return 0
end
return drop(ARGV[5], entry)
"""
)
"""Remove a member: ARGV = (the four common), member. Returns 1 if it was its name's last member."""

PRUNE = (
    _COMMON
    + """
local count, malformed = prune()
return {redis.call('HKEYS', KEYS[2]), malformed}
"""
)
"""Drop the members of dead processes: ARGV = the four common.

Returns `{names, malformed entries}`.
"""

RESTORE = """
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 2], 1)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
"""
"""Write a process's members of one room again, those Redis lost: ARGV = presence ttl ms, then
(member, presence entry, user) for each. KEYS = (members, names)."""

"""The Lua scripts that change presence: each runs atomically in Redis, whatever the number of processes.

Presence is per member (`{p}:members:{room}`: member id -> presence entry, see `wire`) and
per user name (`{p}:names:{room}`: user name -> how many members have it). A name's first
member publishes its greeting; its last, leaving or dropping out with its dead process,
publishes the farewell its presence entry keeps. Notices go into the room's stream from the
script itself, so they take their place in the room's one order exactly where presence
changed, and a member that enters learns where it entered (`after`) together with the names
present.

Every script takes KEYS = (members, names, stream). Heartbeats of other processes are read by
name (`ARGV[1]` .. process id), which standalone Redis allows; Redis Cluster would need the
keys of one room in one slot (see `keys`).
"""

from __future__ import annotations

__all__ = ["DEPART", "ENTER", "PRUNE", "RESTORE"]

_COMMON = """
local function notice(stream, entry, maxlen, ttl)
  local kind = redis.call('TYPE', stream)['ok']
  if kind == 'stream' or kind == 'none' then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'data', entry)
    redis.call('PEXPIRE', stream, ttl)
  end
end

local function decode(value)
  local ok, entry = pcall(cjson.decode, value)
  if ok and type(entry) == 'table' and type(entry.user) == 'string' and type(entry.process) == 'string' then
    return entry
  end
  return nil
end

local function drop(member, entry, maxlen, ttl)
  redis.call('HDEL', KEYS[1], member)
  if redis.call('HINCRBY', KEYS[2], entry.user, -1) > 0 then
    return 0
  end
  redis.call('HDEL', KEYS[2], entry.user)
  if type(entry.farewell) == 'string' then
    notice(KEYS[3], entry.farewell, maxlen, ttl)
  end
  return 1
end

local function prune(heartbeats, maxlen, ttl)
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
        live = redis.call('EXISTS', heartbeats .. entry.process) == 1
        alive[entry.process] = live
      end
      if live then
        count = count + 1
      else
        drop(raw[i], entry, maxlen, ttl)
      end
    end
  end
  return count, malformed
end
"""

ENTER = (
    _COMMON
    + """
local count, malformed = prune(ARGV[1], ARGV[2], ARGV[3])
local refused = ''
if ARGV[8] == '1' and tonumber(redis.call('HGET', KEYS[2], ARGV[7]) or '0') > 0 then
  refused = 'name taken'
end
if ARGV[9] ~= '' and count >= tonumber(ARGV[9]) then
  refused = 'room full'
end
local first = 0
if refused == '' then
  redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
  if redis.call('HINCRBY', KEYS[2], ARGV[7], 1) == 1 then
    first = 1
    if ARGV[10] ~= '' then
      notice(KEYS[3], ARGV[10], ARGV[2], ARGV[3])
    end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
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
"""Enter a member: ARGV = heartbeat prefix, stream maxlen, stream ttl ms, presence ttl ms, member,
presence entry, user, unique ("1" or ""), max members ("" for none), greeting entry ("" for none).

Returns `{refused ("" or why), count, first (0 or 1), after (stream id), names, malformed entries}`.
"""

DEPART = (
    _COMMON
    + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then
  return 0
end
local entry = decode(value)
if entry == nil then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
return drop(ARGV[1], entry, ARGV[2], ARGV[3])
"""
)
"""Remove a member: ARGV = member, stream maxlen, stream ttl ms. Returns 1 if it was its name's last member."""

PRUNE = (
    _COMMON
    + """
local count, malformed = prune(ARGV[1], ARGV[2], ARGV[3])
return {redis.call('HKEYS', KEYS[2]), malformed}
"""
)
"""Drop the members of dead processes: ARGV = heartbeat prefix, stream maxlen, stream ttl ms.

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

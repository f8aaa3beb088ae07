"""The Lua scripts that keep the shared rate limits on the Redis server, atomically.

Each admit decision is one run of :data:`ADMIT`, timed by the server's clock (``TIME``),
so clients whose clocks disagree still share one budget. Times are integer microseconds.

The keys of one budget (all hash-tagged with one application, so one Redis Cluster slot):

1. a hash: ``q`` the QPS schedule's next free time (GCRA without burst), ``last`` the start
   of the latest reservation (reservations start in arrival order), ``pause`` the time
   before which nothing starts (the service said "too many");
2. the RPM log: a sorted set of reservation ids scored by their start;
3. the TPM log: the same, and 4. a hash of each reservation's tokens;
5. a hash of the limits the service announced (``rpm``, ``tpm``).

RPM and TPM are one mechanism, a sliding window with a cost (1 per call, or its tokens):
a reservation starts at the first time at which the costs that started within the last
window, plus its own, fit the limit. Lowering a cost (a settled estimate, a cancelled
call) can only make later windows lighter, so it is always safe. Every key expires a
window after its last reservation, so a process that died leaves nothing behind.
"""

from __future__ import annotations

__all__ = ["ADMIT", "CANCEL", "UNLOCK"]

#: KEYS: the five keys above. ARGV: id ("" only records), qps interval, user rpm, user tpm,
#: window, margin, tokens, adopt (0/1), announced rpm, announced tpm, pause, then pairs of
#: (reservation id, real tokens). Returns {start, now}, in microseconds.
ADMIT = """
local state, rpm_log, tpm_log, costs, server = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local id, interval = ARGV[1], tonumber(ARGV[2])
local rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local horizon = tonumber(ARGV[5]) + tonumber(ARGV[6])
local cost = tonumber(ARGV[7])

if ARGV[9] ~= '0' then redis.call('HSET', server, 'rpm', ARGV[9]) end
if ARGV[10] ~= '0' then redis.call('HSET', server, 'tpm', ARGV[10]) end
if ARGV[9] ~= '0' or ARGV[10] ~= '0' then redis.call('PEXPIRE', server, 86400000) end
local pause = tonumber(ARGV[11])
if pause > 0 and now + pause > tonumber(redis.call('HGET', state, 'pause') or '0') then
  redis.call('HSET', state, 'pause', now + pause)
end
for i = 12, #ARGV, 2 do
  if redis.call('ZSCORE', tpm_log, ARGV[i]) then redis.call('HSET', costs, ARGV[i], ARGV[i + 1]) end
end
if id == '' then return {now, now} end

if ARGV[8] == '1' then
  local seen = redis.call('HMGET', server, 'rpm', 'tpm')
  local srpm, stpm = tonumber(seen[1] or '0'), tonumber(seen[2] or '0')
  if srpm > 0 and (rpm == 0 or srpm < rpm) then rpm = srpm end
  if stpm > 0 and (tpm == 0 or stpm < tpm) then tpm = stpm end
end

local function prune(log, weights)
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', now - horizon)
  for _, member in ipairs(gone) do
    redis.call('ZREM', log, member)
    if weights then redis.call('HDEL', weights, member) end
  end
end

-- The first start >= floor at which the window's costs plus this one fit the limit.
local function fit(log, weights, limit, need, floor)
  if limit <= 0 then return floor end
  local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  local cost_of = {}
  if weights then
    local flat = redis.call('HGETALL', weights)
    for i = 1, #flat, 2 do cost_of[flat[i]] = tonumber(flat[i + 1]) end
  end
  local n, total = #entries / 2, 0
  local function weight(i) return cost_of[entries[2 * i - 1]] or 1 end
  for i = 1, n do total = total + weight(i) end
  local start, i = floor, 1
  while i <= n and tonumber(entries[2 * i]) <= start - horizon do
    total = total - weight(i)
    i = i + 1
  end
  while i <= n and total + need > limit do
    total = total - weight(i)
    local leaves = tonumber(entries[2 * i]) + horizon
    if leaves > start then start = leaves end
    i = i + 1
  end
  return start
end

prune(rpm_log, nil)
prune(tpm_log, costs)
local floor = now
for _, field in ipairs({'last', 'pause'}) do
  local value = tonumber(redis.call('HGET', state, field) or '0')
  if value > floor then floor = value end
end
if interval > 0 then
  local tat = tonumber(redis.call('HGET', state, 'q') or '0')
  if tat > floor then floor = tat end
end
local start = fit(rpm_log, nil, rpm, 1, floor)
start = fit(tpm_log, costs, tpm, cost, start)

if interval > 0 then redis.call('HSET', state, 'q', start + interval) end
redis.call('HSET', state, 'last', start)
local logged = {state}
if rpm > 0 or ARGV[8] == '1' then
  redis.call('ZADD', rpm_log, start, id)
  table.insert(logged, rpm_log)
end
if tpm > 0 or ARGV[8] == '1' then
  redis.call('ZADD', tpm_log, start, id)
  redis.call('HSET', costs, id, cost)
  table.insert(logged, tpm_log)
  table.insert(logged, costs)
end
local ttl = math.floor((start - now + horizon) / 1000) + 1000
for _, key in ipairs(logged) do redis.call('PEXPIRE', key, ttl) end
return {start, now}
"""

#: KEYS: as for ADMIT. ARGV: id, start, qps interval. A reservation that has not started
#: gives its place back: out of the windows, and the QPS slot, if it is the latest.
CANCEL = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
local interval = tonumber(ARGV[3])
local start = tonumber(ARGV[2])
if interval > 0 and tonumber(redis.call('HGET', KEYS[1], 'q') or '0') == start + interval then
  redis.call('HSET', KEYS[1], 'q', start)
end
return 1
"""

#: KEYS: the lock. ARGV: the holder's id. Deletes the lock only if this holder still has it.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

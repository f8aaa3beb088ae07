"""The Lua scripts that keep the shared quota's counters on the Redis server, atomically.

They keep counters and learned values, never the policy: what the limits are is decided
by each process's quota model (``mpt_async._quota_model``), and sent with each call. Each
run of :data:`TAKE` is timed by the server's clock (``TIME``), so clients whose clocks
disagree still share one budget. Times are integer microseconds, rates milli-calls a second.

The keys of one budget (all hash-tagged with one application, so one Redis Cluster slot):

1. a hash: ``tat`` the schedule's next free start, ``pause`` the time before which nothing
   starts (a ``Retry-After``), ``rate`` and ``epoch`` the fleet's learned rate and the count
   of its cuts, ``rpm``/``tpm`` the limits replies announced, ``tokens`` the log's tokens;
2. the log: a sorted set of the calls of the last window, scored by their start;
3. a hash of each logged call's tokens;
4. the leases: a sorted set of the clients whose interactive calls wait, each scored by
   when its lease lapses unless renewed.

A run claims up to a given number of places (one at least, or none: it is told how long to
wait, and nothing is kept, so a waiter holds no capacity): the schedule's next starts, as
far ahead as it is told. Each is logged as starting when it may start plus the lateness
allowed (so a place used late is never counted as leaving the service's window early). A
batch call that could start is told to ask again soon while another client holds a live
lease; the lease claims no capacity, and lapses by itself. State beyond a sane horizon (a
clock step, a failover to a host behind) is corrupt and
reset. Every key expires a window after its last call.
"""

from __future__ import annotations

__all__ = ["TAKE", "UNLOCK"]

#: KEYS: the four keys above. ARGV: 1 the claim's id ("": only record; its places are logged
#: as id:1, id:2, ...), 2 interval, 3 calls per second, 4 rpm, 5 tpm (0: none), 6 the window
#: (with its margin), 7 a place's tokens, 8 a pause from now, 9 this process's rate and 10
#: epoch (seed a lost state), 11 a cut rate and 12 the epoch it was made in, 13 the rate
#: grown since (0: none), 14 announced rpm, 15 announced tpm (0: none), 16 the burst (calls
#: that may start at once), 17 "1" to obey the limits announced to any process, 18 this
#: client's lease id, 19 "1" for a batch call (it steps aside while another client's lease
#: is live), 20 what to do with this client's lease ("+" renew it, "-" drop it, "?" renew it
#: if the call must wait and drop it if it starts, "" nothing), 21 a lease's length, 22 how
#: soon a batch call stepping aside asks again, 23 the most places to claim, 24 how far
#: ahead a place may start, 25 how late a place may be used, 26 "1" when the cut (11) only
#: lowers the rate of the epoch it was made in (12, no new epoch), then pairs (logged id,
#: real tokens; -1: forget it).
#: Returns {wait, why (0 none, 1 rate, 2 window, 3 pause, 4 another client's interactive
#: calls wait), now, rate, epoch, calls in the last second, calls in the window, tokens in
#: the window, announced rpm, announced tpm, places claimed (0: wait, and why), then each
#: place's start after now}.
TAKE = """
local state, log, costs, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local id, horizon = ARGV[1], tonumber(ARGV[6])
local tokens = tonumber(redis.call('HGET', state, 'tokens') or '0') or 0

-- Lapsed leases go, and any lasting far longer than one is given (corrupt).
local lease, mine, action = tonumber(ARGV[21]), ARGV[18], ARGV[20]
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
redis.call('ZREMRANGEBYSCORE', leases, '(' .. (now + 2 * lease), '+inf')
if action == '+' then redis.call('ZADD', leases, now + lease, mine) end
if action == '-' then redis.call('ZREM', leases, mine) end

for i = 27, #ARGV, 2 do
  local member, real = ARGV[i], tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', costs, member) or '')
  if old then
    if real < 0 then
      redis.call('ZREM', log, member)
      redis.call('HDEL', costs, member)
      tokens = tokens - old
    else
      redis.call('HSET', costs, member, real)
      tokens = tokens + real - old
    end
  end
end

local gone = redis.call('ZRANGEBYSCORE', log, '-inf', now - horizon)
for _, member in ipairs(gone) do
  tokens = tokens - (tonumber(redis.call('HGET', costs, member) or '0') or 0)
  redis.call('HDEL', costs, member)
end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', log, '-inf', now - horizon) end
local calls = redis.call('ZCARD', log)
if calls == 0 or tokens < 0 then tokens = 0 end

local fleet = redis.call('HMGET', state, 'rate', 'epoch')
local rate, epoch = tonumber(fleet[1] or ''), tonumber(fleet[2] or '')
if not rate or not epoch or rate <= 0 then rate, epoch = tonumber(ARGV[9]), tonumber(ARGV[10]) end
local cut = tonumber(ARGV[11])
if cut > 0 and tonumber(ARGV[12]) == epoch then
  if cut < rate then rate = cut end
  if ARGV[26] ~= '1' then epoch = epoch + 1 end
elseif tonumber(ARGV[13]) > 0 and tonumber(ARGV[10]) == epoch then
  rate = rate + tonumber(ARGV[13])
end
if ARGV[14] ~= '0' then redis.call('HSET', state, 'rpm', ARGV[14]) end
if ARGV[15] ~= '0' then redis.call('HSET', state, 'tpm', ARGV[15]) end
local announced = redis.call('HMGET', state, 'rpm', 'tpm')
local arpm, atpm = tonumber(announced[1] or '0') or 0, tonumber(announced[2] or '0') or 0

local pause = tonumber(redis.call('HGET', state, 'pause') or '0') or 0
local tat = tonumber(redis.call('HGET', state, 'tat') or '0') or 0
if pause > now + horizon then pause = 0 end
if tat > now + horizon then tat = 0 end
local hold = tonumber(ARGV[8])
if hold > 0 and now + hold > pause then pause = now + hold end

local last_second = redis.call('ZCOUNT', log, '(' .. (now - 1000000), '+inf')
local function answer(wait, why, starts)
  redis.call('HSET', state, 'rate', rate, 'epoch', epoch, 'pause', pause, 'tat', tat)
  redis.call('HSET', state, 'tokens', tokens)
  if action == '?' and why == 0 then redis.call('ZREM', leases, mine) end
  if action == '?' and why > 0 then redis.call('ZADD', leases, now + lease, mine) end
  local ttl = math.floor(horizon / 1000) + 1000
  for _, key in ipairs({state, log, costs, leases}) do redis.call('PEXPIRE', key, ttl) end
  local reply = {wait, why, now, rate, epoch, last_second, calls, tokens, arpm, atpm, 0}
  if starts then
    reply[11] = #starts
    for _, start in ipairs(starts) do reply[#reply + 1] = start end
  end
  return reply
end
if id == '' then return answer(0, 0) end

if pause > now then return answer(pause - now, 3) end
local early = tat - (tonumber(ARGV[16]) - 1) * tonumber(ARGV[2])
if early > now then return answer(early - now, 1) end
local per_second = tonumber(ARGV[3])
if per_second > 0 and last_second >= per_second then
  local nth = redis.call('ZREVRANGE', log, per_second - 1, per_second - 1, 'WITHSCORES')
  -- A second and its margin, as in MemoryQuotaStore (20 ms; not the minute's margin).
  local frees = tonumber(nth[2]) + 1020000
  if frees > now then return answer(frees - now, 1) end
end
local rpm, tpm, cost = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
if ARGV[17] == '1' then  -- the limits another process saw announced hold here too
  if arpm > 0 and (rpm == 0 or arpm < rpm) then rpm = arpm end
  if atpm > 0 and (tpm == 0 or atpm < tpm) then tpm = atpm end
end
if rpm > 0 and calls >= rpm then
  local nth = redis.call('ZRANGE', log, calls - rpm, calls - rpm, 'WITHSCORES')
  return answer(tonumber(nth[2]) + horizon - now, 2)
end
if tpm > 0 and calls > 0 and tokens + cost > tpm then
  local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  local left, leaves = tokens, now
  for i = 1, #entries, 2 do
    left = left - (tonumber(redis.call('HGET', costs, entries[i]) or '0') or 0)
    leaves = tonumber(entries[i + 1]) + horizon
    if left + cost <= tpm then break end
  end
  return answer(leaves - now, 2)
end
if ARGV[19] == '1' then  -- a batch call: after any other client's waiting live calls
  local others = redis.call('ZCARD', leases)
  if redis.call('ZSCORE', leases, mine) then others = others - 1 end
  if others > 0 then return answer(tonumber(ARGV[22]), 4) end
end

-- The first place starts now; more follow on the schedule, as far ahead as allowed, while
-- the limits hold them all (counted as if they were in the last second: never too many).
local interval, burst = tonumber(ARGV[2]), tonumber(ARGV[16])
local most, ahead, late = tonumber(ARGV[23]), tonumber(ARGV[24]), tonumber(ARGV[25])
local starts, scored, priced = {}, {}, {}
while #starts < most do
  local start = tat - (burst - 1) * interval
  if start < now then start = now end
  if start > now + ahead then break end
  if #starts > 0 then
    if per_second > 0 and last_second >= per_second then break end
    if rpm > 0 and calls >= rpm then break end
    if tpm > 0 and tokens + cost > tpm then break end
  end
  local n = #starts + 1
  local member = id .. ':' .. n
  scored[2 * n - 1], scored[2 * n] = start + late, member
  priced[2 * n - 1], priced[2 * n] = member, cost
  tokens, calls, last_second = tokens + cost, calls + 1, last_second + 1
  if tat < now then tat = now end
  tat = tat + interval
  starts[#starts + 1] = start - now
end
redis.call('ZADD', log, unpack(scored))
redis.call('HSET', costs, unpack(priced))
return answer(0, 0, starts)
"""

#: KEYS: the lock. ARGV: the holder's id. Deletes the lock only if this holder still has it.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

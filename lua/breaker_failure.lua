#!lua
--[[ breaker_failure: a call to this downstream failed. A configuration error (bad
  credentials) opens the breaker at once; a failed probe (half_open) opens it again;
  an ordinary error while closed counts towards ARGV[3] errors within ARGV[4] ms (a
  success in between starts the count again), and the last one opens it. Open lasts
  ARGV[5] ms; then breaker_admit lets one probe through. Failures reported while it is
  already open change nothing (calls that were in flight when it opened).

  KEYS[1] breaker   HASH (see breaker_admit)
  KEYS[2] events    STREAM (capped at ARGV[7]; 0 = no events): 'breaker' when it opens
  ARGV[1] name of the downstream   ARGV[2] kind: 'config' or 'error'
  ARGV[3] errors that open it (>= 1)   ARGV[4] window (ms)   ARGV[5] cool-down (ms)
  ARGV[6] reason (one line, already redacted)   ARGV[7] events max length
  Returns: {state after, 1 if this call opened it, ms until a probe may go (0 if closed),
    state before}
]]
local breaker, events = KEYS[1], KEYS[2]
local name, kind = ARGV[1], ARGV[2]
local threshold, window, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local evmax = tonumber(ARGV[7])
local now = now_ms()
local st = redis.call('HGET', breaker, 'st') or 'closed'
if st == 'open' then
  local open_until = tonumber(redis.call('HGET', breaker, 'until')) or now
  return {'open', 0, math.max(0, open_until - now), 'open'}
end
if st == 'closed' and kind ~= 'config' then
  local state = redis.call('HMGET', breaker, 'n', 'ws')
  local n, ws = tonumber(state[1]) or 0, tonumber(state[2]) or 0
  if now - ws > window then
    n, ws = 0, now
  end
  n = n + 1
  if n < threshold then
    redis.call('HSET', breaker, 'n', n, 'ws', ws)
    return {'closed', 0, 0, 'closed'}
  end
end
local why = kind == 'config' and 'config' or 'errors'
redis.call('HSET', breaker, 'st', 'open', 'until', now + cooldown, 'kind', why, 'why', ARGV[6],
  'since', now, 'n', 0, 'ws', 0)
redis.call('HDEL', breaker, 'probe')
if evmax > 0 then
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'breaker', 'j', '',
    'provider', name, 'state', 'open', 'kind', why, 'e', ARGV[6])
end
return {'open', 1, cooldown, st}

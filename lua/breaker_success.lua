#!lua
--[[ breaker_success: a call to this downstream succeeded (or failed for a reason that
  is about the message, not the downstream). Half-open: the probe got through, close it.
  Closed: the run of errors is over, the count starts again. Open: a call that was in
  flight when it opened; only a probe closes it, so nothing changes.

  KEYS[1] breaker   HASH (see breaker_admit)
  KEYS[2] events    STREAM (capped at ARGV[2]; 0 = no events): 'breaker' when it closes
  ARGV[1] name of the downstream   ARGV[2] events max length
  Returns: {state after, 1 if this call closed it}
]]
local breaker, events = KEYS[1], KEYS[2]
local name, evmax = ARGV[1], tonumber(ARGV[2])
local state = redis.call('HMGET', breaker, 'st', 'n')
local st, n = state[1] or 'closed', tonumber(state[2]) or 0
if st == 'closed' then
  if n > 0 then
    redis.call('HSET', breaker, 'n', 0, 'ws', 0)
  end
  return {'closed', 0}
end
if st == 'open' then
  return {'open', 0}
end
redis.call('HSET', breaker, 'st', 'closed', 'since', now_ms(), 'n', 0, 'ws', 0)
redis.call('HDEL', breaker, 'until', 'probe', 'kind', 'why')
if evmax > 0 then
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'breaker', 'j', '',
    'provider', name, 'state', 'closed')
end
return {'closed', 1}

#!lua
--[[ breaker_close: an operator closes a downstream's breaker by hand (the dashboard's
  "close breaker": the provider is known to be back, do not wait for the cool-down and
  the probe). Open or half-open -> closed, its error count reset, the probe lease and the
  reason dropped, exactly as a successful probe leaves it (breaker_success). A worker that
  saw it open asks Redis again at its next call, so messages flow at once; if the
  provider is still down, its errors open the breaker again as usual. A closed breaker
  is left as it is (its running error count included).

  KEYS[1] breaker   HASH (see breaker_admit)
  KEYS[2] events    STREAM (capped at ARGV[2]; 0 = no events): 'breaker' when it closes,
                    with kind 'manual'
  ARGV[1] name of the downstream   ARGV[2] events max length
  Returns: {state before, 1 if this call closed it}
]]
local breaker, events = KEYS[1], KEYS[2]
local name, evmax = ARGV[1], tonumber(ARGV[2])
local st = redis.call('HGET', breaker, 'st') or 'closed'
if st == 'closed' then
  return {'closed', 0}
end
redis.call('HSET', breaker, 'st', 'closed', 'since', now_ms(), 'n', 0, 'ws', 0)
redis.call('HDEL', breaker, 'until', 'probe', 'kind', 'why')
if evmax > 0 then
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'breaker', 'j', '',
    'provider', name, 'state', 'closed', 'kind', 'manual')
end
return {st, 1}

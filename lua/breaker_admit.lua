#!lua
--[[ breaker_admit: may a call go to this downstream now? Closed: yes. Open: no, until
  its cool-down is over; then the first caller becomes the probe (open -> half_open)
  and gets a lease; while the lease runs every other caller is refused. A probe whose
  lease ran out never reported (its worker died): the next caller probes instead.

  KEYS[1] breaker   HASH st (closed|open|half_open; absent = closed), n (errors in the
                    window), ws (window start ms), until (ms, open), probe (lease end ms,
                    half_open), kind (errors|config), why (reason), since (ms)
  KEYS[2] events    STREAM (capped at ARGV[3]; 0 = no events): 'breaker' on a transition
  ARGV[1] name of the downstream (for the event)   ARGV[2] probe lease (ms)
  ARGV[3] events max length
  Returns: {allowed 1|0, state, ms until the next call may be admitted (0 if allowed),
    1 if this caller is the probe, why it opened ('' when closed), errors counted so far
    (closed)}
]]
local breaker, events = KEYS[1], KEYS[2]
local name, lease, evmax = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', breaker, 'st', 'n')
local st = state[1] or 'closed'
if st == 'closed' then
  return {1, 'closed', 0, 0, '', tonumber(state[2]) or 0}
end
local now = now_ms()
local why = redis.call('HGET', breaker, 'why') or ''
if st == 'open' then
  local open_until = tonumber(redis.call('HGET', breaker, 'until')) or 0
  if now < open_until then
    return {0, 'open', open_until - now, 0, why}
  end
  redis.call('HSET', breaker, 'st', 'half_open', 'probe', now + lease, 'since', now)
  if evmax > 0 then
    redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'breaker', 'j', '',
      'provider', name, 'state', 'half_open')
  end
  return {1, 'half_open', 0, 1, why}
end
local probe = tonumber(redis.call('HGET', breaker, 'probe')) or 0
if now < probe then
  return {0, 'half_open', probe - now, 0, why}
end
redis.call('HSET', breaker, 'probe', now + lease)
return {1, 'half_open', 0, 1, why}
